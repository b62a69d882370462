"""CIDR handling shared by validation, both renderers and the analysis.

One place parses and orders networks so that every layer sees the same addresses in the same
order (stable order is what keeps an unchanged policy from showing a diff). Blocklists run to
hundreds of thousands of networks, so a network can also be held as one integer, its key (see
network_key): parsed, ordered, printed and looked up at a microsecond or so per network, never
one comparison per pair (see bench/scale_bench.py and network_list.NetworkList)."""
from __future__ import annotations

import bisect
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from .user_text import show

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ANY_V4 = ipaddress.IPv4Network("0.0.0.0/0")
ANY_V6 = ipaddress.IPv6Network("::/0")


class CidrError(ValueError):
    """A CIDR string that is not a network; the message says how to fix it."""


FAMILY_BITS = {4: 32, 6: 128}

# A network's key: its address shifted left by 8 bits, its prefix length in those 8 bits, and
# bit 136 set for IPv6. Plain integers sort in ipaddress's order (IPv4 first, then address, then
# prefix length) and hash and compare in C: ipaddress's objects cost microseconds each to make,
# order and hash, and a blocklist holds hundreds of thousands.
LENGTH_BITS = 8
LENGTH_MASK = (1 << LENGTH_BITS) - 1
V6_KEY = 1 << (128 + LENGTH_BITS)  # the smallest IPv6 key
_ADDRESS_MASK = (1 << 128) - 1
_FAMILY_FLAG = {4: 0, 6: V6_KEY}
_LENGTH_TEXT = [f"/{length}" for length in range(129)]
_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6


def network_key(network: Network) -> int:
    return _FAMILY_FLAG[network.version] | int(network.network_address) << LENGTH_BITS | network.prefixlen


def key_prefixlen(key: int) -> int:
    return key & LENGTH_MASK


def key_network(key: int) -> Network:
    if key >= V6_KEY:
        return ipaddress.IPv6Network(((key >> LENGTH_BITS) & _ADDRESS_MASK, key & LENGTH_MASK))
    return ipaddress.IPv4Network((key >> LENGTH_BITS, key & LENGTH_MASK))


def key_texts(keys: Iterable[int]) -> list[str]:
    """str() of each key's network, about 10x quicker for IPv6: the C library writes the same
    compressed form (RFC 5952), except for IPv4-mapped and -compatible addresses, which are left
    to ipaddress."""
    ntop, v4, v6 = socket.inet_ntop, _AF_INET, _AF_INET6
    texts = []
    for key in keys:  # a plain loop: it runs once per blocklist entry
        if key < V6_KEY:
            texts.append(ntop(v4, (key >> LENGTH_BITS).to_bytes(4, "big")) + _LENGTH_TEXT[key & LENGTH_MASK])
            continue
        address = ntop(v6, ((key >> LENGTH_BITS) & _ADDRESS_MASK).to_bytes(16, "big"))
        texts.append(str(key_network(key)) if "." in address else address + _LENGTH_TEXT[key & LENGTH_MASK])
    return texts


# Prefix lengths as the usual spelling writes them: at most three ASCII digits ("24", "024").
# Longer than the family allows is left to ipaddress (its error message), and so is /0 (the whole
# address space: rare, and a blocklist refuses it), so that plain_cidr_keys' None stands for
# every entry that needs a closer look.
_PREFIX_TEXT = {text: length for length in range(1, 129) for text in {str(length), f"{length:02}", f"{length:03}"}}


def _plain_key(text: str, pton: Callable[[int, str], bytes] = socket.inet_pton,
               from_bytes: Callable[[bytes, Literal["big"]], int] = int.from_bytes) -> int | None:
    """The usual spellings ("192.0.2.0/24", "2001:db8::/32", a bare address) parsed by the C
    library, about 4x quicker than ipaddress's parser; None for anything else or anything with
    host bits set, which parse_cidr then hands to ipaddress (same result, its error messages).
    (The library's functions are default arguments: this runs once per blocklist entry.)"""
    address, slash, length = text.partition("/")
    if ":" in address:
        family, bits, flag = _AF_INET6, 128, V6_KEY
    else:
        family, bits, flag = _AF_INET, 32, 0
    prefix = _PREFIX_TEXT.get(length, 999) if slash else bits
    if prefix > bits:
        return None  # a netmask ("/255.255.255.0"), spaces, too long: ipaddress knows them all
    try:
        number = from_bytes(pton(family, address), "big")
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None
    if number & ((1 << (bits - prefix)) - 1):
        return None
    return flag | number << LENGTH_BITS | prefix


def plain_cidr_keys(entries: list[str]) -> list[int | None]:
    """The key of each entry in the usual spelling (neither /0 nor host bits set); None for the
    rest (blank, a mistake, an unusual spelling): parse_cidr_key parses or explains those. One
    C-level map over a whole blocklist file, no Python loop of our own."""
    return list(map(_plain_key, entries))


# Digits, hex digits, dots and colons, and a prefix length: all of it (fullmatch). ipaddress alone
# would also take an IPv6 zone ("fe80::1%eth0"), whose text may hold anything but "%" and "/"
# (spaces, newlines, "$(...)") and would be written into the rules as it is.
CIDR_TEXT = re.compile(r"[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?")


def parse_cidr_key(text: str) -> int:
    """parse_cidr's network as its key, without making the network (blocklist entries)."""
    plain = _plain_key(text) if isinstance(text, str) else None
    return network_key(_parse_unusual(text)) if plain is None else plain


def parse_cidr(text: str) -> Network:
    """Parse one CIDR strictly: host bits must be zero, so a typo can't silently widen a rule."""
    plain = _plain_key(text) if isinstance(text, str) else None
    return _parse_unusual(text) if plain is None else key_network(plain)


def _parse_unusual(text: str) -> Network:
    """What the C library's parse left: an error with how to fix it, or ipaddress's network."""
    example = "(e.g. \"203.0.113.7/32\" or \"2001:db8::/64\")"
    if not isinstance(text, str):
        raise CidrError(f"{show(text)} is not a CIDR string (e.g. \"203.0.113.7/32\")")
    # The C library takes only digits, hex digits, dots and colons (never a zone, a blank or a
    # character outside CIDR_TEXT), so the usual spelling never needs this pattern (a tenth of a
    # second per 100,000 entries).
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


def split_families(networks: Iterable[Network]) -> tuple[list[Network], list[Network]]:
    """(IPv4 networks, IPv6 networks), each sorted and de-duplicated. Keyed by plain integer
    tuples, which hash and compare in C: a network's own hash and order are Python code."""
    unique = {(network.version, int(network.network_address), network.prefixlen): network for network in networks}
    ordered = [unique[key] for key in sorted(unique)]
    v4_count = sum(1 for version, _, _ in unique if version == 4)
    return ordered[:v4_count], ordered[v4_count:]


def cidr_text(network: Network) -> str:
    """str(network), quicker (see key_texts)."""
    if getattr(network.network_address, "scope_id", None):  # IPv6Address only; a key has no zone
        return str(network)
    return key_texts((network_key(network),))[0]


class NetworkIndex:
    """Which members of a (long) list of networks contain, or overlap, a given network: one
    binary search among the members' keys per prefix length the list holds, instead of one
    comparison per member."""

    def __init__(self, keys: Sequence[int]):
        """`keys`: the members' keys in order, each once (a NetworkList's `families`)."""
        split = bisect.bisect_left(keys, V6_KEY)
        self._keys = {4: keys[:split], 6: keys[split:]}
        self._lengths = {version: sorted({key & LENGTH_MASK for key in members}) for version, members in self._keys.items()}

    def __len__(self) -> int:
        return sum(len(members) for members in self._keys.values())

    def covering(self, network: Network) -> list[Network]:
        """Members that contain every address of `network` (itself included)."""
        version, address, bits = network.version, int(network.network_address), FAMILY_BITS[network.version]
        keys, flag, found = self._keys[version], _FAMILY_FLAG[version], []
        for length in self._lengths[version]:
            if length > network.prefixlen:
                break
            key = flag | (address & ~((1 << (bits - length)) - 1)) << LENGTH_BITS | length
            position = bisect.bisect_left(keys, key)
            if position < len(keys) and keys[position] == key:
                found.append(key_network(key))
        return found

    def covers(self, network: Network) -> bool:
        return bool(self.covering(network))

    def overlapping(self, network: Network) -> list[Network]:
        """Members that share an address with `network`: those containing it and those inside it
        (longer prefixes starting in its range: the keys between its own and its last address's)."""
        version, keys = network.version, self._keys[network.version]
        flag, length = _FAMILY_FLAG[version], network.prefixlen
        first = flag | int(network.network_address) << LENGTH_BITS | (length + 1)
        last = flag | int(network.broadcast_address) << LENGTH_BITS | LENGTH_MASK
        inside = keys[bisect.bisect_left(keys, first):bisect.bisect_right(keys, last)]
        return self.covering(network) + [key_network(key) for key in inside]

    @classmethod
    def of_families(cls, v4: NetworkIndex, v6: NetworkIndex) -> NetworkIndex:
        """One index over both families from an index per family, sharing their tables (no
        member is indexed again)."""
        both = cls(())
        both._keys = {4: v4._keys[4], 6: v6._keys[6]}
        both._lengths = {4: v4._lengths[4], 6: v6._lengths[6]}
        return both


def covers(outer: Network, inner: Network) -> bool:
    """True when every address of `inner` is in `outer` (same family only)."""
    return outer.version == inner.version and inner.subnet_of(outer)  # type: ignore[arg-type]  # same family, checked first


def any_network(version: int) -> Network:
    return ANY_V4 if version == 4 else ANY_V6
