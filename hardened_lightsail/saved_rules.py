"""Reads what iptables-save / ip6tables-save write (legacy or nft, and hand-written
iptables-restore files) and what `ipset save` writes into rules the analysis reasons with.

It reads a rule the way iptables does: words split with shell-style quoting, generic options
(-s -d -p -i -o -f -j -g), then each option handed to the match module it belongs to (`-m tcp`,
written by iptables-save, or loaded implicitly by `-p tcp` in a hand-typed file), each module
with its own option table. Whatever it can't read is kept as a note naming the line, and as a
condition that matches "some packets", so the analysis never silently ignores it. Pure."""
from __future__ import annotations

import ipaddress
import shlex
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from .networks import Network
from .rule_conditions import (
    ALL,
    NONE,
    AddressIs,
    Condition,
    Fixed,
    HostFacts,
    IcmpTypeIs,
    InSet,
    InterfaceIs,
    Intervals,
    IpSet,
    KindIn,
    NotUnderstood,
    PacketDetail,
    PortsIn,
    ProtocolIs,
    StateIn,
    SteadyState,
    TcpFlagsIn,
    by_dimension,
)

BUILTIN_CHAINS = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
                  "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
                  "raw": ("PREROUTING", "OUTPUT"), "security": ("INPUT", "FORWARD", "OUTPUT")}
TERMINAL = ("ACCEPT", "DROP", "REJECT")
# Targets that act and let the packet go on to the next rule.
CONTINUING = ("LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "SET", "AUDIT", "TRACE", "CLASSIFY", "TCPMSS",
              "NOTRACK", "CT", "TEE", "CHECKSUM", "SECMARK", "CONNSECMARK", "DSCP", "TOS", "TTL", "HL")
# Targets whose verdict is decided elsewhere (a userspace program, another table).
ELSEWHERE = ("NFQUEUE", "QUEUE", "DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP")
UNDERSTOOD_NOTE = "the analysis below may miss what it does"


# --- the model --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SavedRule:
    chain: str
    target: str | None  # None: no -j (the rule only counts packets)
    conditions: tuple[Condition, ...]
    line: int  # 1-based line in the file; 0 when the text has no meaningful line numbers
    text: str  # the rule as written
    index: int  # position among the file's rules (file order)
    goto: bool = False  # -g: the chain's end returns to the caller's caller
    modules: tuple[str, ...] = ()  # match modules used, -m and implicit
    target_options: tuple[tuple[str, tuple[str, ...]], ...] = ()
    table: str = "filter"

    def target_option(self, name: str) -> tuple[str, ...] | None:
        for option, values in self.target_options:
            if option == name:
                return values
        return None

    @cached_property
    def by_dimension(self) -> dict[str, tuple[Any, ...]]:  # one dimension's conditions share a class
        return by_dimension(self.conditions)

    @property
    def understood(self) -> bool:
        return not any(isinstance(c, NotUnderstood) for c in self.conditions)


@dataclass(frozen=True)
class Note:
    """Something the reader could not take in: a line, a module, an option, a target."""

    line: int
    message: str
    fatal: bool = False  # iptables-restore itself would refuse the file


@dataclass
class SavedRuleset:
    """One family's filter table as the analysis sees it, plus what the other tables hold."""

    family: int
    label: str  # how findings name the file: "rules.v4", "/etc/iptables/rules.v4", "root@host IPv4"
    policies: dict[str, str] = field(default_factory=dict)
    chains: dict[str, int] = field(default_factory=dict)  # user chain -> line declared
    rules: list[SavedRule] = field(default_factory=list)  # file order
    notes: list[Note] = field(default_factory=list)
    facts: HostFacts = field(default_factory=HostFacts)
    other_tables: dict[str, list[SavedRule]] = field(default_factory=dict)
    line_numbers: bool = True
    _order: dict[str, list[SavedRule]] = field(default_factory=dict, repr=False)  # chain -> rules in order

    def chain_rules(self, chain: str) -> list[SavedRule]:
        return self._order.get(chain, [])

    def where(self, rule: SavedRule, short: bool = False) -> str:
        """How a finding names a rule: "rules.v4 line 12" ("line 12" when short)."""
        if not self.line_numbers:
            return self.label
        return f"line {rule.line}" if short else f"{self.label} line {rule.line}"

    @cached_property
    def empty(self) -> bool:
        """Nothing filters: no rules and every built-in chain accepts."""
        return not self.rules and all(policy == "ACCEPT" for policy in self.policies.values())


# --- words --------------------------------------------------------------------------------------

def split_words(text: str) -> list[str]:
    """iptables-restore's own splitting: blanks separate, double quotes group, backslash escapes
    inside quotes (what iptables-save writes for comments and prefixes)."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    return list(lexer)


@dataclass
class _Option:
    name: str
    values: tuple[str, ...]
    negated: bool


@dataclass
class _Module:
    name: str
    options: list[_Option] = field(default_factory=list)


class _LineError(ValueError):
    """A value that can't be read; the message says which and why."""


# --- values --------------------------------------------------------------------------------------

def _port_number(text: str, protocol: str | None) -> int:
    if text.isdigit():
        number = int(text)
        if number <= 65535:
            return number
        raise _LineError(f"port {text} is out of range")
    for proto in ([protocol] if protocol in ("tcp", "udp") else ["tcp", "udp"]):
        try:
            return socket.getservbyname(text, proto)
        except OSError:
            continue
    raise _LineError(f"unknown port name {text!r}")


def _port_items(text: str, protocol: str | None) -> list[tuple[int, int]]:
    """"22", "1000:2000", ":1024", "8000:" and comma lists of them (multiport)."""
    pairs = []
    for item in text.split(","):
        if ":" in item:
            first, _, last = item.partition(":")
            pairs.append((_port_number(first, protocol) if first else 0,
                          _port_number(last, protocol) if last else 65535))
        else:
            number = _port_number(item, protocol)
            pairs.append((number, number))
    return pairs


def _networks(text: str, family: int) -> tuple[Network, ...]:
    """-s/-d values: an address (a host), a network, or a comma list; host bits are masked off
    as iptables does (it saves `10.0.0.1/8` as `10.0.0.0/8`)."""
    networks = []
    for item in text.split(","):
        written = item if "/" in item else f"{item}/{128 if ':' in item else 32}"
        try:
            network = ipaddress.ip_network(written, strict=False)
        except ValueError:
            raise _LineError(f"{item!r} is not an address or network (host names are not resolved here)") from None
        if network.version != family:
            raise _LineError(f"{item} is an IPv{network.version} address in an IPv{family} ruleset")
        networks.append(network)
    return tuple(networks)


def _range_networks(text: str, family: int) -> tuple[Network, ...]:
    first, _, last = text.partition("-")
    try:
        low, high = ipaddress.ip_address(first), ipaddress.ip_address(last or first)
        return tuple(ipaddress.summarize_address_range(low, high))
    except (ValueError, TypeError):
        raise _LineError(f"{text!r} is not an address range") from None


ICMP_TYPES = {  # name -> (type, code or None), as `iptables -p icmp -h` lists them
    "echo-reply": (0, None), "pong": (0, None), "destination-unreachable": (3, None),
    "network-unreachable": (3, 0), "host-unreachable": (3, 1), "protocol-unreachable": (3, 2),
    "port-unreachable": (3, 3), "fragmentation-needed": (3, 4), "source-route-failed": (3, 5),
    "network-unknown": (3, 6), "host-unknown": (3, 7), "network-prohibited": (3, 9), "host-prohibited": (3, 10),
    "TOS-network-unreachable": (3, 11), "TOS-host-unreachable": (3, 12), "communication-prohibited": (3, 13),
    "host-precedence-violation": (3, 14), "precedence-cutoff": (3, 15), "source-quench": (4, None),
    "redirect": (5, None), "network-redirect": (5, 0), "host-redirect": (5, 1), "TOS-network-redirect": (5, 2),
    "TOS-host-redirect": (5, 3), "echo-request": (8, None), "ping": (8, None), "router-advertisement": (9, None),
    "router-solicitation": (10, None), "time-exceeded": (11, None), "ttl-exceeded": (11, None),
    "ttl-zero-during-transit": (11, 0), "ttl-zero-during-reassembly": (11, 1), "parameter-problem": (12, None),
    "ip-header-bad": (12, 0), "required-option-missing": (12, 1), "timestamp-request": (13, None),
    "timestamp-reply": (14, None), "address-mask-request": (17, None), "address-mask-reply": (18, None),
}
ICMPV6_TYPES = {  # as `ip6tables -p icmpv6 -h` lists them
    "destination-unreachable": (1, None), "no-route": (1, 0), "communication-prohibited": (1, 1),
    "beyond-scope": (1, 2), "address-unreachable": (1, 3), "port-unreachable": (1, 4), "failed-policy": (1, 5),
    "reject-route": (1, 6), "packet-too-big": (2, None), "time-exceeded": (3, None), "ttl-exceeded": (3, None),
    "ttl-zero-during-transit": (3, 0), "ttl-zero-during-reassembly": (3, 1), "parameter-problem": (4, None),
    "bad-header": (4, 0), "unknown-header-type": (4, 1), "unknown-option": (4, 2), "echo-request": (128, None),
    "ping": (128, None), "echo-reply": (129, None), "pong": (129, None), "router-solicitation": (133, None),
    "router-advertisement": (134, None), "neighbour-solicitation": (135, None),
    "neighbor-solicitation": (135, None), "neighbour-advertisement": (136, None),
    "neighbor-advertisement": (136, None), "redirect": (137, None),
}


def _icmp_values(text: str, names: dict[str, tuple[int, int | None]]) -> Intervals:
    if text == "any":
        return Intervals(((0, 255 * 256 + 255),))
    if text in names:
        kind, code = names[text]
    else:
        kind_text, _, code_text = text.partition("/")
        if not kind_text.isdigit() or (code_text and not code_text.isdigit()):
            raise _LineError(f"unknown ICMP type {text!r}")
        kind, code = int(kind_text), int(code_text) if code_text else None
    return Intervals(((kind * 256, kind * 256 + 255),) if code is None else ((kind * 256 + code,) * 2,))


TCP_FLAGS = {"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10, "URG": 0x20, "ECE": 0x40,
             "CWR": 0x80, "ALL": 0x3F, "NONE": 0}


def _flag_bits(text: str) -> int:
    bits = 0
    for name in text.split(","):
        if name.upper() not in TCP_FLAGS:
            raise _LineError(f"unknown TCP flag {name!r}")
        bits |= TCP_FLAGS[name.upper()]
    return bits


def _tcp_flags(mask: int, compare: int, negated: bool) -> TcpFlagsIn:
    return TcpFlagsIn(frozenset(v for v in range(256) if ((v & mask) == compare) != negated))


CONNTRACK_STATES = frozenset({"INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED", "SNAT", "DNAT"})


def _states(text: str, negated: bool) -> StateIn:
    states = frozenset(text.upper().split(","))
    unknown = states - CONNTRACK_STATES
    if unknown:
        raise _LineError(f"unknown connection state {', '.join(sorted(unknown))}")
    return StateIn(CONNTRACK_STATES - states if negated else states)


ADDRESS_TYPES = frozenset({"UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE",
                           "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE"})
PACKET_TYPES = frozenset({"unicast", "broadcast", "multicast", "host"})


def _kinds(field_name: str, text: str, negated: bool, universe: frozenset[str]) -> KindIn:
    kinds = frozenset(k.upper() if field_name != "pkt-type" else k.lower() for k in text.split(","))
    if field_name == "pkt-type" and "host" in kinds:
        kinds |= {"unicast"}
    unknown = kinds - universe
    if unknown:
        raise _LineError(f"unknown {field_name} {', '.join(sorted(unknown))}")
    return KindIn(field_name, universe - kinds if negated else kinds)


def _ports_condition(kind: str, option: _Option, protocol: str | None) -> PortsIn:
    written = Intervals.of(_port_items(option.values[0], protocol))
    ports = written.complement() if option.negated else written
    return PortsIn(kind, ports, written, option.negated)


# --- match modules: each with its option table and how its options become conditions --------

@dataclass(frozen=True)
class MatchModule:
    options: dict[str, int]  # option -> number of values it takes
    build: Callable[[_Context, list[_Option]], list[Condition]]
    aliases: dict[str, str] = field(default_factory=dict)

    def canonical(self, option: str) -> str | None:
        name = self.aliases.get(option, option)
        return name if name in self.options else None


@dataclass
class _Context:
    family: int
    protocol: str | None
    module: str


def _build_tcp_udp(context: _Context, options: list[_Option]) -> list[Condition]:
    conditions: list[Condition] = []
    for option in options:
        if option.name in ("--dport", "--sport"):
            conditions.append(_ports_condition(option.name[2:], option, context.protocol))
        elif option.name == "--tcp-flags":
            conditions.append(_tcp_flags(_flag_bits(option.values[0]), _flag_bits(option.values[1]), option.negated))
        elif option.name == "--syn":
            conditions.append(_tcp_flags(0x17, 0x02, option.negated))
        else:  # --tcp-option
            conditions.append(PacketDetail(context.module, (option.name, *option.values)))
    return conditions


def _build_icmp(context: _Context, options: list[_Option]) -> list[Condition]:
    names = ICMP_TYPES if context.module == "icmp" else ICMPV6_TYPES
    conditions: list[Condition] = []
    for option in options:
        values = _icmp_values(option.values[0], names)
        conditions.append(IcmpTypeIs(values.complement(0, 255 * 256 + 255) if option.negated else values))
    return conditions


def _build_multiport(context: _Context, options: list[_Option]) -> list[Condition]:
    kinds = {"--dports": "dport", "--sports": "sport", "--ports": "either"}
    return [_ports_condition(kinds[option.name], option, context.protocol) for option in options]


def _build_state(context: _Context, options: list[_Option]) -> list[Condition]:
    return [_states(option.values[0], option.negated) for option in options]


CONNTRACK_FIELDS = {  # option -> (how a probe's packet relates to it)
    "--ctorigsrc": ("address", "src"), "--ctorigdst": ("address", "dst"),
    "--ctreplsrc": ("address", "dst"), "--ctrepldst": ("address", "src"),  # the reply goes back
    "--ctorigsrcport": ("port", "sport"), "--ctorigdstport": ("port", "dport"),
    "--ctreplsrcport": ("port", "dport"), "--ctrepldstport": ("port", "sport"),
}


def _build_conntrack(context: _Context, options: list[_Option]) -> list[Condition]:
    conditions: list[Condition] = []
    for option in options:
        value = option.values[0] if option.values else ""
        if option.name == "--ctstate":
            conditions.append(_states(value, option.negated))
        elif option.name == "--ctproto":
            conditions.append(ProtocolIs(frozenset({_protocol(value)}), option.negated))
        elif option.name in CONNTRACK_FIELDS:
            kind, direction = CONNTRACK_FIELDS[option.name]
            if kind == "address":
                conditions.append(AddressIs(direction, _networks(value, context.family), option.negated))
            else:
                conditions.append(_ports_condition(direction, option, None))
        elif option.name == "--ctstatus":  # a connection's first packet has no status bits yet
            matches = "NONE" in value.upper().split(",")
            conditions.append(Fixed((option.name, value), ALL if matches != option.negated else NONE))
        elif option.name == "--ctdir":  # a probe travels in the ORIGINAL direction
            matches = value.upper() == "ORIGINAL"
            conditions.append(Fixed((option.name, value), ALL if matches != option.negated else NONE))
        else:  # --ctexpire
            conditions.append(PacketDetail("conntrack", (option.name, *option.values)))
    return conditions


def _words(options: list[_Option]) -> tuple[str, ...]:
    return tuple(word for o in options for word in (["!"] if o.negated else []) + [o.name, *o.values])


def _build_limit(context: _Context, options: list[_Option]) -> list[Condition]:
    # Under the limit (the steady state) it matches; `! -m limit` style negation is not written.
    return [SteadyState("limit", True, _words(options))]


def _build_hashlimit(context: _Context, options: list[_Option]) -> list[Condition]:
    above = any(o.name == "--hashlimit-above" for o in options)
    return [SteadyState("hashlimit", not above, _words(options))]


def _build_recent(context: _Context, options: list[_Option]) -> list[Condition]:
    # --set always matches (it records the source); --rcheck/--update/--remove match only listed
    # sources, and in the steady state nobody is listed.
    negated = any(o.negated for o in options if o.name in ("--set", "--rcheck", "--update", "--remove"))
    checks = any(o.name in ("--rcheck", "--update", "--remove") for o in options)
    return [SteadyState("recent", (not checks) != negated, _words(options))]


def _build_connlimit(context: _Context, options: list[_Option]) -> list[Condition]:
    # A new source holds no connections yet: never above a limit, always up to it.
    above = [o for o in options if o.name == "--connlimit-above"]
    upto = [o for o in options if o.name == "--connlimit-upto"]
    matching = above[0].negated if above else not (upto and upto[0].negated)
    return [SteadyState("connlimit", matching, _words(options))]


def _build_set(context: _Context, options: list[_Option]) -> list[Condition]:
    lookups = [o for o in options if o.name == "--match-set"]
    rest = _words([o for o in options if o.name != "--match-set"])
    return [InSet(o.values[0], tuple(o.values[1].split(",")), o.negated, rest) for o in lookups]


def _build_addrtype(context: _Context, options: list[_Option]) -> list[Condition]:
    return [_kinds(o.name[2:], o.values[0], o.negated, ADDRESS_TYPES)
            for o in options if o.name in ("--src-type", "--dst-type")]


def _build_pkttype(context: _Context, options: list[_Option]) -> list[Condition]:
    return [_kinds("pkt-type", o.values[0], o.negated, PACKET_TYPES) for o in options]


def _build_iprange(context: _Context, options: list[_Option]) -> list[Condition]:
    return [AddressIs("src" if o.name == "--src-range" else "dst", _range_networks(o.values[0], context.family),
                      o.negated) for o in options]


def _build_nothing(context: _Context, options: list[_Option]) -> list[Condition]:
    return []  # -m comment: says nothing about which packets match


def _build_ipv6_header(context: _Context, options: list[_Option]) -> list[Condition]:
    # rt / frag match only packets that carry that extension header; a probe carries none.
    return [Fixed((f"-m {context.module}", *_words(options)), NONE)]


def _build_detail(context: _Context, options: list[_Option]) -> list[Condition]:
    return [PacketDetail(context.module, _words(options))]


PORTS = {"--dport": 1, "--sport": 1}
PORT_ALIASES = {"--destination-port": "--dport", "--source-port": "--sport"}
MATCHES: dict[str, MatchModule] = {
    "tcp": MatchModule({**PORTS, "--tcp-flags": 2, "--syn": 0, "--tcp-option": 1}, _build_tcp_udp, PORT_ALIASES),
    "udp": MatchModule(dict(PORTS), _build_tcp_udp, PORT_ALIASES),
    "icmp": MatchModule({"--icmp-type": 1}, _build_icmp),
    "icmp6": MatchModule({"--icmpv6-type": 1}, _build_icmp),
    "multiport": MatchModule({"--dports": 1, "--sports": 1, "--ports": 1}, _build_multiport,
                             {"--destination-ports": "--dports", "--source-ports": "--sports"}),
    "state": MatchModule({"--state": 1}, _build_state),
    "conntrack": MatchModule({"--ctstate": 1, "--ctproto": 1, "--ctstatus": 1, "--ctexpire": 1, "--ctdir": 1,
                              **{name: 1 for name in CONNTRACK_FIELDS}}, _build_conntrack),
    "limit": MatchModule({"--limit": 1, "--limit-burst": 1}, _build_limit),
    "hashlimit": MatchModule({option: 1 for option in (
        "--hashlimit-upto", "--hashlimit-above", "--hashlimit-burst", "--hashlimit-mode", "--hashlimit-name",
        "--hashlimit-htable-size", "--hashlimit-htable-max", "--hashlimit-htable-expire",
        "--hashlimit-htable-gcinterval", "--hashlimit-srcmask", "--hashlimit-dstmask",
        "--hashlimit-rate-interval")} | {"--hashlimit-rate-match": 0}, _build_hashlimit,
        {"--hashlimit": "--hashlimit-upto"}),
    "recent": MatchModule({"--set": 0, "--rcheck": 0, "--update": 0, "--remove": 0, "--seconds": 1, "--reap": 0,
                           "--hitcount": 1, "--rttl": 0, "--name": 1, "--mask": 1, "--rsource": 0, "--rdest": 0},
                          _build_recent),
    "connlimit": MatchModule({"--connlimit-upto": 1, "--connlimit-above": 1, "--connlimit-mask": 1,
                              "--connlimit-saddr": 0, "--connlimit-daddr": 0}, _build_connlimit),
    "set": MatchModule({"--match-set": 2, "--return-nomatch": 0, "--update-counters": 0,
                        "--update-subcounters": 0, "--packets-eq": 1, "--packets-lt": 1, "--packets-gt": 1,
                        "--bytes-eq": 1, "--bytes-lt": 1, "--bytes-gt": 1}, _build_set, {"--set": "--match-set"}),
    "comment": MatchModule({"--comment": 1}, _build_nothing),
    "addrtype": MatchModule({"--src-type": 1, "--dst-type": 1, "--limit-iface-in": 0, "--limit-iface-out": 0},
                            _build_addrtype),
    "pkttype": MatchModule({"--pkt-type": 1}, _build_pkttype),
    "iprange": MatchModule({"--src-range": 1, "--dst-range": 1}, _build_iprange),
    "rt": MatchModule({"--rt-type": 1, "--rt-segsleft": 1, "--rt-len": 1, "--rt-0-res": 0, "--rt-0-addrs": 1,
                       "--rt-0-not-strict": 0}, _build_ipv6_header),
    "frag": MatchModule({"--fragid": 1, "--fraglen": 1, "--fragres": 0, "--fragfirst": 0, "--fragmore": 0,
                         "--fraglast": 0}, _build_ipv6_header),
    "ttl": MatchModule({"--ttl-eq": 1, "--ttl-lt": 1, "--ttl-gt": 1}, _build_detail),
    "hl": MatchModule({"--hl-eq": 1, "--hl-lt": 1, "--hl-gt": 1}, _build_detail),
    "length": MatchModule({"--length": 1}, _build_detail),
    "mac": MatchModule({"--mac-source": 1}, _build_detail),
    "tos": MatchModule({"--tos": 1}, _build_detail),
    "dscp": MatchModule({"--dscp": 1, "--dscp-class": 1}, _build_detail),
    "mark": MatchModule({"--mark": 1}, _build_detail),
    "connmark": MatchModule({"--mark": 1}, _build_detail),
    "owner": MatchModule({"--uid-owner": 1, "--gid-owner": 1, "--socket-exists": 0, "--suppl-groups": 0},
                         _build_detail),
    "time": MatchModule({"--datestart": 1, "--datestop": 1, "--timestart": 1, "--timestop": 1, "--monthdays": 1,
                         "--weekdays": 1, "--contiguous": 0, "--kerneltz": 0, "--utc": 0}, _build_detail),
    "string": MatchModule({"--algo": 1, "--from": 1, "--to": 1, "--string": 1, "--hex-string": 1, "--icase": 0},
                          _build_detail),
    "helper": MatchModule({"--helper": 1}, _build_detail),
    "statistic": MatchModule({"--mode": 1, "--probability": 1, "--every": 1, "--packet": 1}, _build_detail),
    "physdev": MatchModule({"--physdev-in": 1, "--physdev-out": 1, "--physdev-is-in": 0, "--physdev-is-out": 0,
                            "--physdev-is-bridged": 0}, _build_detail),
    "tcpmss": MatchModule({"--mss": 1}, _build_detail),
}
# The module `-p PROTOCOL` loads by itself when an option needs it (a hand-typed `--dport`).
IMPLICIT_MODULE = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "ipv6-icmp": "icmp6"}
MODULE_ALIASES = {"icmpv6": "icmp6"}

TARGETS: dict[str, dict[str, int]] = {
    "ACCEPT": {}, "DROP": {}, "RETURN": {},
    "REJECT": {"--reject-with": 1},
    "LOG": {"--log-level": 1, "--log-prefix": 1, "--log-tcp-sequence": 0, "--log-tcp-options": 0,
            "--log-ip-options": 0, "--log-uid": 0, "--log-macdecode": 0},
    "NFLOG": {"--nflog-group": 1, "--nflog-prefix": 1, "--nflog-range": 1, "--nflog-size": 1,
              "--nflog-threshold": 1},
}

PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "ipv6-icmp", "icmpv6": "ipv6-icmp",
                  "icmp6": "ipv6-icmp", "0": "all"}


def _protocol(text: str) -> str:
    return PROTOCOL_NAMES.get(text.lower(), text.lower())


# --- one rule ---------------------------------------------------------------------------------

class _RuleReader:
    """Walks one rule's words the way iptables parses its command line."""

    GENERIC: ClassVar[dict[str, str]] = {"-s": "--source", "--src": "--source", "-d": "--destination", "--dst": "--destination",
               "-p": "--protocol", "-i": "--in-interface", "-o": "--out-interface", "-j": "--jump",
               "-g": "--goto", "-m": "--match", "-f": "--fragment", "-c": "--set-counters"}

    def __init__(self, words: list[str], family: int, line: int):
        self.words, self.family, self.line = words, family, line
        self.position = 0
        self.conditions: list[Condition] = []
        self.modules: list[_Module] = []
        self.protocol: str | None = None
        self.target: str | None = None
        self.goto = False
        self.target_options: list[tuple[str, tuple[str, ...]]] = []
        self.notes: list[Note] = []
        self.other_family = False

    # words
    def _next(self) -> str | None:
        if self.position >= len(self.words):
            return None
        word = self.words[self.position]
        self.position += 1
        return word

    def _values(self, count: int, option: str) -> tuple[tuple[str, ...], bool]:
        """`count` values for `option`; an old-style `--dport ! 22` negates."""
        negated = False
        if count and self.position < len(self.words) and self.words[self.position] == "!":
            negated, self.position = True, self.position + 1
        values = tuple(self.words[self.position:self.position + count])
        if len(values) < count:
            raise _LineError(f"{option} needs {count} value{'s' if count > 1 else ''}")
        self.position += count
        return values, negated

    def _greedy(self) -> tuple[str, ...]:
        """Values of an option nobody claims: every word up to the next option."""
        start = self.position
        while self.position < len(self.words) and not self.words[self.position].startswith("-") \
                and self.words[self.position] != "!":
            self.position += 1
        return tuple(self.words[start:self.position])

    def _not_understood(self, what: str, words: tuple[str, ...]) -> None:
        self.notes.append(Note(self.line, f"{what} not understood; {UNDERSTOOD_NOTE}"))
        self.conditions.append(NotUnderstood(words))

    # the walk
    def read(self) -> None:
        negated = False
        while (word := self._next()) is not None:
            if word == "!":
                negated = True
                continue
            option = self.GENERIC.get(word, word)
            if option in ("-4", "--ipv4", "-6", "--ipv6"):
                self.other_family = (option in ("-4", "--ipv4")) != (self.family == 4)
            elif option in ("--source", "--destination", "--protocol", "--in-interface", "--out-interface"):
                values, old_negated = self._values(1, word)
                self._generic(option, values[0], negated or old_negated)
            elif option == "--fragment":
                self.conditions.append(Fixed(("!",) * negated + ("-f",), ALL if negated else NONE))
            elif option in ("--jump", "--goto"):
                self.target, self.goto = self._values(1, word)[0][0], option == "--goto"
            elif option == "--match":
                name = self._values(1, word)[0][0]
                if MODULE_ALIASES.get(name, name) in MATCHES:
                    self.modules.append(_Module(MODULE_ALIASES.get(name, name)))
                else:
                    self._not_understood(f"-m {name}", ("-m", name, *self._unknown_module_words()))
            elif option == "--set-counters":
                self._values(2, word)
            elif word.startswith("-"):
                self._option(word, negated)
            else:
                self._not_understood(f"`{word}`", (word,))
            negated = False

    def _unknown_module_words(self) -> tuple[str, ...]:
        """The options of a module we don't know: up to the next -m, -j or generic option."""
        start = self.position
        while self.position < len(self.words):
            word = self.words[self.position]
            following = self.words[self.position + 1] if self.position + 1 < len(self.words) else ""
            if word in self.GENERIC or word in self.GENERIC.values() or (word == "!" and following in self.GENERIC):
                break
            self.position += 1
        return tuple(self.words[start:self.position])

    def _generic(self, option: str, value: str, negated: bool) -> None:
        if option == "--protocol":
            name = _protocol(value)
            if name != "all":
                self.protocol = None if negated else name
                self.conditions.append(ProtocolIs(frozenset({name}), negated))
        elif option in ("--source", "--destination"):
            direction = "src" if option == "--source" else "dst"
            self.conditions.append(AddressIs(direction, _networks(value, self.family), negated))
        else:
            self.conditions.append(InterfaceIs("in" if option == "--in-interface" else "out", value, negated))

    def _option(self, word: str, negated: bool) -> None:
        if self.target in TARGETS and word in TARGETS[self.target]:
            values, _ = self._values(TARGETS[self.target][word], word)
            self.target_options.append((word, values))
            return
        if self.target is not None and self.target not in TARGETS:
            self.target_options.append((word, self._greedy()))  # a target we only pass through
            return
        for module in reversed(self.modules):
            canonical = MATCHES[module.name].canonical(word)
            if canonical:
                values, old_negated = self._values(MATCHES[module.name].options[canonical], word)
                module.options.append(_Option(canonical, values, negated or old_negated))
                return
        implicit = IMPLICIT_MODULE.get(self.protocol or "")
        if implicit and MATCHES[implicit].canonical(word):
            self.modules.append(_Module(implicit))
            self._option(word, negated)
            return
        owner = f" of -m {self.modules[-1].name}" if self.modules else ""
        self._not_understood(f"{word}{owner}", ("!",) * negated + (word, *self._greedy()))

    def build(self) -> list[Condition]:
        conditions = list(self.conditions)
        for module in self.modules:
            context = _Context(self.family, self.protocol, module.name)
            conditions += MATCHES[module.name].build(context, module.options)
        return conditions


# --- whole files ------------------------------------------------------------------------------

def _declared(ruleset: SavedRuleset, table: str, name: str, line: int, policy: str = "-") -> None:
    if table != "filter":
        return
    if name in BUILTIN_CHAINS["filter"]:
        if policy not in ("-", ""):
            ruleset.policies[name] = policy.upper()
    else:
        ruleset.chains.setdefault(name, line)


def parse_saved_ruleset(text: str, family: int = 4, label: str | None = None,
                        facts: HostFacts = HostFacts(), line_numbers: bool = True,
                        noflush: bool = False) -> SavedRuleset:
    """The filter table (and the rules of the other tables) of an iptables-save file.

    `noflush`: a file for `iptables-restore --noflush` (a release of ours): a built-in chain it
    does not declare keeps whatever policy it has, so none is assumed (a full restore resets
    them to ACCEPT)."""
    ruleset = SavedRuleset(family=family, label=label or f"rules.v{family}", facts=facts, line_numbers=line_numbers)
    table: str | None = None
    inserted: dict[str, list[SavedRule]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:].strip()
            if table == "filter" and not noflush:
                ruleset.policies = {name: "ACCEPT" for name in BUILTIN_CHAINS["filter"]}
            continue
        if line == "COMMIT":
            table = None
            continue
        if line.split()[0] in ("iptables", "ip6tables", "sudo"):
            ruleset.notes.append(Note(number, "this is a shell command, not iptables-save output: run the script "
                                              "and read the rules with `iptables-save` (or write `-A CHAIN ...` "
                                              "lines under `*filter`)", fatal=True))
            continue
        if table is None:
            ruleset.notes.append(Note(number, f"`{line}` is outside any table (`*filter` ... `COMMIT`)", fatal=True))
            continue
        if line.startswith(":"):
            parts = line[1:].split()
            _declared(ruleset, table, parts[0], number, parts[1] if len(parts) > 1 else "-")
            continue
        _read_command(ruleset, table, line, number, inserted)
    _check_targets(ruleset)
    return ruleset


def _read_command(ruleset: SavedRuleset, table: str, line: str, number: int,
                  inserted: dict[str, list[SavedRule]]) -> None:
    try:
        words = split_words(line)
    except ValueError as error:
        ruleset.notes.append(Note(number, f"can't split `{line}` into words ({error}): check its quotes", fatal=True))
        return
    if words and words[0].startswith("[") and words[0].endswith("]"):
        words = words[1:]  # iptables-save -c: [packets:bytes]
    command = words[0] if words else ""
    if command in ("-N", "--new-chain") and len(words) > 1:
        _declared(ruleset, table, words[1], number)
        return
    if command in ("-P", "--policy") and len(words) > 2:
        _declared(ruleset, table, words[1], number, words[2])
        return
    if command not in ("-A", "--append", "-I", "--insert") or len(words) < 2:
        ruleset.notes.append(Note(number, f"`{line}` not understood (only -A, -I, -N and -P lines are read); "
                                          f"{UNDERSTOOD_NOTE}"))
        return
    chain, rest = words[1], words[2:]
    position = None
    if command in ("-I", "--insert"):
        position = int(rest[0]) if rest and rest[0].isdigit() else 1
        rest = rest[1:] if rest and rest[0].isdigit() else rest
    reader = _RuleReader(rest, ruleset.family, number)
    try:
        reader.read()
        conditions = reader.build()
    except _LineError as error:
        ruleset.notes.append(Note(number, f"can't read `{line}`: {error}", fatal=True))
        return
    if reader.other_family:
        return  # -4 in ip6tables-restore (or -6 in iptables-restore): that tool skips the rule
    ruleset.notes += reader.notes
    rule = SavedRule(chain=chain, target=reader.target, conditions=tuple(sorted(conditions, key=_cheap_first)),
                     line=number, text=line,
                     index=len(ruleset.rules) if table == "filter" else len(ruleset.other_tables.get(table, [])),
                     goto=reader.goto, modules=tuple(m.name for m in reader.modules),
                     target_options=tuple(reader.target_options), table=table)
    if table != "filter":
        ruleset.other_tables.setdefault(table, []).append(rule)
        return
    if chain not in BUILTIN_CHAINS["filter"] and chain not in ruleset.chains:
        ruleset.notes.append(Note(number, f"chain {chain} is not declared (`:{chain} - [0:0]`): "
                                          "iptables-restore refuses this file", fatal=True))
        ruleset.chains[chain] = number
    ruleset.rules.append(rule)
    order = ruleset._order.setdefault(chain, [])
    order.insert(min(position - 1, len(order)) if position else len(order), rule)


def _cheap_first(condition: Condition) -> int:
    """Conditions that most often rule a probe out, and cost least, are asked first."""
    return {"protocol": 0, "ports-dport": 1, "icmp-type": 2, "conntrack-state": 3}.get(condition.dimension, 4)


def _check_targets(ruleset: SavedRuleset) -> None:
    for rule in ruleset.rules:
        target = rule.target
        if target is None or target in TARGETS or target in CONTINUING or target in ruleset.chains:
            continue
        if target in ELSEWHERE:
            ruleset.notes.append(Note(rule.line, f"-j {target}: the verdict is decided elsewhere; "
                                                 f"{UNDERSTOOD_NOTE}"))
        elif target in BUILTIN_CHAINS["filter"]:
            ruleset.notes.append(Note(rule.line, f"-j {target}: a built-in chain can't be a jump target: "
                                                 "iptables-restore refuses this file", fatal=True))
        else:
            ruleset.notes.append(Note(rule.line, f"-j {target} not understood (neither a target the analysis knows "
                                                 f"nor a chain of this table: a typo? iptables-restore refuses a "
                                                 f"target it has no extension for); {UNDERSTOOD_NOTE}"))


# --- ipset save -------------------------------------------------------------------------------

ADDRESS_ONLY_SETS = ("hash:ip", "hash:net", "bitmap:ip")


def parse_ipset_save(text: str) -> dict[str, IpSet]:
    """Sets from `ipset save` / `ipset restore` text: name -> IpSet (members for address sets)."""
    kinds: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for raw in text.splitlines():
        words = raw.split()
        if len(words) >= 3 and words[0] in ("create", "-N"):
            kinds[words[1]], members[words[1]] = words[2], []
        elif len(words) >= 3 and words[0] in ("add", "-A") and words[1] in members:
            members[words[1]].append(words[2])
    sets = {}
    for name, kind in kinds.items():
        networks = None
        if kind in ADDRESS_ONLY_SETS:
            try:
                networks = tuple(ipaddress.ip_network(m, strict=False) for m in members[name])
            except ValueError:
                networks = None  # ranges (a-b) and other forms: contents not evaluated
        sets[name] = IpSet(name, kind, networks)
    return sets

