"""The documentation networks: the only addresses the lab may use or send probes to.

RFC 5737 (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) and RFC 3849 (2001:db8::/32) are
never routed on the internet, so a lab packet that leaks is still harmless."""
from __future__ import annotations

import ipaddress

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


def require_documentation_address(address: str) -> str:
    """Return `address` unchanged, or raise ValueError: the lab never targets a real address.

    A real check, not `assert`, so that `python -O` can't switch the safety off."""
    if not is_documentation_address(address):
        raise ValueError(
            f"{address!r} is not a documentation address (192.0.2.0/24, 198.51.100.0/24, "
            "203.0.113.0/24, 2001:db8::/32): the lab only sends traffic to those"
        )
    return address
