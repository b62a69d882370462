"""Checks a rendered release before it may reach a server: lock-out, shadowed rules, layers that
disagree, SSH open to the world. Errors stop `pulumi preview`/`up` and `fw check` (exit 2)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .evaluate import cloud_allows, evaluable, host_allows
from .exposure import ANYONE_ELSE, exposure_table
from .findings import ERROR, WARNING, Finding, errors, errors_first
from .iptables_rules import Ruleset
from .network_list import NetworkList
from .networks import Network, any_network, covers, parse_cidr
from .policy import FirewallPolicy
from .release import Release
from .rule_conditions import conditions_cover
from .saved_rules import BUILTIN_CHAINS, TERMINAL, SavedRule, SavedRuleset

__all__ = ["ERROR", "WARNING", "Finding", "analyse", "errors", "shadow_finding", "shadow_findings", "shadowed_rules"]


def lockout_findings(policy: FirewallPolicy, release: Release) -> list[Finding]:
    """Every admin CIDR and every known deployer address must reach SSH through both layers."""
    problems = []
    for family, ruleset in zip((4, 6), release.rulesets, strict=True):
        for admin in (policy.admin_v4 if family == 4 else policy.admin_v6):
            for index, blocked in _blocking(policy, admin):
                problems.append(f"{policy.blocklist_entry(index)} {blocked} blocks (part of) admin CIDR {admin}")
            if not host_allows(ruleset, "tcp", policy.ssh_port, admin):
                problems.append(f"host rules (rules.v{family}) refuse SSH (tcp/{policy.ssh_port}) from admin CIDR {admin}")
            if not cloud_allows(release.port_infos, "tcp", policy.ssh_port, admin):
                problems.append(f"cloud firewall refuses SSH (tcp/{policy.ssh_port}) from admin CIDR {admin}")
    for deployer in policy.deployer_addresses:
        if not any(covers(admin, deployer) for admin in policy.admin_cidrs):
            problems.append(f"the deployer's address {deployer} is not in firewall.adminCidrs "
                            f"({', '.join(map(str, policy.admin_cidrs))}): this update would cut it off SSH")
        for index, blocked in _blocking(policy, deployer):
            problems.append(f"{policy.blocklist_entry(index)} {blocked} blocks the deployer's address {deployer}")
    if not problems:
        return []
    if policy.allow_lockout:
        return [Finding(WARNING, f"LOCK-OUT ALLOWED (firewall.allowLockout: true): {p}; the host will roll "
                                 f"back by itself {policy.confirm_timeout_seconds} s after apply") for p in problems]
    return [Finding(ERROR, f"lock-out: {p}. Refusing to ship it: fix firewall.adminCidrs/blocklist, or set "
                           "firewall.allowLockout: true for a rollback drill") for p in problems]


def _blocking(policy: FirewallPolicy, network: Network) -> list[tuple[int, Network]]:
    """(position in firewall.blocklist, entry) of the entries that share an address with
    `network`, found through the blocklist's index (not one comparison per entry)."""
    return NetworkList.of(policy.blocklist).positions(policy.blocklist_index.overlapping(network))


def shadowed_rules(ruleset: Ruleset | SavedRuleset) -> list[tuple[Any, Any]]:
    """(earlier, later) pairs of one chain where the earlier rule decides every packet the later
    one matches, so the later one can never match. Rules of a policy's Ruleset come back as its
    own Rule objects; a ruleset read from a file gives its SavedRules."""
    saved = evaluable(ruleset)
    pairs = []
    for chain in [*BUILTIN_CHAINS["filter"], *saved.chains]:
        rules = saved.chain_rules(chain)
        deciders: list[SavedRule] = []  # earlier rules that could hide a later one
        for later in rules:
            earlier = next((rule for rule in deciders if conditions_cover(rule.conditions, later.by_dimension)), None)
            if earlier is not None:
                pairs.append((earlier, later))
            if later.target in TERMINAL and later.understood and all(c.pure for c in later.conditions):
                deciders.append(later)
    pairs.sort(key=lambda pair: pair[1].index)
    if isinstance(ruleset, SavedRuleset):
        return pairs
    return [(ruleset.rules[earlier.index], ruleset.rules[later.index]) for earlier, later in pairs]


def shadow_finding(saved: SavedRuleset, earlier: SavedRule, later: SavedRule) -> Finding:
    """A rule that can never match: an error when it was meant to decide the other way (an
    accept hidden by a drop, or a drop hidden by an accept), else a warning."""
    verb = {"ACCEPT": "accepts", "DROP": "drops", "REJECT": "rejects"}[earlier.target or ""]
    flips = (earlier.target == "ACCEPT") != (later.target == "ACCEPT") and later.target in TERMINAL
    above = f"line {earlier.line} " if saved.line_numbers else ""
    return Finding(ERROR if flips else WARNING, f"{saved.where(later)}: `{later.text}` can never match: "
                                                f"{above}`{earlier.text}` above it already {verb} every packet it would")


def shadow_findings(rulesets: Iterable[Ruleset | SavedRuleset]) -> list[Finding]:
    return [shadow_finding(saved, earlier, later)
            for saved in map(evaluable, rulesets) for earlier, later in shadowed_rules(saved)]


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
    return source != ANYONE_ELSE and policy.blocklist_index.covers(parse_cidr(source))


def world_ssh_findings(policy: FirewallPolicy) -> list[Finding]:
    wide = [a for a in policy.admin_cidrs if a.prefixlen < (8 if a.version == 4 else 32) or a == any_network(a.version)]
    return [Finding(WARNING, f"SSH is open to {a} (firewall.adminCidrs): that is most of the internet; "
                             "list the addresses you really administer from") for a in wide]


def analyse(policy: FirewallPolicy, release: Release) -> list[Finding]:
    """All findings, errors first. Run on every render."""
    findings = (lockout_findings(policy, release) + shadow_findings(release.rulesets)
                + layer_findings(policy, release) + world_ssh_findings(policy))
    return errors_first(findings)
