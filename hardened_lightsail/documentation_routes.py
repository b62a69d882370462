"""Documentation addresses are reached through a route of their own, never the default route.

RFC 5737 (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) and RFC 3849 (2001:db8::/32) name the
lab's servers and the tests' hosts; no real server has one. While a lab is down its routes are
gone, and a packet to one of its addresses would follow this machine's default route out to the
real network (a `refresh` or `up` after a hand `hl-lab down`, a readiness wait that retries for
minutes, a verification scan after the lab vanished mid-`up`). Every outward probe of the
deployer (ssh, ssh-keyscan, socket probes, nmap) refuses such an address before sending anything.

Only in this machine's own network namespace: there the default route leads off the machine. A
lab namespace (an admin client, a vantage) has a default route too, but it leads into its lab's
edge, which is how those reach the lab's servers."""
from __future__ import annotations

import functools
import ipaddress
import json
import subprocess
from collections.abc import Iterable

DOCUMENTATION_NETWORKS = tuple(
    ipaddress.ip_network(cidr)
    for cidr in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


def is_documentation_address(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed.version == net.version and parsed in net for net in DOCUMENTATION_NETWORKS)


class UnroutedDocumentationAddress(Exception):
    """A probe refused before it sent anything: its message (unrouted_documentation_address) says
    which address, why, and how to bring its lab back."""


def require_documentation_address(address: str) -> str:
    """Return `address` unchanged, or raise ValueError: the lab never targets a real address.

    A real check, not `assert`, so that `python -O` can't switch the safety off."""
    if not is_documentation_address(address):
        raise ValueError(
            f"{address!r} is not a documentation address (192.0.2.0/24, 198.51.100.0/24, "
            "203.0.113.0/24, 2001:db8::/32): the lab only sends traffic to those"
        )
    return address


@functools.cache  # a process stays in its namespace; every SSH connection of a step asks
def namespace_name() -> str:
    """The name `ip netns` knows this process's network namespace by: a lab's, or "" for this
    machine's own (init's namespace is not readable everywhere, even as root)."""
    shown = subprocess.run(["ip", "netns", "identify"], capture_output=True, text=True, timeout=10,
                           stdin=subprocess.DEVNULL)
    return shown.stdout.strip()


def unrouted_documentation_address(address: str) -> str | None:
    """Why nothing may be sent to `address` from this network namespace, or None when it may:
    any address that is not a documentation one, or one with a route other than the default."""
    if not is_documentation_address(address):
        return None
    family = f"-{ipaddress.ip_address(address).version}"
    try:
        if namespace_name():  # a lab's namespace: its default route leads into the lab's edge
            return None
        # `match` lists every route of the main table whose prefix holds the address, default included.
        shown = subprocess.run(["ip", "-j", family, "route", "show", "match", address], capture_output=True,
                               text=True, timeout=10, stdin=subprocess.DEVNULL)
        routes = json.loads(shown.stdout or "[]") if shown.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        routes = None
    if routes is None:  # no iproute2 here (not Linux): no lab either, nothing to judge
        return None
    if any(route.get("dst") != "default" for route in routes):
        return None
    return (f"{address} is a documentation address and no route of its own leads there (only this machine's "
            "default route would): its lab is not up. Nothing was sent; bring the lab back with `pulumi up` "
            "(or scripts/lab-up) and try again")


def require_own_route(addresses: Iterable[str]) -> None:
    """Raise UnroutedDocumentationAddress for the first of `addresses` nothing may be sent to
    from here: a probe of several targets judges them all before it starts, so none is sent."""
    for address in dict.fromkeys(addresses):
        refusal = unrouted_documentation_address(address)
        if refusal:
            raise UnroutedDocumentationAddress(refusal)
