"""The local lab: network namespaces that stand in for the internet, the Lightsail cloud
firewall and the server, on documentation addresses only (see lab/README.md).

    from lab import lab_up, lab_down
    lab = lab_up("demo", "/tmp/demo-lab")          # LabTopology
    lab.run("internet", ["curl", "-s", f"http://{lab.server_ipv4}/"])
    lab.load_cloud_layer("cloud-ports.json")       # re-point the edge at a changed policy
    lab_down("demo", "/tmp/demo-lab")
"""
from .cloud_layer import load_cloud_layer, read_port_infos, render_edge_rules
from .errors import LabError
from .lifecycle import describe_running, lab_down, lab_for, lab_status, lab_up
from .topology import ADMIN_CIDRS, LabTopology

__all__ = [
    "ADMIN_CIDRS", "LabError", "LabTopology", "describe_running", "lab_down", "lab_for",
    "lab_status", "lab_up", "load_cloud_layer", "read_port_infos", "render_edge_rules",
]
