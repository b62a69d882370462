"""Checks a rendered release before it may reach a server: lock-out, shadowed rules, layers that
disagree, SSH open to the world. Errors stop `pulumi preview`/`up` and `fw check` (exit 2)."""
from __future__ import annotations

from dataclasses import dataclass

from .evaluate import cloud_allows, host_allows
from .exposure import ANYONE_ELSE, exposure_table
from .iptables_rules import NEVER, TERMINAL, Rule, Ruleset
from .networks import any_network, covers, parse_cidr
from .policy import FirewallPolicy
from .release import Release

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    level: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def lockout_findings(policy: FirewallPolicy, release: Release) -> list[Finding]:
    """Every admin CIDR and every known deployer address must reach SSH through both layers."""
    problems = []
    for family, ruleset in zip((4, 6), release.rulesets):
        for admin in (policy.admin_v4 if family == 4 else policy.admin_v6):
            for index, blocked in enumerate(policy.blocklist):
                if blocked.version == family and blocked.overlaps(admin):
                    problems.append(f"firewall.blocklist[{index}] {blocked} blocks (part of) admin CIDR {admin}")
            if not host_allows(ruleset, "tcp", policy.ssh_port, admin):
                problems.append(f"host rules (rules.v{family}) refuse SSH (tcp/{policy.ssh_port}) from admin CIDR {admin}")
            if not cloud_allows(release.port_infos, "tcp", policy.ssh_port, admin):
                problems.append(f"cloud firewall refuses SSH (tcp/{policy.ssh_port}) from admin CIDR {admin}")
    for deployer in policy.deployer_addresses:
        if not any(covers(admin, deployer) for admin in policy.admin_cidrs):
            problems.append(f"the deployer's address {deployer} is not in firewall.adminCidrs "
                            f"({', '.join(map(str, policy.admin_cidrs))}): this update would cut it off SSH")
        for index, blocked in enumerate(policy.blocklist):
            if blocked.overlaps(deployer):
                problems.append(f"firewall.blocklist[{index}] {blocked} blocks the deployer's address {deployer}")
    if not problems:
        return []
    if policy.allow_lockout:
        return [Finding(WARNING, f"LOCK-OUT ALLOWED (firewall.allowLockout: true): {p}; the host will roll "
                                 f"back by itself {policy.confirm_timeout_seconds} s after apply") for p in problems]
    return [Finding(ERROR, f"lock-out: {p}. Refusing to ship it: fix firewall.adminCidrs/blocklist, or set "
                           "firewall.allowLockout: true for a rollback drill") for p in problems]


def shadowed_rules(ruleset: Ruleset) -> list[tuple[Rule, Rule]]:
    """(earlier, later) pairs where the earlier rule decides every packet the later one matches."""
    pairs = []
    for chain in ["INPUT", "FORWARD", "OUTPUT", *ruleset.chains]:
        rules = ruleset.chain_rules(chain)
        for position, later in enumerate(rules):
            if not later.new_connections:
                continue
            for earlier in rules[:position]:
                if _decides_everything_of(earlier, later):
                    pairs.append((earlier, later))
                    break
    return pairs


def _decides_everything_of(earlier: Rule, later: Rule) -> bool:
    unconditional = all(token in ("-m", "conntrack", "--ctstate", "NEW", "state", "--state")
                        for token in earlier.matches)
    return (earlier.target in TERMINAL and earlier.new_connections and earlier.steady_state != NEVER
            and unconditional and earlier.source_set is None
            and earlier.in_interface is None and earlier.not_in_interface is None
            and earlier.in_interface == later.in_interface
            and (earlier.protocol is None or earlier.protocol == later.protocol)
            and (earlier.dports is None or (later.dports is not None and earlier.dports.contains(later.dports)))
            and (earlier.source is None or (later.source is not None and covers(earlier.source, later.source))))


def shadow_findings(rulesets) -> list[Finding]:
    return [Finding(WARNING if later.target == earlier.target else ERROR,
                    f"rules.v{rs.family}: `{later.line()}` can never match: `{earlier.line()}` above it "
                    f"already {'accepts' if earlier.target == 'ACCEPT' else 'drops'} every packet it would")
            for rs in rulesets for earlier, later in shadowed_rules(rs)]


def layer_findings(policy: FirewallPolicy, release: Release) -> list[Finding]:
    findings = []
    for row in exposure_table(policy, release):
        # The blocklist is host-only by design (Lightsail has no deny rules): a blocked source
        # that the cloud lets through is not drift. Blocked admins are the lock-out check's job.
        if row.cloud and not row.host and _blocklisted(policy, row.source):
            continue
        if row.cloud != row.host:
            open_in, closed_in = ("cloud", "host") if row.cloud else ("host", "cloud")
            # In a lock-out drill the cloud layer deliberately keeps SSH for the deployer.
            level = WARNING if policy.allow_lockout and row.port == f"tcp/{policy.ssh_port}" else ERROR
            findings.append(Finding(level, f"layers disagree: {row.port} IPv{row.family} from {row.source} is "
                                           f"open in the {open_in} layer but closed in the {closed_in} layer"))
    return findings


def _blocklisted(policy: FirewallPolicy, source: str) -> bool:
    return source != ANYONE_ELSE and any(covers(blocked, parse_cidr(source)) for blocked in policy.blocklist)


def world_ssh_findings(policy: FirewallPolicy) -> list[Finding]:
    wide = [a for a in policy.admin_cidrs if a.prefixlen < (8 if a.version == 4 else 32) or a == any_network(a.version)]
    return [Finding(WARNING, f"SSH is open to {a} (firewall.adminCidrs): that is most of the internet; "
                             "list the addresses you really administer from") for a in wide]


def analyse(policy: FirewallPolicy, release: Release) -> list[Finding]:
    """All findings, errors first. Run on every render."""
    findings = (lockout_findings(policy, release) + shadow_findings(release.rulesets)
                + layer_findings(policy, release) + world_ssh_findings(policy))
    return sorted(findings, key=lambda f: f.level != ERROR)


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == ERROR]
