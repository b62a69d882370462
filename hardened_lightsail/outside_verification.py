"""The outside half of verification: probe the server's addresses from here (TCP and UDP, IPv4
and IPv6) and compare what answers with what the rendered rules allow from this address.

A denied port must be silent (a RST or ICMP unreachable means packets got through); an allowed
port that something listens on must answer."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .evaluate import cloud_allows, host_allows
from .policy import FirewallPolicy
from .reachability import CLOSED, FILTERED, OPEN, local_source_address, measure
from .release import Release

SAMPLE_CLOSED_PORTS = (21, 23, 25, 53, 110, 139, 445, 3306, 5432, 6379, 8080, 8443, 9200, 27017)
SAMPLE_CLOSED_UDP_PORTS = (53, 123, 161, 1900, 5353, 11211)  # amplification favourites


@dataclass(frozen=True)
class HostReport:
    """What `hlfw verify` said, as far as the outside check needs it."""

    client: str | None  # the address the host saw this deployer connect from (NAT shows here)
    listening: dict[str, set[int]]  # {"tcp": ports, "udp": ports} bound beyond loopback


@dataclass(frozen=True)
class OutsideResult:
    table: str  # one row per probe, then the `verified: ...` line when everything matched
    mismatches: int


def parse_host_report(text: str) -> HostReport:
    """The client line and the listening sockets from `hlfw verify` output (loopback left out)."""
    listening: dict[str, set[int]] = {"tcp": set(), "udp": set()}
    client, in_listening = None, False
    for line in text.splitlines():
        words = line.split()
        if line.startswith("client:") and len(words) > 1:
            client = words[1]
        elif line.strip() == "listening:":
            in_listening = True
        elif in_listening and len(words) == 3 and words[0] in listening and words[2].isdigit():
            if not words[1].startswith("127.") and words[1] != "::1":
                listening[words[0]].add(int(words[2]))
        elif in_listening and words and not line.startswith((" ", "\t")) and words[0] not in ("tcp", "udp"):
            in_listening = False
    return HostReport(client, listening)


def agrees_with_policy(protocol: str, allowed: bool, listening: bool, state: str) -> bool:
    """Denied must be silent; allowed and listening must answer (TCP) or at least not be refused
    (UDP services may stay silent); allowed but not listening may be refused."""
    if not allowed:
        return state == FILTERED
    if protocol == "tcp":
        return state == OPEN if listening else state in (OPEN, CLOSED)
    return state in (OPEN, FILTERED) if listening else state in (CLOSED, FILTERED)


def ports_to_probe(release: Release, policy: FirewallPolicy, report: HostReport) -> dict[str, list[int]]:
    """Every listening port, the SSH port, every policy port (range ends) and a sample of others."""
    ports = {"tcp": {policy.ssh_port, *SAMPLE_CLOSED_PORTS}, "udp": set(SAMPLE_CLOSED_UDP_PORTS)}
    for protocol in ports:
        ports[protocol] |= report.listening[protocol]
        ports[protocol] |= {p for s in policy.services if s.protocol == protocol for p in (s.ports.first, s.ports.last)}
    return {protocol: sorted(numbers) for protocol, numbers in ports.items()}


def verify_from_here(release: Release, policy: FirewallPolicy, addresses: list[str], report: HostReport) -> OutsideResult:
    """Probe every address and judge each answer against both layers of the release."""
    ports = ports_to_probe(release, policy, report)
    measured = {}
    for protocol in ("tcp", "udp"):
        targets = [(address, port) for address in addresses for port in ports[protocol]]
        measured.update({(protocol, *target): state for target, state in measure(protocol, targets).items()})
    rows, mismatches = [], 0
    client = report.client
    for (protocol, address, port), state in measured.items():
        version = ipaddress.ip_address(address).version
        source = client if client and ipaddress.ip_address(client).version == version else local_source_address(address)
        network = ipaddress.ip_network(source)
        allowed = (host_allows(release.rulesets[0 if version == 4 else 1], protocol, port, network)
                   and cloud_allows(release.port_infos, protocol, port, network))
        is_listening = port in report.listening[protocol]
        ok = agrees_with_policy(protocol, allowed, is_listening, state)
        mismatches += not ok
        rows.append((address, f"{protocol}/{port}", "yes" if is_listening else "no",
                     "allowed" if allowed else "denied", state, "ok" if ok else "MISMATCH"))
    header = ("address", "port", "listening", f"policy for {client or 'this deployer'}", "measured", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    if not mismatches:
        lines.append(f"verified: {len(rows)} probes on {len(addresses)} address(es) match the policy")
    return OutsideResult("\n".join(lines), mismatches)
