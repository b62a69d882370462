"""What one iptables match condition means, as data the analysis can reason with: which packets
of a probe (a new connection from some source to some port) it matches, and whether it matches
at least every packet another condition matches (so an earlier rule can hide a later one).

Each condition answers `on_probe` with ALL, SOME or NONE of the probe's packets, and `covers`
with True only when it is sure. Conditions that depend on state (rate limits, recent lists) are
taken in their steady state: no source is banned or over a limit. Pure: nothing here reads a
machine."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

from .network_list import index_of
from .networks import Network, NetworkIndex, covers

ALL, SOME, NONE = "all", "some", "none"
PORT_MAX = 65535
# A client picks its source port; the analysis assumes an ordinary one (Linux: 32768-60999,
# Windows: 49152-65535). A --sport condition holding all of these is taken as matching.
EPHEMERAL_PORTS = (1024, PORT_MAX)


def _negate(result: str, negated: bool) -> str:
    if not negated or result == SOME:
        return result
    return NONE if result == ALL else ALL


@dataclass(frozen=True)
class Probe:
    """A new connection attempt (TCP SYN, UDP datagram, ICMP echo request) from `source` to one
    of the host's own addresses on its public interface. `source` stands for the addresses of
    that network not inside any narrower network a rule names (those get rows of their own)."""

    protocol: str  # tcp, udp, icmp, ipv6-icmp
    port: int | None  # destination port; None for ICMP
    source: Network
    icmp_echo: bool = False

    @property
    def family(self) -> int:
        return self.source.version


@dataclass(frozen=True)
class HostFacts:
    """What the analysis knows about the host beyond its rules; None: unknown."""

    sets: dict[str, IpSet] | None = None  # ipset name -> IpSet (None: the sets' contents weren't given)
    public_interfaces: frozenset[str] | None = None  # where probes arrive (e.g. {"eth0"})
    local_addresses: tuple[Network, ...] | None = None  # the host's own addresses (probe destinations)
    forwarding: bool | None = None  # does the kernel route (ip_forward / IPv6 forwarding on)?


# --- integer sets (ports, ICMP type/code pairs) ---------------------------------------------

@dataclass(frozen=True)
class Intervals:
    """A set of integers as sorted, disjoint, merged closed ranges."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, pairs: Iterable[tuple[int, int]]) -> Intervals:
        merged: list[list[int]] = []
        for first, last in sorted((min(a, b), max(a, b)) for a, b in pairs):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        return cls(tuple((a, b) for a, b in merged))

    def complement(self, low: int = 0, high: int = PORT_MAX) -> Intervals:
        gaps, cursor = [], low
        for first, last in self.ranges:
            if first > cursor:
                gaps.append((cursor, first - 1))
            cursor = max(cursor, last + 1)
        if cursor <= high:
            gaps.append((cursor, high))
        return Intervals(tuple(gaps))

    def intersect(self, other: Intervals) -> Intervals:
        pairs = [(max(a, c), min(b, d)) for a, b in self.ranges for c, d in other.ranges if max(a, c) <= min(b, d)]
        return Intervals.of(pairs)

    def __contains__(self, value: int) -> bool:
        return any(first <= value <= last for first, last in self.ranges)

    def issubset(self, other: Intervals) -> bool:
        return all(any(c <= a and b <= d for c, d in other.ranges) for a, b in self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)


FULL_PORTS = Intervals(((0, PORT_MAX),))


# --- the conditions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Condition:
    """Base: `dimension` groups conditions that constrain the same packet field."""

    @property
    def dimension(self) -> str:  # a property, so subclasses may compute it (or set a constant)
        return "other"

    @property
    def covers_dimensions(self) -> tuple[str, ...]:
        """Dimensions of the conditions this one may cover."""
        return (self.dimension,)

    # Pure: the same packet always gets the same answer (no counters, lists or rate limits),
    # so an earlier rule with this condition reliably takes what it covers.
    pure = True

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        raise NotImplementedError

    def covers(self, other: Condition) -> bool:
        return self == other


@dataclass(frozen=True)
class ProtocolIs(Condition):
    names: frozenset[str]
    negated: bool = False
    dimension = "protocol"

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        return _negate(ALL if probe.protocol in self.names else NONE, self.negated)

    def covers(self, other: Condition) -> bool:
        if not isinstance(other, ProtocolIs):
            return False
        if not self.negated:
            return not other.negated and other.names <= self.names
        return self.names <= other.names if other.negated else not (other.names & self.names)


@dataclass(frozen=True)
class AddressIs(Condition):
    """-s / -d (also iprange and conntrack's original addresses), a union of networks."""

    direction: str  # "src" or "dst"
    networks: tuple[Network, ...]
    negated: bool = False

    @property
    def dimension(self) -> str:
        return f"address-{self.direction}"

    @cached_property
    def _collapsed(self) -> list[Network]:
        return [n for v in (4, 6) for n in ipaddress.collapse_addresses([x for x in self.networks if x.version == v])]  # type: ignore[type-var]  # one family per call; the stubs can't see the filter

    @cached_property
    def _spans(self) -> tuple[tuple[int, int, int], ...]:
        """(version, first, last) address numbers: tables ask millions of times, ints are quick."""
        return tuple((n.version, int(n.network_address), int(n.broadcast_address)) for n in self.networks)

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        if self.direction == "src":
            # The probe's source stands for the part of its network outside narrower named ones.
            source = probe.source
            first, last = int(source.network_address), int(source.broadcast_address)
            inside = any(v == source.version and a <= first and last <= b for v, a, b in self._spans)
            return _negate(ALL if inside else NONE, self.negated)
        return _negate(_destination_match(self.networks, probe, facts), self.negated)

    def covers(self, other: Condition) -> bool:
        if not isinstance(other, AddressIs) or other.direction != self.direction:
            return False
        mine, theirs = self._collapsed, other._collapsed
        if not self.negated and not other.negated:
            return all(any(covers(a, b) for a in mine) for b in theirs)
        if self.negated and not other.negated:
            return not any(a.overlaps(b) for a in mine for b in theirs if a.version == b.version)
        if self.negated and other.negated:
            return all(any(covers(b, a) for b in theirs) for a in mine)
        return any(a.prefixlen == 0 for a in mine)




_NOT_A_PUBLIC_DESTINATION = [ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32", "0.0.0.0/8", "::1/128", "ff00::/8", "fe80::/10")]


def _destination_match(networks: Iterable[Network], probe: Probe, facts: HostFacts) -> str:
    """A probe goes to one of the host's own public addresses: known, or at least not loopback,
    multicast or link-local."""
    if facts.local_addresses:
        mine = [a for a in facts.local_addresses if a.version == probe.family]
        hits = [any(covers(n, a) for n in networks) for a in mine]
        return ALL if hits and all(hits) else NONE if not any(hits) else SOME
    if any(n.prefixlen == 0 and n.version == probe.family for n in networks):
        return ALL
    if all(any(covers(special, n) for special in _NOT_A_PUBLIC_DESTINATION) for n in networks):
        return NONE
    return SOME


@dataclass(frozen=True)
class InterfaceIs(Condition):
    direction: str  # "in" or "out"
    name: str  # "eth0", or "eth+" for every name starting with "eth"
    negated: bool = False

    @property
    def dimension(self) -> str:
        return f"interface-{self.direction}"

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        if self.direction == "out":
            return SOME  # only meaningful in FORWARD/OUTPUT, which probes don't reach
        if self.name == "lo":
            result = NONE  # probes come from outside, never over loopback
        elif facts.public_interfaces:
            hits = [_pattern_covers(self.name, name) for name in facts.public_interfaces]
            result = ALL if all(hits) else NONE if not any(hits) else SOME
        else:
            result = ALL if self.name == "+" else SOME
        return _negate(result, self.negated)

    def covers(self, other: Condition) -> bool:
        if not isinstance(other, InterfaceIs) or other.direction != self.direction:
            return False
        if not self.negated:
            return not other.negated and _pattern_covers(self.name, other.name)
        if other.negated:
            return _pattern_covers(other.name, self.name)
        return not _patterns_overlap(self.name, other.name)


def _pattern_covers(outer: str, inner: str) -> bool:
    """Does interface pattern `outer` ("eth+" or "eth0") match every name `inner` matches?"""
    if not outer.endswith("+"):
        return outer == inner
    return inner.startswith(outer[:-1])


def _patterns_overlap(a: str, b: str) -> bool:
    stem_a, stem_b = a.rstrip("+"), b.rstrip("+")
    if a.endswith("+") and b.endswith("+"):
        return stem_a.startswith(stem_b) or stem_b.startswith(stem_a)
    if a.endswith("+"):
        return b.startswith(stem_a)
    if b.endswith("+"):
        return a.startswith(stem_b)
    return a == b


@dataclass(frozen=True)
class PortsIn(Condition):
    """Destination ports, source ports, or either (multiport --ports); negation already applied."""

    kind: str  # "dport", "sport" or "either"
    ports: Intervals
    written: Intervals = field(default=FULL_PORTS, compare=False)  # as the rule names them
    negated: bool = field(default=False, compare=False)

    @property
    def dimension(self) -> str:
        return f"ports-{self.kind}"

    @property
    def covers_dimensions(self) -> tuple[str, ...]:
        return ("ports-either", "ports-dport", "ports-sport") if self.kind == "either" else (self.dimension,)

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        if self.kind == "dport":
            return ALL if probe.port is not None and probe.port in self.ports else NONE
        source_ports = _source_port_match(self.ports)
        if self.kind == "sport":
            return source_ports
        if probe.port is not None and probe.port in self.ports:
            return ALL
        return source_ports

    def covers(self, other: Condition) -> bool:
        if not isinstance(other, PortsIn):
            return False
        if self.kind == other.kind or (self.kind == "either" and other.kind in ("dport", "sport")):
            return other.ports.issubset(self.ports)
        return False


def _source_port_match(ports: Intervals) -> str:
    if Intervals((EPHEMERAL_PORTS,)).issubset(ports):
        return ALL
    return SOME if ports else NONE


@dataclass(frozen=True)
class IcmpTypeIs(Condition):
    """ICMP / ICMPv6 type and code, as a set of type*256+code values (negation applied)."""

    values: Intervals

    dimension = "icmp-type"

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        if not probe.icmp_echo:
            return NONE
        echo = 8 if probe.family == 4 else 128
        return ALL if echo * 256 in self.values else NONE

    def covers(self, other: Condition) -> bool:
        return isinstance(other, IcmpTypeIs) and other.values.issubset(self.values)


@dataclass(frozen=True)
class StateIn(Condition):
    """conntrack --ctstate / state --state: the connection states matched (negation applied)."""

    states: frozenset[str]

    dimension = "conntrack-state"

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        return ALL if "NEW" in self.states else NONE

    def covers(self, other: Condition) -> bool:
        return isinstance(other, StateIn) and other.states <= self.states


@dataclass(frozen=True)
class TcpFlagsIn(Condition):
    """--tcp-flags / --syn: the flag bytes matched (negation applied)."""

    flag_values: frozenset[int]

    dimension = "tcp-flags"
    SYN = 0x02

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        if probe.protocol != "tcp":
            return NONE
        return ALL if self.SYN in self.flag_values else NONE

    def covers(self, other: Condition) -> bool:
        return isinstance(other, TcpFlagsIn) and other.flag_values <= self.flag_values


@dataclass(frozen=True)
class SteadyState(Condition):
    """A match that depends on counters or lists (limit, hashlimit, recent, connlimit): in the
    steady state the analysis assumes it matches every packet (`matching`) or none."""

    module: str
    matching: bool
    words: tuple[str, ...] = ()  # the options as written, for equality

    dimension = "stateful"
    pure = False

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        return ALL if self.matching else NONE

    def covers(self, other: Condition) -> bool:
        return False  # a rate limit or a list can stop matching at any time


@dataclass(frozen=True)
class InSet(Condition):
    """-m set --match-set NAME src[,dst...]: membership, known when the set's contents are."""

    name: str
    flags: tuple[str, ...]
    negated: bool = False
    words: tuple[str, ...] = ()  # further options (--return-nomatch, counters)

    dimension = "ipset"

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        ipset = (facts.sets or {}).get(self.name)
        if ipset is None:
            return _negate(NONE, self.negated)  # unknown contents: reported, taken as not listed
        if self.flags != ("src",) or ipset.networks is None:
            return SOME
        return _negate(ALL if ipset.index.covers(probe.source) else NONE, self.negated)


@dataclass(frozen=True)
class KindIn(Condition):
    """addrtype / pkttype: the probe's address or packet type is one known value."""

    field_name: str  # "src-type", "dst-type", "pkt-type"
    kinds: frozenset[str]  # the kinds matched (negation applied)

    @property
    def dimension(self) -> str:
        return self.field_name

    PROBE_KIND: ClassVar[dict[str, str]] = {"src-type": "UNICAST", "dst-type": "LOCAL", "pkt-type": "unicast"}

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        return ALL if self.PROBE_KIND[self.field_name] in self.kinds else NONE

    def covers(self, other: Condition) -> bool:
        return isinstance(other, KindIn) and other.field_name == self.field_name and other.kinds <= self.kinds


@dataclass(frozen=True)
class Fixed(Condition):
    """A condition whose answer for a probe is known outright: `-f` (fragments: never a probe),
    an IPv6 routing or fragment header (probes carry none), conntrack's direction."""

    words: tuple[str, ...]
    result: str

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        return self.result


@dataclass(frozen=True)
class PacketDetail(Condition):
    """Matches on details the analysis doesn't model (TTL, length, MAC, time of day, marks):
    some packets of a probe match and some don't."""

    module: str
    words: tuple[str, ...]

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        return SOME


@dataclass(frozen=True)
class NotUnderstood(Condition):
    """Something the parser could not read: reported, and taken as matching some packets."""

    words: tuple[str, ...]
    pure = False

    def on_probe(self, probe: Probe, facts: HostFacts) -> str:
        return SOME

    def covers(self, other: Condition) -> bool:
        return False


@dataclass(frozen=True)
class IpSet:
    """One set from `ipset save`: its type and, for address-only types, its members."""

    name: str
    kind: str  # hash:net, hash:ip, hash:ip,port, list:set, ...
    networks: Sequence[Network] | None  # None for types the analysis can't evaluate

    @cached_property
    def index(self) -> NetworkIndex:
        """Membership in a few binary searches: sets hold blocklists of hundreds of thousands."""
        return index_of(self.networks or ())


def conditions_match(conditions: Iterable[Condition], probe: Probe, facts: HostFacts) -> str:
    outcome = ALL
    for condition in conditions:  # a plain loop: exposure tables ask this millions of times
        result = condition.on_probe(probe, facts)
        if result == NONE:
            return NONE
        if result == SOME:
            outcome = SOME
    return outcome


def by_dimension(conditions: Iterable[Condition]) -> dict[str, tuple[Condition, ...]]:
    grouped: dict[str, list[Condition]] = {}
    for condition in conditions:
        grouped.setdefault(condition.dimension, []).append(condition)
    return {dimension: tuple(group) for dimension, group in grouped.items()}


def conditions_cover(earlier: Iterable[Condition], later: dict[str, tuple[Condition, ...]]) -> bool:
    """Does every packet the later rule's conditions (`by_dimension`) match also match the
    `earlier` conditions? Only conditions on the same packet field can cover each other."""
    for condition in earlier:  # plain loops: a long chain asks this for every pair of rules
        if not condition.pure:
            return False
        for dimension in condition.covers_dimensions:
            if any(condition.covers(other) for other in later.get(dimension, ())):
                break
        else:
            return False
    return True

