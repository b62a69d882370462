"""Exposure from outside: which (address, protocol, port) answer from a given namespace.

`probe` makes real connections (TCP connect; UDP send-and-wait-for-the-echo; ICMP echo), in parallel
through a bounded thread pool; `nmap_scan` runs nmap's SYN/NULL/FIN/Xmas scans the way an
attacker would. Both refuse any target outside the documentation networks, and from this
machine's own namespace one only its default route leads to (a lab that is down).
States: "open" (handshake / reply), "closed" (RST / ICMP port unreachable), "filtered" (no
answer within the timeout, or another ICMP error)."""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from hardened_lightsail.documentation_routes import UnroutedDocumentationAddress, require_own_route

from .commands import run_command
from .docnet import require_documentation_address
from .errors import LabError

DEFAULT_TIMEOUT_SECONDS = 1.5
DEFAULT_WORKERS = 16  # enough for a lab's port table; bounded so 2 CI cores aren't swamped
NMAP_SCANS = ("sS", "sN", "sF", "sX", "sU")
PROTOCOLS = ("tcp", "udp", "icmp")


class Target(NamedTuple):
    address: str
    protocol: str  # "tcp", "udp" or "icmp" (echo request; port ignored, use 0)
    port: int


@dataclass(frozen=True)
class ProbeResult:
    address: str
    protocol: str
    port: int
    state: str  # open | closed | filtered
    detail: str  # how it was decided: connected, refused, no answer, EHOSTUNREACH, ...
    seconds: float

    @property
    def target(self) -> Target:
        return Target(self.address, self.protocol, self.port)


def targets(addresses: Iterable[str], tcp_ports: Iterable[int] = (), udp_ports: Iterable[int] = (),
            icmp_echo: bool = False) -> list[Target]:
    """Every port on every address (and an echo request each): the shape of an exposure table."""
    addresses, tcp_ports, udp_ports = list(addresses), list(tcp_ports), list(udp_ports)
    icmp = [0] if icmp_echo else []
    return [Target(address, protocol, port) for address in addresses
            for protocol, ports in (("tcp", tcp_ports), ("udp", udp_ports), ("icmp", icmp)) for port in ports]


def _in_namespace(namespace: str | None, argv: Sequence[str]) -> list[str]:
    return list(argv) if namespace is None else ["ip", "netns", "exec", namespace, *argv]


def _require_own_route(namespace: str | None, addresses: Iterable[str]) -> None:
    """From the root namespace, refuse (LabError) before anything starts when one address has
    only the default route; a lab namespace's default route leads into its lab. The one check of
    a probe batch: the worker's sockets (tcp, udp, icmp) rely on it."""
    if namespace is None:
        try:
            require_own_route(addresses)
        except UnroutedDocumentationAddress as refusal:
            raise LabError(str(refusal)) from None


def probe(namespace: str | None, probe_targets: Iterable[Sequence], *,
          timeout: float = DEFAULT_TIMEOUT_SECONDS, workers: int = DEFAULT_WORKERS) -> list[ProbeResult]:
    """Probe each target from `namespace` (None: the root namespace); results in target order."""
    checked = []
    for address, protocol, port in probe_targets:
        require_documentation_address(address)
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        checked.append([address, protocol, int(port)])
    if not checked:
        return []
    _require_own_route(namespace, (address for address, _, _ in checked))
    request = json.dumps({"targets": checked, "timeout": timeout, "workers": workers})
    package_parent = str(Path(__file__).resolve().parent.parent)
    argv = _in_namespace(namespace, [sys.executable, "-P", "-m", "lab.probe_worker"])
    # Waves of `workers` probes, each at most `timeout` long, plus interpreter start-up.
    budget = timeout * (len(checked) // max(1, workers) + 1) + 30
    result = run_command(argv, input=request, timeout=budget, what=f"probe from {namespace or 'the root namespace'}",
                         env={"PYTHONPATH": package_parent, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return [ProbeResult(**row) for row in json.loads(result.stdout)]


def states(results: Iterable[ProbeResult]) -> dict[Target, str]:
    return {result.target: result.state for result in results}


def format_table(results: Iterable[ProbeResult]) -> str:
    """A plain table for failure messages and people: address, proto/port, state, why."""
    rows = [f"{r.address:<24} {r.protocol}/{r.port:<6} {r.state:<9} {r.detail}" for r in results]
    return "\n".join(rows)


def nmap_argv(target: str, ports: Iterable[int], scan: str = "sS", extra_args: Sequence[str] = ()) -> list[str]:
    require_documentation_address(target)
    if scan not in NMAP_SCANS:
        raise ValueError(f"scan {scan!r} is not one of {', '.join(NMAP_SCANS)}")
    port_list = ",".join(str(int(port)) for port in ports)
    family = ["-6"] if ":" in target else []
    return ["nmap", "-Pn", "-n", "--max-retries", "1", "--host-timeout", "60s", f"-{scan}",
            "-p", port_list, *family, *extra_args, "-oX", "-", target]


def parse_nmap_xml(xml_text: str, ports: Iterable[int]) -> dict[int, str]:
    """Port -> nmap state. Ports nmap folded into <extraports> get that group's state."""
    root = ElementTree.fromstring(xml_text)
    host = root.find("host")
    if host is None:
        raise LabError("nmap reported no host (it timed out or the target is unknown)")
    found = {int(port.get("portid")): port.find("state").get("state") for port in host.iter("port")}
    folded = {extra.get("state") for extra in host.iter("extraports")}
    fallback = folded.pop() if len(folded) == 1 else "unknown"
    return {int(port): found.get(int(port), fallback) for port in ports}


def nmap_scan(namespace: str | None, target: str, ports: Iterable[int], *, scan: str = "sS",
              extra_args: Sequence[str] = (), timeout: float = 120) -> dict[int, str]:
    """Run nmap from `namespace` (None: root namespace) against one address; port -> state
    ("open", "closed", "filtered", "open|filtered", ...)."""
    ports = list(ports)
    argv = _in_namespace(namespace, nmap_argv(target, ports, scan, extra_args))
    _require_own_route(namespace, [target])
    result = run_command(argv, timeout=timeout, what=f"nmap -{scan} {target}")
    return parse_nmap_xml(result.stdout, ports)
