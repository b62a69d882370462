"""The machine's own addresses and gateways, and the lab slots that would collide with them.

A lab adds to the root namespace its uplink (a /29 and a /64) and routes to its server subnets.
The documentation networks are also what test machines and CI runners are often numbered from
(one runner's eth0 is 192.0.2.2/24, gateway 192.0.2.1), so a slot whose subnets hold one of the
machine's addresses or gateways would steal that traffic: such a slot is refused."""
from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .commands import run_command
from .topology import SERVER, LabTopology

# Every lab's root uplink (hl<slot>up): made by a lab, so never a collision in itself.
LAB_UPLINK = re.compile(r"hl[0-9]+up")  # fullmatch


@dataclass(frozen=True)
class MachineAddress:
    """An address configured on, or a gateway reached through, an interface no lab made."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    interface: str
    what: str  # "configured as 192.0.2.2/24" or "gateway of the default route"


def machine_addresses() -> list[MachineAddress]:
    """Addresses and route gateways of the root namespace outside the labs' uplinks."""
    found = []
    for entry in json.loads(run_command(["ip", "-j", "address", "show"]).stdout or "[]"):
        for info in entry.get("addr_info", []):
            if "local" in info:
                found.append(MachineAddress(ipaddress.ip_address(info["local"]), entry["ifname"],
                                            f"configured as {info['local']}/{info['prefixlen']}"))
    for family in ("-4", "-6"):
        for route in json.loads(run_command(["ip", "-j", family, "route", "show"]).stdout or "[]"):
            if "gateway" in route and "dev" in route:
                found.append(MachineAddress(ipaddress.ip_address(route["gateway"]), route["dev"],
                                            f"gateway of the {route['dst']} route"))
    return [found_address for found_address in found if not LAB_UPLINK.fullmatch(found_address.interface)]


def subnets_in_root(lab: LabTopology) -> dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """What the lab in `lab.slot` puts in the root namespace: {description: subnet}."""
    uplink, server = lab.segments["uplink"].edge, lab.endpoint(SERVER)
    return {"deployer uplink": uplink.ipv4.network, "deployer uplink (IPv6)": uplink.ipv6.network,
            "server subnet": server.ipv4.network, "server subnet (IPv6)": server.ipv6.network}


def machine_conflicts(name: str, state_dir: str | Path) -> Callable[[int], list[str]]:
    """conflicts(slot) for claim_slot/check_slot: why this machine can't give lab `name` a slot."""
    machine = machine_addresses()
    return lambda candidate: slot_conflicts(LabTopology(name, candidate, state_dir), machine)


def slot_conflicts(lab: LabTopology, machine: list[MachineAddress]) -> list[str]:
    """Why `lab.slot` can't be used next to `machine`'s addresses; empty when it can."""
    return [f"{subnet} ({description}) holds {found.address}, {found.what} on {found.interface}"
            for description, subnet in subnets_in_root(lab).items()
            for found in machine if found.address.version == subnet.version and found.address in subnet]
