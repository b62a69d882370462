"""The documentation networks: the only addresses the lab may use or send probes to.

RFC 5737 (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) and RFC 3849 (2001:db8::/32) are
never routed on the internet, so a lab packet that leaks is still harmless. (The checks live in
hardened_lightsail/documentation_routes.py, which the deployer's steps import without the lab.)"""
from __future__ import annotations

from hardened_lightsail.documentation_routes import (
    DOCUMENTATION_NETWORKS,
    is_documentation_address,
    require_documentation_address,
)

__all__ = ["DOCUMENTATION_NETWORKS", "is_documentation_address", "require_documentation_address"]
