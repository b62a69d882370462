"""The outside half of verification: probe the server's addresses from each vantage point (this
deployer, and a host outside the admin CIDRs: the lab's internet namespace or `verify.vantage`)
and compare what answers with what the rendered rules allow from the address each one sends from.

A denied port must be silent (a RST or ICMP unreachable means packets got through); an allowed
port that something listens on must answer. A quick check probes the SSH port, the policy's
ports, every listening port and a sample of favourites; a full one scans every TCP port (nmap)
and the common UDP services, and judges each port against the rules."""
from __future__ import annotations

import bisect
import ipaddress
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

from .documentation_routes import UnroutedDocumentationAddress, require_own_route
from .evaluate import cloud_allows, host_allows
from .exposure import port_boundaries
from .networks import Network, parse_cidr
from .policy import ALL_TCP_PORTS, FirewallPolicy
from .port_scan import COMMON_UDP_PORTS, Scan, ScanError, Vantage
from .reachability import CLOSED, FILTERED, OPEN, local_source_address, measure
from .release import Release
from .scan_share import ScanShare

SAMPLE_CLOSED_PORTS = (21, 23, 25, 53, 110, 139, 445, 3306, 5432, 6379, 8080, 8443, 9200, 27017)
SAMPLE_CLOSED_UDP_PORTS = (53, 123, 161, 1900, 5353, 11211)  # amplification favourites
FULL, QUICK = "full", "quick"
MISMATCH = "MISMATCH"
THIS_DEPLOYER = Vantage("this deployer")


@dataclass(frozen=True)
class HostReport:
    """What `hlfw verify` said, as far as the outside check needs it."""

    client: str | None  # the address the host saw this deployer connect from (NAT shows here)
    listening: dict[str, set[int]]  # {"tcp": ports, "udp": ports} bound beyond loopback


@dataclass(frozen=True)
class View:
    """One vantage point and how thoroughly it probes."""

    vantage: Vantage
    scan: str = QUICK  # FULL or QUICK
    outsider: bool = False  # must send from outside the admin CIDRs ("anyone else" is its view)


@dataclass
class OutsideResult:
    table: str  # a section per vantage, scan times, then the `verified: ...` line when all matched
    mismatches: int  # ports that differ, plus one per vantage that measured nothing
    mismatch_lines: list[str] = field(default_factory=list)  # the header and rows that differ
    unmeasured: int = 0  # vantages that measured nothing (their line in mismatch_lines says why)

    @property
    def failure(self) -> str:
        """What went wrong, for the first line of the error (mismatch_lines then show where)."""
        differing = self.mismatches - self.unmeasured
        return "; ".join([*([f"exposure differs from the policy on {differing} port(s)"] if differing else []),
                          *([f"{self.unmeasured} vantage(s) measured nothing"] if self.unmeasured else [])])


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


class _Policy:
    """What the rendered rules (both layers) allow one source, per port; every port between two
    rule boundaries meets the same rules, so a full scan asks once per stretch, not per port."""

    def __init__(self, release: Release, source: str):
        self.release, self.source = release, parse_cidr(source)
        self.version = self.source.version
        cuts = {1, 65536} | port_boundaries(release.rulesets[0 if self.version == 4 else 1])
        cuts |= {p for info in release.port_infos if info["protocol"] in ("tcp", "udp")
                 for p in (info["fromPort"], info["toPort"] + 1)}
        self.starts = sorted(p for p in cuts if 1 <= p <= 65536)
        self.allowed = lru_cache(maxsize=None)(self._allowed)

    def _allowed(self, protocol: str, port: int) -> bool:
        return (host_allows(self.release.rulesets[0 if self.version == 4 else 1], protocol, port, self.source)
                and cloud_allows(self.release.port_infos, protocol, port, self.source))

    def allows(self, protocol: str, port: int) -> bool:
        return self.allowed(protocol, self.starts[bisect.bisect_right(self.starts, port) - 1])


def _source(view: View, address: str, report: HostReport) -> str:
    """The address the server sees this vantage's probes come from."""
    if view.vantage is THIS_DEPLOYER:
        client = report.client
        if client and ipaddress.ip_address(client).version == ipaddress.ip_address(address).version:
            return client  # behind NAT the server sees another address than ours
        return local_source_address(address)
    return view.vantage.source_address(address)


def _scan_ports(view: View, listed: dict[str, list[int]], allowed: _Policy, share: ScanShare | None
                ) -> tuple[list[int], list[int]]:
    """A full scan: every TCP port, or this server's share of the fleet's (scan_share.py) plus
    both ends of every stretch the rules treat alike and the ports the quick check lists."""
    if view.scan != FULL:
        return listed["tcp"], listed["udp"]
    udp = sorted({*listed["udp"], *COMMON_UDP_PORTS})
    if share is None:
        return list(ALL_TCP_PORTS), udp
    edges = {port for start in allowed.starts for port in (start - 1, start)}
    ports = {*share.ports, *listed["tcp"], *edges}
    return sorted(port for port in ports if port in ALL_TCP_PORTS), udp


def _measure(view: View, address: str, tcp: list[int], udp: list[int]) -> Scan:
    """States of every port asked for. The deployer's quick check connects from here; anything
    else is an nmap scan at the vantage."""
    if view.vantage is THIS_DEPLOYER and view.scan == QUICK:
        started = time.monotonic()
        states = _connect_probes(address, tcp, udp)
        return Scan(address, states, time.monotonic() - started)
    return view.vantage.scan(address, tcp, udp)


def _connect_probes(address: str, tcp: list[int], udp: list[int], timeout: float = 2.0) -> dict[tuple[str, int], str]:
    """(protocol, port) -> state, connecting from this machine (reachability.measure)."""
    return {(protocol, port): state for protocol, ports in (("tcp", tcp), ("udp", udp))
            for (_, port), state in measure(protocol, [(address, p) for p in ports], timeout=timeout).items()}


def _confirm(view: View, address: str, suspects: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """A full scan runs fast and may miss an answer: each port that disagrees is asked again,
    slowly, before it counts as a mismatch."""
    tcp = [port for protocol, port in suspects if protocol == "tcp"]
    udp = [port for protocol, port in suspects if protocol == "udp"]
    if view.vantage is THIS_DEPLOYER:
        return _connect_probes(address, tcp, udp, timeout=3)
    return view.vantage.scan(address, tcp, udp, slow=True).states


@dataclass
class _Section:
    rows: list[tuple[str, ...]] = field(default_factory=list)
    times: list[str] = field(default_factory=list)
    probes: int = 0
    mismatches: int = 0


def _verify_view(view: View, release: Release, policy: FirewallPolicy, addresses: list[str], report: HostReport,
                 admin_cidrs: Sequence[Network], share: ScanShare | None) -> tuple[_Section, str]:
    """Every address from one vantage, the addresses scanned side by side."""
    if view.vantage.here:  # every address judged before the first probe of any of them leaves
        require_own_route(addresses)
    listed = ports_to_probe(release, policy, report)
    with ThreadPoolExecutor(max_workers=len(addresses) or 1) as pool:
        results = list(pool.map(lambda address: _verify_address(view, release, address, report, admin_cidrs, listed,
                                                                share), addresses))
    section = _Section()
    for part, _ in results:
        section.rows += part.rows
        section.times += part.times
        section.probes += part.probes
        section.mismatches += part.mismatches
    return section, ", ".join(dict.fromkeys(source for _, source in results))


def _verify_address(view: View, release: Release, address: str, report: HostReport, admin_cidrs: Sequence[Network],
                    listed: dict[str, list[int]], share: ScanShare | None) -> tuple[_Section, str]:
    section = _Section()
    source = _source(view, address, report)
    if view.outsider and any(ipaddress.ip_address(source) in network for network in admin_cidrs):
        raise ScanError(f"{view.vantage.name} reaches {address} from {source}, inside firewall.adminCidrs: "
                        "it sees what an admin sees, not what anyone else does; use a host outside them")
    allowed = _Policy(release, source)
    tcp, udp = _scan_ports(view, listed, allowed, share)
    scan = _measure(view, address, tcp, udp)
    states = dict(scan.states)
    judged = {key: (allowed.allows(*key), key[1] in report.listening[key[0]]) for key in states}
    suspects = [key for key, state in states.items() if not agrees_with_policy(key[0], *judged[key], state)]
    if suspects and view.scan == FULL:
        states.update(_confirm(view, address, suspects))
    shown = [(protocol, port) for protocol in ("tcp", "udp") for port in listed[protocol] if (protocol, port) in states]
    shown += sorted(key for key in suspects if key not in shown)
    for key in shown:
        protocol, port = key
        is_allowed, is_listening = judged[key]
        ok = agrees_with_policy(protocol, is_allowed, is_listening, states[key])
        section.mismatches += not ok
        section.rows.append((address, f"{protocol}/{port}", "yes" if is_listening else "no",
                             "allowed" if is_allowed else "denied", states[key], "ok" if ok else MISMATCH))
    if view.scan == FULL:
        section.rows += _summary_rows(address, states, judged, set(shown))
    section.probes = len(states)
    udp_note = f" + {len(udp)} udp" if any(k[0] == "udp" for k in scan.states) else \
        " (udp not measured: nmap's UDP scan needs root there)" if udp else ""
    shared = f" ({share.describe()})" if share and view.scan == FULL else ""
    section.times.append(f"{address}: {len(tcp)} tcp{shared}{udp_note} port(s) in {scan.seconds:.1f} s")
    return section, source


def _summary_rows(address: str, states: dict[tuple[str, int], str], judged: dict[tuple[str, int], tuple[bool, bool]],
                  shown: set[tuple[str, int]]) -> list[tuple[str, ...]]:
    """One row per protocol for every scanned port not shown above: how many answered how."""
    rows: list[tuple[str, ...]] = []
    for protocol in ("tcp", "udp"):
        rest = [key for key in states if key[0] == protocol and key not in shown]
        if not rest:
            continue
        counts = {state: sum(1 for key in rest if states[key] == state) for state in (OPEN, CLOSED, FILTERED)}
        allowed = sum(1 for key in rest if judged[key][0])
        measured = ", ".join(f"{count} {state}" for state, count in counts.items() if count)
        rows.append((address, f"{protocol}: {len(rest)} more", "",
                     f"{allowed} allowed" if allowed else "all denied", measured, "ok"))
    return rows


def verify_outside(release: Release, policy: FirewallPolicy, addresses: list[str], report: HostReport, views: list[View],
                   admin_cidrs: Sequence[Network] = (), share: ScanShare | None = None) -> OutsideResult:
    """Probe every address from every vantage and judge each answer against both layers.
    `share`: this server's part of its fleet's full scans (None: all of it)."""
    lines, mismatch_lines, probes, mismatches, unmeasured = [], [], 0, 0, 0

    def verify(view: View) -> tuple[_Section, str] | ScanError | UnroutedDocumentationAddress:
        try:
            return _verify_view(view, release, policy, addresses, report, admin_cidrs, share)
        except (ScanError, UnroutedDocumentationAddress) as error:
            return error

    with ThreadPoolExecutor(max_workers=len(views) or 1) as pool:  # the vantages probe side by side
        results = list(pool.map(verify, views))
    for view, result in zip(views, results, strict=True):
        if isinstance(result, Exception):  # this vantage measured nothing: that fails the check
            lines.append(f"from {view.vantage.name}: {result}")
            mismatch_lines.append(lines[-1])
            mismatches += 1
            unmeasured += 1
            continue
        section, sources = result
        header = ("address", "port", "listening", f"policy for {sources}", "measured", "")
        rows = [header, *section.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        text = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
        title = f"from {view.vantage.name} ({sources}), {view.scan} scan:"
        lines += [title, *text, f"{view.scan} scan from {view.vantage.name}: " + "; ".join(section.times)]
        if section.mismatches:
            mismatch_lines += [title, text[0], *(line for line in text[1:] if line.endswith(MISMATCH))]
        probes += section.probes
        mismatches += section.mismatches
    if not mismatches:
        lines.append(f"verified: {probes} probes on {len(addresses)} address(es) match the policy")
    return OutsideResult("\n".join(lines), mismatches, mismatch_lines, unmeasured)
