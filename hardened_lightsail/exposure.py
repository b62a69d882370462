"""The exposure table: for every port the policy (or a ruleset) names, which sources each layer
lets in, per family.

It is computed from the rendered artifacts (not from the policy), so it shows what would really
be shipped; `fw check` prints it, `fw diff` compares two of them, verification measures it. The
same table is built for a ruleset read off a server (`fw check --rules/--host`), where the
cloud layer is unknown (None) and a port may be open to some packets only ("partly")."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .evaluate import CLOSED, OPEN, cloud_allows, evaluable, host_verdict
from .iptables_rules import Ruleset
from .networks import Network, any_network, parse_cidr, split_families
from .policy import PROTOCOLS, FirewallPolicy, PortRange
from .release import Release
from .rule_conditions import AddressIs, InSet, Intervals
from .saved_rules import BUILTIN_CHAINS, SavedRule, SavedRuleset

ANYONE_ELSE = "anyone else"
OTHER_PORTS = "(other ports)"
# An allow-list ipset's members get rows of their own up to this many; a blocklist never does.
SET_MEMBER_ROWS = 32


@dataclass(frozen=True, order=True)
class ExposureRow:
    port: str  # "tcp/22", "udp/5000-5010", "ping", "tcp (other ports)"
    family: int
    source: str  # a CIDR named in the policy or the rules, or ANYONE_ELSE
    cloud: bool | None  # None: not known (a ruleset read off a server has no cloud layer)
    host: bool  # every new connection of this row is accepted
    host_partly: tuple[str, ...] = ()  # some are and some aren't: the rules that split them

    @property
    def reachable(self) -> bool:
        return self.host if self.cloud is None else self.cloud and self.host

    @property
    def host_state(self) -> str:
        """"open", "partly open" or "closed": what the host layer does with this row."""
        return "partly open" if self.host_partly else "open" if self.host else "closed"


@dataclass(frozen=True)
class PortProbe:
    """One row group of the table: a port (range) or ping, and the sources it names."""

    label: str
    protocol: str  # tcp, udp or icmp (ping)
    first: int | None
    last: int | None
    sources: tuple[Network, ...] = ()


def policy_probes(policy: FirewallPolicy, release: Release) -> list[PortProbe]:
    """Every port the policy names, then every tcp/udp port either layer opens although the
    policy does not name it (a hand-edited or drifted artifact): without those rows a port
    opened in one layer only would never reach the layer check."""
    named = [PortProbe(f"tcp/{policy.ssh_port}", "tcp", policy.ssh_port, policy.ssh_port, policy.admin_cidrs)]
    named += [PortProbe(f"{s.protocol}/{s.ports}", s.protocol, s.ports.first, s.ports.last, s.sources)
              for s in policy.services]
    unnamed: dict[tuple[str, int, int], set[Network]] = {}
    for info in release.port_infos:
        if info["protocol"] in PROTOCOLS:
            unnamed.setdefault((info["protocol"], info["fromPort"], info["toPort"]), set()).update(
                parse_cidr(cidr) for cidr in [*info.get("cidrs", []), *info.get("ipv6Cidrs", [])])
    for ruleset in release.rulesets:
        for (protocol, first, last), sources in _accepted_ports(evaluable(ruleset)).items():
            unnamed.setdefault((protocol, first, last), set()).update(sources)
    for known in named:
        if known.first is not None and known.last is not None:  # ping has no ports
            unnamed.pop((known.protocol, known.first, known.last), None)
    extra = [PortProbe(f"{protocol}/{PortRange(first, last)}", protocol, first, last, tuple(sources))
             for (protocol, first, last), sources in sorted(unnamed.items())]
    return named + extra + [PortProbe("ping", "icmp", None, None)]


def _accepted_ports(ruleset: SavedRuleset) -> dict[tuple[str, int, int], set[Network]]:
    """(protocol, first, last) -> sources, for every rule that accepts named destination ports."""
    found: dict[tuple[str, int, int], set[Network]] = {}
    for rule in ruleset.rules:
        if rule.target != "ACCEPT" or _on_link_only(rule):
            continue
        for protocol, first, last in _named_ports(rule):
            found.setdefault((protocol, first, last), set()).update(
                n for c in rule.by_dimension.get("address-src", ()) if not c.negated for n in c.networks)
    return found


LINK_LOCAL = parse_cidr("fe80::/10")


def _on_link_only(rule: SavedRule) -> bool:
    """A rule for link-local sources or destinations only (e.g. DHCPv6 replies): such traffic
    never crosses a router, so it is no row of what the server exposes."""
    for direction in ("src", "dst"):
        for condition in rule.by_dimension.get(f"address-{direction}", ()):
            if not condition.negated and condition.networks and all(
                    n.version == 6 and n.subnet_of(LINK_LOCAL) for n in condition.networks):
                return True
    return False


def _protocols(rule: SavedRule) -> list[str]:
    named = [c for c in rule.by_dimension.get("protocol", ()) if not c.negated]
    return sorted(named[0].names & set(PROTOCOLS)) if named else []


def _named_ports(rule: SavedRule) -> list[tuple[str, int, int]]:
    """(protocol, first, last) for each port range the rule names as a destination (as written,
    without negation)."""
    ports = [c for kind in ("ports-dport", "ports-either") for c in rule.by_dimension.get(kind, ())]
    return [(protocol, first, last) for protocol in _protocols(rule)
            for condition in ports if not condition.negated for first, last in condition.written.ranges]


def ruleset_probes(rulesets: Sequence[SavedRuleset | None]) -> list[PortProbe]:
    """Rows for a ruleset read off a server: every destination port a rule names (tcp/udp),
    ping, and one row per protocol for every port no rule names. Each row's sources are the
    networks named by the rules that can apply to it (and the members of small allow-list sets)."""
    known = [r for r in rulesets if r is not None]
    ranges = sorted({key for ruleset in known for rule in ruleset.rules for key in _named_ports(rule)})
    probes = []
    for protocol, first, last in ranges:
        probes.append(PortProbe(f"{protocol}/{PortRange(first, last)}", protocol, first, last,
                                _sources(known, protocol, first, last)))
    probes.append(PortProbe("ping", "icmp", None, None, _sources(known, "icmp", None, None)))
    for protocol in PROTOCOLS:
        port = unnamed_port(known, protocol)
        probes.append(PortProbe(f"{protocol} {OTHER_PORTS}", protocol, port, port,
                                _sources(known, protocol, port, port)))
    return probes


def unnamed_port(rulesets: Sequence[SavedRuleset], protocol: str, also_named: Sequence[tuple[str, int, int]] = ()) -> int:
    """The lowest port above 0 that no rule (nor `also_named`: (protocol, first, last)) names as a
    destination: every rule treats all such ports alike, so it stands for them all."""
    ranges = {key for ruleset in rulesets for rule in ruleset.rules for key in _named_ports(rule)
              if key[0] == protocol} | {key for key in also_named if key[0] == protocol}
    port = 1
    for _, first, last in sorted(ranges, key=lambda key: key[1]):
        if first <= port <= last:
            port = last + 1
    return port


def other_port_probes(probes: list[PortProbe], rulesets: Sequence[Ruleset | SavedRuleset | None],
                      port_infos: list[dict[str, Any]]) -> list[PortProbe]:
    """One probe per protocol for the ports no row, rule or cloud rule names, asked for every
    source the other rows name (an admin-only "accept everything" shows) and anyone else."""
    named = [(p.protocol, p.first, p.last) for p in probes if p.first is not None and p.last is not None]
    named += [(info["protocol"], info["fromPort"], info["toPort"]) for info in port_infos
              if info["protocol"] in PROTOCOLS]
    sources = tuple(dict.fromkeys(source for probe in probes for source in probe.sources))
    evaluated = [evaluable(ruleset) for ruleset in rulesets if ruleset is not None]
    probes = []
    for protocol in PROTOCOLS:
        port = unnamed_port(evaluated, protocol, named)
        if port <= 65535:
            probes.append(PortProbe(f"{protocol} {OTHER_PORTS}", protocol, port, port, sources))
    return probes


def _rule_protocols(rule: SavedRule) -> frozenset[str] | None:
    named = [c for c in rule.by_dimension.get("protocol", ()) if not c.negated]
    return frozenset(named[0].names) if named else None


def _rule_ports(rule: SavedRule) -> Intervals | None:
    ports = None
    for condition in rule.by_dimension.get("ports-dport", ()):
        ports = condition.ports if ports is None else ports.intersect(condition.ports)
    return ports


MAX_REACH_ENTRIES = 32
_Reach = tuple[frozenset[str] | None, Intervals | None]  # (protocols, destination ports); None: any


def chain_reach(ruleset: SavedRuleset) -> dict[str, list[_Reach]]:
    """chain -> [(protocols or None, destination ports or None)]: what a packet must be to get
    into the chain at all (through the jumps that lead there). Built-in chains: anything."""
    reach: dict[str, list[_Reach]] = {chain: [(None, None)] for chain in BUILTIN_CHAINS["filter"]}
    for _ in range(8):  # jumps nest a few levels; a loop just stops growing
        grown = False
        for rule in ruleset.rules:
            if rule.target not in ruleset.chains or rule.chain not in reach:
                continue
            protocols, ports = _rule_protocols(rule), _rule_ports(rule)
            known = reach.setdefault(rule.target, [])
            for caller_protocols, caller_ports in list(reach[rule.chain]):
                if protocols is not None and caller_protocols is not None and not protocols & caller_protocols:
                    continue
                entry = (caller_protocols if protocols is None else protocols if caller_protocols is None
                         else protocols & caller_protocols,
                         caller_ports if ports is None else ports if caller_ports is None
                         else ports.intersect(caller_ports))
                if entry not in known:
                    known.append(entry)
                    grown = True
            if len(known) > MAX_REACH_ENTRIES:
                reach[rule.target] = [(None, None)]
        if not grown:
            break
    return reach


def _can_apply(protocols: frozenset[str] | None, ports: Intervals | None, protocol: str, first: int | None, last: int | None) -> bool:
    if protocols is not None and not ({protocol, "ipv6-icmp" if protocol == "icmp" else protocol} & protocols):
        return False
    if ports is None:
        return True
    return first is not None and last is not None and any(a <= last and first <= b for a, b in ports.ranges)


def _sources(rulesets: Sequence[SavedRuleset], protocol: str, first: int | None, last: int | None
             ) -> tuple[Network, ...]:
    """The networks named by the rules a packet of this row can meet (its chain reached by
    jumps that let such packets through), and the members of small allow-list sets."""
    sources: set[Network] = set()
    for ruleset in rulesets:
        reach = chain_reach(ruleset)
        for rule in ruleset.rules:
            if not _can_apply(_rule_protocols(rule), _rule_ports(rule), protocol, first, last) or not any(
                    _can_apply(p, ports, protocol, first, last) for p, ports in reach.get(rule.chain, ())):
                continue
            for condition in rule.conditions:
                if isinstance(condition, AddressIs) and condition.direction == "src":
                    sources.update(condition.networks)
                elif isinstance(condition, InSet) and rule.target not in ("DROP", "REJECT"):
                    ipset = (ruleset.facts.sets or {}).get(condition.name)
                    if ipset and ipset.networks and len(ipset.networks) <= SET_MEMBER_ROWS:
                        sources.update(ipset.networks)
    # Loopback, link-local and multicast sources never come from the internet: no rows for them.
    return tuple(sorted((n for n in sources if not (n.is_loopback or n.is_link_local or n.is_multicast)),
                        key=lambda n: (n.version, n)))


def port_boundaries(ruleset: Ruleset | SavedRuleset) -> set[int]:
    """Every port where a rule's destination port range starts, or ends (its last port + 1):
    between two of them, every port meets the same rules."""
    points: set[int] = set()
    for rule in evaluable(ruleset).rules:
        for condition in rule.by_dimension.get("ports-dport", ()):
            for first, last in condition.written.ranges:
                points.update((first, last + 1))
    return points


def _checked_ports(probe: PortProbe, ruleset: SavedRuleset) -> list[int | None]:
    """Ports that stand for every port of the probe's range: its first port and each port
    where a rule's port range starts or ends inside it."""
    if probe.first is None:
        return [None]
    last = probe.first if probe.last is None else probe.last
    points = {probe.first} | {p for p in port_boundaries(ruleset) if probe.first < p <= last}
    if probe.last is not None and probe.last != probe.first:
        points.add(probe.last)  # both ends, as the cloud layer is checked
    return [*sorted(points)]


def exposure_rows(probes: list[PortProbe], rulesets: Sequence[Ruleset | SavedRuleset | None],
                  port_infos: list[dict[str, Any]] | None = None
                  ) -> list[ExposureRow]:
    """One row per probe, family and source (the named networks, then "anyone else").
    `rulesets` is (IPv4, IPv6); a family given as None gets no rows; `port_infos` None: no
    cloud layer is known."""
    rows = []
    for probe in probes:
        for family, ruleset in zip((4, 6), rulesets, strict=False):  # [v4] alone: no IPv6 rows
            if ruleset is None:
                continue
            ruleset = evaluable(ruleset)
            named = [n for n in split_families(probe.sources)[0 if family == 4 else 1] if n != any_network(family)]
            echo = probe.protocol == "icmp"
            host_protocol = probe.protocol if not echo else ("icmp" if family == 4 else "ipv6-icmp")
            ports = _checked_ports(probe, ruleset)
            for source, name in [(n, str(n)) for n in named] + [(any_network(family), ANYONE_ELSE)]:
                verdicts = [host_verdict(ruleset, host_protocol, port, source, echo) for port in ports]
                outcomes = {v.outcome for v in verdicts}
                partly: tuple[str, ...] = ()
                if outcomes != {OPEN} and outcomes != {CLOSED}:
                    partly = tuple(dict.fromkeys(ruleset.where(rule, short=True) for v in verdicts for rule in v.because)) \
                        or ("not every port",)
                cloud = None if port_infos is None else all(
                    cloud_allows(port_infos, probe.protocol, port, source, echo)
                    for port in ([None] if echo else sorted({probe.first, probe.last})))  # type: ignore[type-var]  # None only for ping
                rows.append(ExposureRow(port=probe.label, family=family, source=name, cloud=cloud,
                                        host=outcomes == {OPEN}, host_partly=partly))
    return rows


def exposure_table(policy: FirewallPolicy, release: Release) -> list[ExposureRow]:
    """What a policy's release exposes, cloud and host layer: the ports it names, then the
    ports nobody names (one row per protocol, family and source), both evaluated alike."""
    probes = policy_probes(policy, release)
    probes += other_port_probes(probes, release.rulesets, release.port_infos)
    return exposure_rows(probes, release.rulesets, release.port_infos)


OTHER_PORTS_ROW = "any other port"


def _other_ports_closed(rows: list[ExposureRow]) -> tuple[list[ExposureRow], bool]:
    """(the rows for named ports, True when every "(other ports)" row is closed in both layers):
    then one line says so; otherwise those rows are shown one by one."""
    other = [row for row in rows if row.port.endswith(OTHER_PORTS)]
    closed = bool(other) and not any(row.cloud or row.host or row.host_partly for row in other)
    return ([row for row in rows if not row.port.endswith(OTHER_PORTS)] if closed else rows), closed


def ruleset_exposure(rulesets: Sequence[SavedRuleset | None]) -> list[ExposureRow]:
    """What a ruleset read off a server exposes through its host layer."""
    return exposure_rows(ruleset_probes(rulesets), rulesets)


def _mark(allowed: bool | None) -> str:
    return "open" if allowed else "closed"


def host_cell(row: ExposureRow) -> str:
    if row.host_partly:
        return f"partly ({', '.join(row.host_partly)})"
    return _mark(row.host)


def exposure_map(rows: list[ExposureRow]) -> dict[str, str]:
    """The table as {"tcp/22 IPv4 from 192.0.2.0/24": "open", ...}: the `exposure` stack output.

    Pulumi shows a changed map key by key, so a preview names exactly the rows that open or
    close (a text table is cut to its first lines, and one wider cell changes every line)."""
    def state(row: ExposureRow) -> str:
        host = host_cell(row)
        if row.cloud is None:  # a ruleset read off a server: the host layer is all there is
            return host
        if not row.cloud:
            return "closed" if host == "closed" else f"closed (cloud closed, host {host})"
        return host if host != "closed" else "closed (cloud open, host closed)"
    shown, other_closed = _other_ports_closed(rows)
    summary = {f"{r.port} IPv{r.family} from {r.source}": state(r) for r in shown}
    if other_closed:
        summary[OTHER_PORTS_ROW] = "closed"
    return summary


def format_table(rows: list[ExposureRow], markdown: bool = False) -> str:
    """The table as text (or markdown). Rows of a ruleset with no known cloud layer show the
    host column only; a policy's table ends with the ports nobody names: one "any other port"
    line when the rules close them all, their rows otherwise."""
    layered = any(row.cloud is not None for row in rows)
    if layered:
        shown, other_closed = _other_ports_closed(rows)
        header: tuple[str, ...] = ("port", "family", "source", "cloud", "host", "reachable")
        body: list[tuple[str, ...]] = [(r.port, f"IPv{r.family}", r.source, _mark(r.cloud), host_cell(r), "YES" if r.reachable else "no")
                for r in shown]
        if other_closed:
            body.append((OTHER_PORTS_ROW, "both", "anyone", "closed", "closed", "no"))
    else:
        header = ("port", "family", "source", "host")
        body = [(r.port, f"IPv{r.family}", r.source, host_cell(r)) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *body])
