"""Lints a ruleset a server already runs (iptables-save / ip6tables-save output, a rules.v4 file,
or the live rules `fw check --host` reads) for the mistakes this project exists to prevent.

Findings name the file and line: rules that can never match (and the rule that hides them),
databases, caches and SSH open to anyone, `-m state`, LOG without a rate limit, chains nothing
reaches, chains that accept by default, no IPv6 rules or IPv6 rules that open what IPv4 closes,
and everything the reader could not understand. Pure: the caller reads the files or the host."""
from __future__ import annotations

from collections.abc import Iterable

from .analysis import shadow_finding, shadowed_rules
from .evaluate import CLOSED, PARTLY, HostVerdict, host_verdict
from .exposure import ANYONE_ELSE, ExposureRow, format_table, ruleset_exposure, unnamed_port
from .findings import ERROR, WARNING, Finding, errors_first
from .host_layer import CHAIN_DOCKER, DOCKER_USER
from .networks import any_network
from .rule_conditions import InSet, SteadyState
from .saved_rules import BUILTIN_CHAINS, SavedRule, SavedRuleset

# Ports nobody should reach from the whole internet: (protocol, port) -> (service, level).
# SSH is a warning (key-only logins from anywhere are a choice some make); the rest are
# databases, caches and admin interfaces that are routinely found open and abused.
SENSITIVE_PORTS = {
    ("tcp", 22): ("SSH", WARNING), ("tcp", 23): ("Telnet", ERROR), ("tcp", 111): ("rpcbind", ERROR),
    ("udp", 111): ("rpcbind", ERROR), ("tcp", 139): ("NetBIOS/SMB", ERROR), ("tcp", 445): ("SMB", ERROR),
    ("tcp", 1433): ("SQL Server", ERROR), ("tcp", 1521): ("Oracle", ERROR),
    ("tcp", 2375): ("the Docker API", ERROR), ("tcp", 2376): ("the Docker API", ERROR),
    ("tcp", 2379): ("etcd", ERROR), ("tcp", 3306): ("MySQL/MariaDB", ERROR), ("tcp", 3389): ("RDP", ERROR),
    ("tcp", 5432): ("PostgreSQL", ERROR), ("tcp", 5900): ("VNC", ERROR), ("tcp", 5984): ("CouchDB", ERROR),
    ("tcp", 6379): ("Redis", ERROR), ("tcp", 9042): ("Cassandra", ERROR), ("tcp", 9200): ("Elasticsearch", ERROR),
    ("tcp", 9300): ("Elasticsearch", ERROR), ("tcp", 10250): ("the kubelet API", ERROR),
    ("tcp", 11211): ("Memcached", ERROR), ("udp", 11211): ("Memcached", ERROR), ("tcp", 27017): ("MongoDB", ERROR),
}
LIMITING_MODULES = ("limit", "hashlimit")
NO_IPV6_RULES = ("on a dual-stack host every port ip6tables doesn't filter is open over IPv6, whatever the "
                 "IPv4 rules say")


def _at(ruleset: SavedRuleset, line: int) -> str:
    return f"{ruleset.label} line {line}" if ruleset.line_numbers else ruleset.label


def _lines(ruleset: SavedRuleset, rules: Iterable[SavedRule]) -> str:
    """"line 8" or "lines 8, 9" (the file's label alone when it has no line numbers)."""
    numbers = sorted({rule.line for rule in rules})
    if not ruleset.line_numbers:
        return ruleset.label
    return f"line {numbers[0]}" if len(numbers) == 1 else f"lines {', '.join(map(str, numbers))}"


def _at_rules(ruleset: SavedRuleset, rules: Iterable[SavedRule]) -> str:
    return f"{ruleset.label} {_lines(ruleset, rules)}" if ruleset.line_numbers else ruleset.label


# --- per-line findings --------------------------------------------------------------------------

def note_findings(ruleset: SavedRuleset) -> list[Finding]:
    return [Finding(ERROR if note.fatal else WARNING, f"{_at(ruleset, note.line)}: {note.message}")
            for note in ruleset.notes]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def rule_findings(ruleset: SavedRuleset) -> list[tuple[int, Finding]]:
    found = []
    old_state = [rule for rule in ruleset.rules if "state" in rule.modules]
    if old_state:
        found.append((old_state[0].line, Finding(WARNING, f"{_at_rules(ruleset, old_state)}: `-m state` is the old interface; use "
                                                          "`-m conntrack --ctstate`")))
    for rule in ruleset.rules:
        where = ruleset.where(rule)
        if rule.target == "LOG" and not any(
                isinstance(c, SteadyState) and c.module in LIMITING_MODULES for c in rule.conditions):
            found.append((rule.line, Finding(WARNING, f"{where}: LOG without -m limit: a flood fills the disk "
                                                      "(add `-m limit --limit 10/min`)")))
        for condition in rule.conditions:
            if isinstance(condition, InSet) and (ruleset.facts.sets is None or condition.name not in ruleset.facts.sets):
                found.append((rule.line, Finding(WARNING, f"{where}: the members of ipset {condition.name} are "
                                                          "unknown (give the `ipset save` output with --ipsets): "
                                                          "the analysis takes it as holding none of the sources")))
    return sorted(found, key=lambda pair: pair[0])


def chain_findings(ruleset: SavedRuleset) -> list[tuple[int, Finding]]:
    """User chains the built-in chains never reach: their rules never run (one finding per file)."""
    jumps: dict[str, set[str]] = {}
    for rule in ruleset.rules:
        if rule.target in ruleset.chains:
            jumps.setdefault(rule.chain, set()).add(rule.target)
    # DOCKER-USER is entered by Docker's own `-A FORWARD -j DOCKER-USER`, whichever file holds it;
    # the project's HL-DOCKER from DOCKER-USER, by the hook hlfw adds once Docker runs (until
    # then it waits, on purpose).
    reached, frontier = {DOCKER_USER, CHAIN_DOCKER}, [*BUILTIN_CHAINS["filter"], DOCKER_USER, CHAIN_DOCKER]
    while frontier:
        for target in jumps.get(frontier.pop(), ()):
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    dead = []
    for chain, line in ruleset.chains.items():
        count = len(ruleset.chain_rules(chain))
        if chain in reached or not count:
            continue
        callers = sorted(c for c, targets in jumps.items() if chain in targets)
        how = f", jumped to only from {', '.join(callers)}" if callers else ""
        where = f"line {line}, " if ruleset.line_numbers else ""
        dead.append((line, f"{chain} ({where}{_plural(count, 'rule')}{how})"))
    if not dead:
        return []
    names = "; ".join(text for _, text in sorted(dead))
    return [(min(line for line, _ in dead), Finding(WARNING, (
        f"{ruleset.label}: {'chain' if len(dead) == 1 else 'chains'} never reached from INPUT, FORWARD or OUTPUT, "
        f"so {'its' if len(dead) == 1 else 'their'} rules never run: {names}")))]


def other_table_findings(ruleset: SavedRuleset) -> list[tuple[int, Finding]]:
    found = []
    for table, rules in ruleset.other_tables.items():
        forwarded = [r for r in rules if r.target == "DNAT"]
        dropping = [r for r in rules if r.target in ("DROP", "REJECT")]
        if forwarded:
            found.append((forwarded[0].line, Finding(WARNING, (
                f"{_at_rules(ruleset, forwarded)}: the {table} table forwards ports elsewhere (DNAT, e.g. "
                "Docker-published ports): those connections go through FORWARD, not INPUT, so the exposure "
                "below does not show them"))))
        if dropping:
            found.append((dropping[0].line, Finding(WARNING, (
                f"{_at_rules(ruleset, dropping)}: the {table} table drops packets too; the analysis reads the filter "
                "table only"))))
    return found


# --- what the whole ruleset does ------------------------------------------------------------------

def routes(ruleset: SavedRuleset) -> bool:
    """Does this host forward packets? Known for a live host (its forwarding switches); for a
    file, when its rules show it (FORWARD rules, Docker's chains, a nat table that rewrites).
    A FORWARD policy only matters there: Ubuntu and Debian leave it ACCEPT with forwarding off."""
    if ruleset.facts.forwarding is not None:
        return ruleset.facts.forwarding
    return bool(ruleset.chain_rules("FORWARD") or DOCKER_USER in ruleset.chains
                or any(ruleset.other_tables.get("nat", ())))


def default_policy_findings(ruleset: SavedRuleset) -> list[Finding]:
    findings = []
    anyone = any_network(ruleset.family)
    # Only policies the file sets: a --noflush release leaves the built-in chains' policies alone.
    if ruleset.policies.get("INPUT") == "ACCEPT":
        open_protocols = [p for p in ("tcp", "udp")
                          if host_verdict(ruleset, p, unnamed_port([ruleset], p), anyone).outcome != CLOSED]
        if open_protocols:
            findings.append(Finding(ERROR, f"{ruleset.label}: INPUT accepts by default (`:INPUT ACCEPT`) and no rule "
                                           f"drops what the rules above don't accept: every {'/'.join(open_protocols)} "
                                           "port no rule names is open to anyone. Set `:INPUT DROP` (default deny), "
                                           "or end INPUT with `-j DROP`"))
    if ruleset.policies.get("FORWARD") == "ACCEPT" and routes(ruleset) and \
            host_verdict(ruleset, "tcp", 1, anyone, chain="FORWARD").outcome != CLOSED:
        findings.append(Finding(WARNING, f"{ruleset.label}: FORWARD accepts by default (`:FORWARD ACCEPT`): if this "
                                         "host routes (Docker, a VPN, ip_forward=1) it forwards anything; set "
                                         "`:FORWARD DROP`"))
    return findings


def _accepting_rules(verdicts: list[HostVerdict]) -> list[SavedRule]:
    return list({rule.index: rule for v in verdicts for rule in v.accepted_by}.values())


def sensitive_port_findings(rulesets: list[SavedRuleset]) -> list[Finding]:
    """A database, cache or SSH port that an ACCEPT rule opens to anyone (the default policy
    opening everything is its own finding)."""
    findings = []
    for (protocol, port), (service, level) in SENSITIVE_PORTS.items():
        opened = []
        for ruleset in rulesets:
            verdict = host_verdict(ruleset, protocol, port, any_network(ruleset.family))
            if verdict.outcome != CLOSED and verdict.accepted_by:
                opened.append((ruleset, verdict))
        if not opened:
            continue
        families = " and ".join(f"IPv{r.family}" for r, _ in opened)
        how = "partly open" if all(v.outcome == PARTLY for _, v in opened) else "open"
        rules = "; ".join(f"{r.label} {_lines(r, v.accepted_by)}" if r.line_numbers else r.label for r, v in opened)
        advice = ("accept it only from the addresses you administer from" if service == "SSH" else
                  "databases, caches and admin interfaces belong behind the firewall: accept it only from the "
                  "hosts that use it")
        findings.append(Finding(level, f"{protocol}/{port} ({service}) is {how} to anyone over {families} "
                                       f"({rules}): {advice}"))
    return findings


# Ports that mean something in one family only: DHCPv4 client/server, DHCPv6 client/server.
ONE_FAMILY_PORTS = ("udp/67", "udp/68", "udp/546", "udp/547")


def _described(row: ExposureRow) -> str:
    return row.host_state + (f" ({', '.join(row.host_partly)})" if row.host_partly else "")


def ipv6_findings(v4: SavedRuleset, v6: SavedRuleset | None, rows: list[ExposureRow]) -> list[Finding]:
    """No IPv6 rules, or IPv6 rules that open (or close) for anyone what the IPv4 ones don't."""
    if v6 is None:
        return [Finding(WARNING, f"no IPv6 rules given (--rules6): {NO_IPV6_RULES}")]
    if v6.empty or v4.empty:
        return []  # empty_findings says it
    findings = []
    by_key = {(row.port, row.family): row for row in rows if row.source == ANYONE_ELSE}
    for (port, family), row4 in by_key.items():
        row6 = by_key.get((port, 6))
        if family != 4 or row6 is None or port in ONE_FAMILY_PORTS or row4.host_state == row6.host_state:
            continue
        findings.append(Finding(WARNING, f"{port} from anyone is {_described(row4)} over IPv4 but {_described(row6)} "
                                         "over IPv6: the IPv6 rules don't match the IPv4 ones"))
    return findings


def empty_findings(ruleset: SavedRuleset, other: SavedRuleset | None) -> list[Finding]:
    """A family with no rules at all (nothing loaded: every chain accepts)."""
    if not ruleset.empty:
        return []
    if ruleset.family == 6 and other is not None and not other.empty:
        return [Finding(ERROR, f"{ruleset.label}: no IPv6 rules at all (ip6tables accepts everything): {NO_IPV6_RULES}")]
    return [Finding(ERROR, f"{ruleset.label}: no rules at all: every port that listens is open to anyone over "
                           f"IPv{ruleset.family}")]


def lint_rulesets(v4: SavedRuleset, v6: SavedRuleset | None) -> tuple[list[Finding], list[ExposureRow]]:
    """(findings, errors first; the exposure table) of a server's rules."""
    rulesets = [r for r in (v4, v6) if r is not None]
    rows = ruleset_exposure([v4, v6])
    findings: list[Finding] = []
    for ruleset in rulesets:
        findings += note_findings(ruleset)
        findings += empty_findings(ruleset, v4 if ruleset is v6 else v6)
        if ruleset.empty:
            continue
        shadows = [(later.line, shadow_finding(ruleset, earlier, later))
                   for earlier, later in shadowed_rules(ruleset)]
        by_line = sorted(shadows + rule_findings(ruleset) + chain_findings(ruleset) + other_table_findings(ruleset),
                         key=lambda pair: pair[0])
        findings += [finding for _, finding in by_line]
        findings += default_policy_findings(ruleset)
    findings += sensitive_port_findings(rulesets)
    findings += ipv6_findings(v4, v6, rows)
    return errors_first(findings), rows


def lint_ruleset(ruleset: SavedRuleset) -> list[Finding]:
    """One family on its own (no IPv6 comparison)."""
    findings, _ = lint_rulesets(ruleset, None)
    return [f for f in findings if not f.message.startswith("no IPv6 rules given")]


def format_lint(findings: list[Finding], rows: list[ExposureRow]) -> str:
    """What `fw check --rules/--host` prints: the exposure table, the findings, their count."""
    errors_found = sum(f.level == ERROR for f in findings)
    lines = [format_table(rows), "", *map(str, findings),
             f"{errors_found} error(s), {len(findings) - errors_found} warning(s)"]
    return "\n".join(lines) + "\n"
