"""CIDR handling shared by validation, both renderers and the analysis.

One place parses and orders networks so that every layer sees the same addresses in the same
order (stable order is what keeps an unchanged policy from showing a diff)."""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from .user_text import show

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ANY_V4 = ipaddress.IPv4Network("0.0.0.0/0")
ANY_V6 = ipaddress.IPv6Network("::/0")


class CidrError(ValueError):
    """A CIDR string that is not a network; the message says how to fix it."""


# Digits, hex digits, dots and colons, and a prefix length: all of it (fullmatch). ipaddress alone
# would also take an IPv6 zone ("fe80::1%eth0"), whose text may hold anything but "%" and "/"
# (spaces, newlines, "$(...)") and would be written into the rules as it is.
CIDR_TEXT = re.compile(r"[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?")


def parse_cidr(text: str) -> Network:
    """Parse one CIDR strictly: host bits must be zero, so a typo can't silently widen a rule."""
    example = "(e.g. \"203.0.113.7/32\" or \"2001:db8::/64\")"
    if not isinstance(text, str):
        raise CidrError(f"{show(text)} is not a CIDR string (e.g. \"203.0.113.7/32\")")
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
    """(IPv4 networks, IPv6 networks), each sorted and de-duplicated."""
    v4: list[Network] = sorted({n for n in networks if n.version == 4})
    v6: list[Network] = sorted({n for n in networks if n.version == 6})
    return v4, v6


def covers(outer: Network, inner: Network) -> bool:
    """True when every address of `inner` is in `outer` (same family only)."""
    return outer.version == inner.version and inner.subnet_of(outer)  # type: ignore[arg-type]  # same family, checked first


def any_network(version: int) -> Network:
    return ANY_V4 if version == 4 else ANY_V6
