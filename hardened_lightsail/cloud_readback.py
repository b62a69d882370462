"""Compares the cloud firewall as AWS stores it with the policy's rendered cloud layer, by what
each lets in (not by how it is written), and says which rows are more or less open.

What AWS gives back is not what was sent, so both sides are read as sets of (protocol, port,
source) and compared as sets: entry order, CIDR spelling, ranges stored merged or split, icmp
type/code ranges (-1: any), the "all" protocol, `cidrListAliases` and the default AWS fills into a
list the provider left out (pulumi-aws sends no empty list) all come out right. Semantics are the
lab edge's (lab/cloud_layer.py): `cidrs` are IPv4 sources, `ipv6Cidrs` IPv6 sources; icmp applies
to IPv4 only and icmpv6 to IPv6 only; "all" is every protocol and port. A value the comparison
can't read (not a CIDR, a protocol it doesn't know) counts as open to everything it could mean."""
from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

ANY = -1  # icmp/icmpv6 type or code: any
PORT_CLASSES = ("tcp", "udp")
ICMP_CLASSES = {"icmp": "cidrs", "icmpv6": "ipv6Cidrs"}  # the one source list each applies to
OTHER = "other"  # every protocol that is not tcp, udp, icmp or icmpv6 (only "all" opens it)
SOURCE_KEYS = ("cidrs", "ipv6Cidrs", "cidrListAliases")
FAMILY = {"cidrs": 4, "ipv6Cidrs": 6}
TOP = 65535  # ports 0-65535; icmp (type, code) is coded as type * 256 + code in the same span
# Echo request/reply define code 0 only, and the host's `--icmp-type echo-request` matches any
# code: "8/0" (what the provider accepts) and "8/-1" (what the console writes) are the same ping.
SINGLE_CODE_TYPES = {"icmp": (0, 8), "icmpv6": (128, 129)}
DEFAULT_SOURCE = {"cidrs": "0.0.0.0/0", "ipv6Cidrs": "::/0"}


@dataclass(frozen=True)
class Grant:
    """One source of one entry, on one protocol class, over a span of ports (or icmp codes)."""

    protocol: str  # the entry's protocol as written ("all" included)
    cls: str  # tcp, udp, icmp, icmpv6, other, or an unknown protocol's own name
    first: int
    last: int
    key: str  # cidrs, ipv6Cidrs or cidrListAliases
    source: str  # as written
    span: tuple[Any, ...]  # (first, last) address as numbers, or ("alias", name)
    entry: int  # index of the entry it comes from


@dataclass(frozen=True)
class ReadbackRow:
    """Sources of one key that open more (or less) than the other side, on some ports."""

    protocol: str
    ports: str  # "22", "8011-8100", "type 8", "every port"
    key: str
    sources: tuple[str, ...]
    note: str = ""

    def line(self, sign: str) -> str:
        text = f"{self.protocol} {self.ports}: {self.key} " + ", ".join(sign + s for s in self.sources)
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class CloudReadback:
    """The verdict for one server: rows AWS opens beyond the policy, and rows it leaves closed."""

    server: str
    stored_entries: int
    more_open: tuple[ReadbackRow, ...]
    less_open: tuple[ReadbackRow, ...]

    @property
    def matches(self) -> bool:
        return not self.more_open and not self.less_open

    def summary(self) -> str:
        stored = f"{self.stored_entries} port info(s) as AWS stores them"
        if self.more_open:
            return f"{self.server}: the cloud firewall is MORE open than the policy ({stored})"
        if self.less_open:
            return f"{self.server}: the cloud firewall is less open than the policy ({stored})"
        return f"{self.server}: the cloud firewall matches the policy ({stored})"

    def more_open_report(self) -> str:
        return "\n".join([f"{self.summary()}; AWS lets in what the policy does not:",
                          *(f"  {row.line('+')}" for row in self.more_open)])

    def less_open_report(self) -> str:
        return "\n".join([f"{self.server}: the cloud firewall AWS stores is less open than the policy; "
                          "it keeps closed what the policy opens:",
                          *(f"  {row.line('-')}" for row in self.less_open)])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CloudReadback:
        def rows(items: list[dict[str, Any]]) -> tuple[ReadbackRow, ...]:
            return tuple(ReadbackRow(**{**row, "sources": tuple(row["sources"])}) for row in items)
        return cls(data["server"], data["stored_entries"], rows(data["more_open"]), rows(data["less_open"]))


def read_back(server: str, policy: list[dict[str, Any]], stored: list[dict[str, Any]]) -> CloudReadback:
    """Compare what AWS stores (`stored`, cloud-ports.json shape) with the rendered `policy`."""
    policy_grants, stored_grants = _grants(policy), _grants(stored)
    return CloudReadback(server, len(stored), tuple(_rows(stored_grants, policy_grants, stored, policy)),
                         tuple(_rows(policy_grants, stored_grants, policy, None)))


# --- reading entries as grants

def _classes(info: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(class, first, last) spans an entry opens; ports outside 0-65535 are clamped."""
    protocol, low, high = info.get("protocol"), info.get("fromPort"), info.get("toPort")
    low = low if isinstance(low, int) and not isinstance(low, bool) else ANY
    high = high if isinstance(high, int) and not isinstance(high, bool) else ANY
    if protocol in PORT_CLASSES:
        if low == ANY or high == ANY:
            return [(protocol, 0, TOP)]  # unreadable bounds: every port
        return [(protocol, max(0, min(low, high)), min(TOP, max(low, high)))]
    if protocol in ICMP_CLASSES:
        if low == ANY or not 0 <= low <= 255:
            return [(protocol, 0, TOP)]
        if high == ANY or low in SINGLE_CODE_TYPES[protocol] or not 0 <= high <= 255:
            return [(protocol, low * 256, low * 256 + 255)]
        return [(protocol, low * 256 + high, low * 256 + high)]
    if protocol == "all":
        return [*((cls, 0, TOP) for cls in (*PORT_CLASSES, *ICMP_CLASSES)), (OTHER, 0, 0)]
    return [(str(protocol), 0, TOP)]  # a protocol this check doesn't know: all of it


def _span(key: str, text: object) -> tuple[Any, ...] | None:
    if key == "cidrListAliases":
        return ("alias", str(text))
    try:
        network = ipaddress.ip_network(text, strict=False) if isinstance(text, str) else None
    except ValueError:
        network = None
    if network is None or network.version != FAMILY[key]:
        return None
    return int(network.network_address), int(network.broadcast_address)


def _grants(infos: list[dict[str, Any]]) -> list[Grant]:
    grants = []
    for index, info in enumerate(infos):
        for cls, first, last in _classes(info):
            for key in SOURCE_KEYS:
                if cls in ICMP_CLASSES and key != "cidrListAliases" and key != ICMP_CLASSES[cls]:
                    continue  # icmp from an IPv6 source (icmpv6 from IPv4) is no packet: opens nothing
                for source in info.get(key) or []:
                    span = _span(key, source)
                    if span is None:  # unreadable: take it as the whole family
                        source = f"{source!r} (not a CIDR the check can read)"
                        span = (0, 2 ** (32 if key == "cidrs" else 128) - 1)
                    grants.append(Grant(str(info.get("protocol")), cls, first, last, key, str(source), span, index))
    return grants


# --- what one side opens that the other doesn't

def _covered(span: tuple[Any, ...], spans: list[tuple[Any, ...]]) -> bool:
    if span[0] == "alias":
        return span in spans
    reach = span[0]
    for low, high in sorted(s for s in spans if s[0] != "alias"):
        if low > reach:
            break
        reach = max(reach, high + 1)
        if reach > span[1]:
            return True
    return False


def _uncovered(grant: Grant, others: list[Grant]) -> list[tuple[int, int]]:
    """The parts of the grant's port span where its source reaches addresses `others` don't let in."""
    relevant = [g for g in others if g.cls == grant.cls and g.key == grant.key
                and g.first <= grant.last and grant.first <= g.last]
    cuts = sorted({grant.first, grant.last + 1, *(max(g.first, grant.first) for g in relevant),
                   *(min(g.last, grant.last) + 1 for g in relevant)})
    open_parts: list[tuple[int, int]] = []
    for low, next_low in itertools.pairwise(cuts):
        spans = [g.span for g in relevant if g.first <= low and next_low - 1 <= g.last]
        if not _covered(grant.span, spans):
            if open_parts and open_parts[-1][1] == low - 1:
                open_parts[-1] = (open_parts[-1][0], next_low - 1)
            else:
                open_parts.append((low, next_low - 1))
    return open_parts


def _ports(cls: str, parts: list[tuple[int, int]]) -> str:
    if cls == OTHER:
        return "(every other protocol)"
    if cls in ICMP_CLASSES:
        return ", ".join(_icmp_span(low, high) for low, high in parts)
    if parts == [(0, TOP)]:
        return "every port"
    return ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in parts)


def _icmp_span(low: int, high: int) -> str:
    if (low, high) == (0, TOP):
        return "every type"
    (first_type, first_code), (last_type, last_code) = divmod(low, 256), divmod(high, 256)
    if first_code == 0 and last_code == 255:
        return f"type {first_type}" if first_type == last_type else f"types {first_type}-{last_type}"
    if first_type == last_type:
        return f"type {first_type} code {first_code}" + ("" if first_code == last_code else f"-{last_code}")
    return f"type {first_type} code {first_code} to type {last_type} code {last_code}"


def _rows(grants: list[Grant], others: list[Grant], infos: list[dict[str, Any]],
          rendered: list[dict[str, Any]] | None) -> list[ReadbackRow]:
    """Rows of what `grants` open beyond `others`, grouped by entry, ports and key. With `rendered`
    (the policy, when `grants` is what AWS stores), a world-wide source in a list the policy left
    empty is named as AWS's default."""
    grouped: dict[tuple[Any, ...], list[str]] = {}
    for grant in grants:
        parts = _uncovered(grant, others)
        if not parts:
            continue
        info = infos[grant.entry]
        if info.get("protocol") == "all":
            ports = "(every protocol and port)"
        else:
            ports = _ports(grant.cls, parts)
        note = ""
        if rendered is not None and _left_empty(rendered, info, grant.key):
            # pulumi-aws sends no empty list, and the list is optional and computed: whatever
            # AWS holds there shows as no change to the provider, so `up` can't clear it.
            note = ("AWS's default" if grant.source == DEFAULT_SOURCE.get(grant.key) else "not from the policy") + \
                f": the policy leaves {grant.key} empty here and pulumi-aws sends no empty list, so `up` can't clear it"
        sources = grouped.setdefault((grant.protocol, ports, grant.key, note), [])
        if grant.source not in sources:
            sources.append(grant.source)
    return [ReadbackRow(protocol, ports, key, tuple(sources), note)
            for (protocol, ports, key, note), sources in grouped.items()]


def _left_empty(rendered: list[dict[str, Any]], info: dict[str, Any], key: str) -> bool:
    """Whether the policy has this entry's protocol and ports with no source in `key`."""
    return any(entry["protocol"] == info.get("protocol") and entry["fromPort"] == info.get("fromPort")
               and entry["toPort"] == info.get("toPort") and not entry.get(key) for entry in rendered)


def describe(readbacks: Iterable[CloudReadback]) -> str:
    """One summary line per server (the step's stdout)."""
    return "\n".join(readback.summary() for readback in readbacks)
