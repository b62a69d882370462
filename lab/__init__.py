"""The local lab: network namespaces that stand in for the internet, the Lightsail cloud
firewall and the server, on documentation addresses only (see lab/README.md).

    from lab import lab_up, lab_down
    lab = lab_up("demo", "/tmp/demo-lab")          # LabTopology
    lab.run("internet", ["curl", "-s", f"http://{lab.server_ipv4}/"])
    lab.load_cloud_layer("cloud-ports.json")       # re-point the edge at a changed policy
    lab_down("demo", "/tmp/demo-lab")

The names below load on first use: the Pulumi program imports a few lab modules (the stack's lab
identity, layout and slot check) on every `up` before its first resource is registered, and
needs neither the lab's lifecycle nor its network, services and probes.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cloud_layer import load_cloud_layer, read_port_infos, render_edge_rules
    from .errors import LabError
    from .lifecycle import describe_running, lab_down, lab_for, lab_status, lab_up
    from .topology import ADMIN_CIDRS, LabTopology

# name -> the module of this package that defines it
_HOMES = {"load_cloud_layer": "cloud_layer", "read_port_infos": "cloud_layer", "render_edge_rules": "cloud_layer",
          "LabError": "errors", "describe_running": "lifecycle", "lab_down": "lifecycle", "lab_for": "lifecycle",
          "lab_status": "lifecycle", "lab_up": "lifecycle", "ADMIN_CIDRS": "topology", "LabTopology": "topology"}

__all__ = [
    "ADMIN_CIDRS", "LabError", "LabTopology", "describe_running", "lab_down", "lab_for",
    "lab_status", "lab_up", "load_cloud_layer", "read_port_infos", "render_edge_rules",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
