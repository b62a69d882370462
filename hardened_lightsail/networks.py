"""CIDR handling shared by validation, both renderers and the analysis.

One place parses and orders networks so that every layer sees the same addresses in the same
order (stable order is what keeps an unchanged policy from showing a diff). Blocklists run to
hundreds of thousands of networks, so parsing, ordering, printing and lookups here cost a few
microseconds per network and never one comparison per pair (see bench/scale_bench.py)."""
from __future__ import annotations

import bisect
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable

from .identity_cache import IdentityCache
from .user_text import show

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ANY_V4 = ipaddress.IPv4Network("0.0.0.0/0")
ANY_V6 = ipaddress.IPv6Network("::/0")


class CidrError(ValueError):
    """A CIDR string that is not a network; the message says how to fix it."""


FAMILY_BITS = {4: 32, 6: 128}
_SOCKET_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
_NETWORK_CLASS: dict[int, Callable[[tuple[int, int]], Network]] = {4: ipaddress.IPv4Network, 6: ipaddress.IPv6Network}


def _parse_plain(text: str) -> Network | None:
    """The usual spellings ("192.0.2.0/24", "2001:db8::/32", a bare address) parsed by the C
    library, about 4x quicker than ipaddress's parser; None for anything else or anything with
    host bits set, which parse_cidr then hands to ipaddress (same result, its error messages)."""
    address, slash, length = text.partition("/")
    version = 6 if ":" in address else 4
    if slash and not (length.isdigit() and length.isascii() and len(length) <= 3):
        return None  # a netmask ("/255.255.255.0"), spaces: ipaddress knows them all
    try:
        number = int.from_bytes(socket.inet_pton(_SOCKET_FAMILY[version], address), "big")
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None
    bits = FAMILY_BITS[version]
    prefix = int(length) if slash else bits
    if prefix > bits or number & ((1 << (bits - prefix)) - 1):
        return None
    network: Network = _NETWORK_CLASS[version]((number, prefix))
    return network


# Digits, hex digits, dots and colons, and a prefix length: all of it (fullmatch). ipaddress alone
# would also take an IPv6 zone ("fe80::1%eth0"), whose text may hold anything but "%" and "/"
# (spaces, newlines, "$(...)") and would be written into the rules as it is.
CIDR_TEXT = re.compile(r"[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?")


def parse_cidr(text: str) -> Network:
    """Parse one CIDR strictly: host bits must be zero, so a typo can't silently widen a rule."""
    example = "(e.g. \"203.0.113.7/32\" or \"2001:db8::/64\")"
    if not isinstance(text, str):
        raise CidrError(f"{show(text)} is not a CIDR string (e.g. \"203.0.113.7/32\")")
    # The usual spelling first: the C library takes only digits, hex digits, dots and colons
    # (never a zone, a blank or a character outside CIDR_TEXT), so the pattern below need not
    # run for it (a tenth of a second per 100,000 entries).
    plain = _parse_plain(text)
    if plain is not None:
        return plain
    if not CIDR_TEXT.fullmatch(text):
        stripped = text.strip()
        if stripped != text and CIDR_TEXT.fullmatch(stripped):
            raise CidrError(f"{show(text)} has blanks or control characters around it; write {show(stripped)}")
        raise CidrError(f"{show(text)} is not a CIDR {example}")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise CidrError(f"{show(text)} is not a CIDR {example}") from error
        raise CidrError(f"{show(text)} has host bits set; did you mean \"{loose}\"?") from error


def network_order(network: Network) -> tuple[int, int]:
    """Sort key giving ipaddress's own order (address, then prefix length), without its slow
    comparison operators."""
    return int(network.network_address), network.prefixlen


def split_families(networks: Iterable[Network]) -> tuple[list[Network], list[Network]]:
    """(IPv4 networks, IPv6 networks), each sorted and de-duplicated. Keyed by plain integer
    tuples, which hash and compare in C: a network's own hash and order are Python code, and
    blocklists run to hundreds of thousands."""
    unique = {(network.version, int(network.network_address), network.prefixlen): network for network in networks}
    ordered = [unique[key] for key in sorted(unique)]
    v4_count = sum(1 for version, _, _ in unique if version == 4)
    return ordered[:v4_count], ordered[v4_count:]


_PACKED_LENGTH = {4: 4, 6: 16}


def cidr_text(network: Network) -> str:
    """str(network), about 10x quicker for IPv6: the C library writes the same compressed form
    (RFC 5952), except for IPv4-mapped and -compatible addresses, which are left to ipaddress."""
    version, address = network.version, network.network_address
    text = socket.inet_ntop(_SOCKET_FAMILY[version], int(address).to_bytes(_PACKED_LENGTH[version], "big"))
    if version == 6 and ("." in text or getattr(address, "scope_id", None)):  # IPv6Address only
        return str(network)
    return f"{text}/{network.prefixlen}"


class NetworkIndex:
    """Which members of a (long) list of networks contain, or overlap, a given network: one
    hash lookup per prefix length the list holds, as the kernel's hash:net does, instead of one
    comparison per member."""

    def __init__(self, networks: Iterable[Network]):
        self._members: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for network in networks:
            by_length = self._members[network.version]
            length = network.prefixlen
            starts = by_length.get(length)
            if starts is None:
                starts = by_length[length] = set()
            starts.add(int(network.network_address))
        self._lengths = {version: sorted(by_length) for version, by_length in self._members.items()}
        self._starts: dict[int, list[tuple[int, int]]] = {}  # built on the first overlap question

    def __len__(self) -> int:
        return sum(len(members) for by_length in self._members.values() for members in by_length.values())

    def covering(self, network: Network) -> list[Network]:
        """Members that contain every address of `network` (itself included)."""
        version, address, bits = network.version, int(network.network_address), FAMILY_BITS[network.version]
        found: list[Network] = []
        for length in self._lengths[version]:
            if length > network.prefixlen:
                break
            start = address & ~((1 << (bits - length)) - 1)
            if start in self._members[version][length]:
                found.append(_NETWORK_CLASS[version]((start, length)))
        return found

    def covers(self, network: Network) -> bool:
        return bool(self.covering(network))

    def overlapping(self, network: Network) -> list[Network]:
        """Members that share an address with `network`: those containing it and those inside it."""
        version = network.version
        if version not in self._starts:
            self._starts[version] = sorted((start, length) for length, starts in self._members[version].items()
                                           for start in starts)
        starts, first, last = self._starts[version], int(network.network_address), int(network.broadcast_address)
        inside: list[Network] = []
        for start, length in starts[bisect.bisect_left(starts, (first, network.prefixlen + 1)):]:
            if start > last:
                break
            inside.append(_NETWORK_CLASS[version]((start, length)))
        return self.covering(network) + inside

    @classmethod
    def of_families(cls, v4: NetworkIndex, v6: NetworkIndex) -> NetworkIndex:
        """One index over both families from an index per family, sharing their tables (no
        member is indexed again)."""
        both = cls(())
        both._members = {4: v4._members[4], 6: v6._members[6]}
        both._lengths = {4: v4._lengths[4], 6: v6._lengths[6]}
        return both


# Indexes by the identity of the tuple they were built from: hashing 100,000 networks would
# cost as much as indexing them.
_SHARED_INDEXES: IdentityCache[NetworkIndex] = IdentityCache(8)


def shared_index(networks: tuple[Network, ...]) -> NetworkIndex:
    """The NetworkIndex of `networks`, built once per tuple object: a policy's blocklist is asked
    about by the lock-out check (FirewallPolicy.blocklist_index) and, as the rulesets' ipsets
    (the very same tuples), by every probe of the analysis and the exposure table."""
    return _SHARED_INDEXES.get(id(networks), networks, lambda: NetworkIndex(networks))


def covers(outer: Network, inner: Network) -> bool:
    """True when every address of `inner` is in `outer` (same family only)."""
    return outer.version == inner.version and inner.subnet_of(outer)  # type: ignore[arg-type]  # same family, checked first


def any_network(version: int) -> Network:
    return ANY_V4 if version == 4 else ANY_V6
