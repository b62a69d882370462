"""The whole TCP port space of one address (and the common UDP services), scanned with nmap from
a vantage point: this machine, one of its network namespaces (the lab's internet), or a host
reached over SSH with its pinned key. Deployer side.

nmap folds the ports of the most common state into <extraports>; nmap 7.90+ names them
(<extrareasons ports="1-21,23-79">), so every scanned port gets its own state."""
from __future__ import annotations

import os
import shlex
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

from .documentation_routes import require_own_route
from .reachability import CLOSED, FILTERED, OPEN
from .ssh_session import SshEndpoint, environment_without_secrets, run_remote

# UDP services that are commonly left listening and abused (amplification, remote access, VPNs).
COMMON_UDP_PORTS = (53, 67, 69, 111, 123, 137, 161, 500, 514, 1194, 1900, 4500, 5353, 11211, 51820)
# 20,000 packets/s scan a lab address (65,535 ports, one retry for the silent ones) in about 7 s;
# the maximum keeps a scan polite and bounded whatever the network answers.
MIN_RATE, MAX_RATE = 20_000, 30_000
HOST_TIMEOUT_SECONDS = 60  # nmap gives up on an address after this long: a scan always ends
# nmap reads its whole services table (nmap-services, ~27,000 lines) at every start, to name the
# ports in its report: ~45 ms of CPU of a ~60 ms start, four starts per server and release (two
# vantages, two families), and the names are never read here (only port states). This data
# directory holds an empty nmap-services; every other data file (nmap-payloads, the UDP probes'
# payloads, ...) nmap still finds in its own directory, so what is sent and measured is the same.
# Relative to the program's directory, like the releases (only for scans started on this machine).
QUIET_DATA_DIR = Path(".build") / "nmap"
NMAP_STATES = {"open": OPEN, "closed": CLOSED, "filtered": FILTERED,
               # UDP: no answer may be a quiet service or a drop; both are "filtered" to us.
               "open|filtered": FILTERED, "closed|filtered": FILTERED, "unfiltered": CLOSED}


class ScanError(Exception):
    """The scan could not run or did not finish; the message says where and why."""


@dataclass(frozen=True)
class Scan:
    """What one address answered on every scanned port, and how long it took."""

    address: str
    states: dict[tuple[str, int], str]  # (protocol, port) -> open | closed | filtered
    seconds: float


def nmap_arguments(address: str, tcp_ports: Sequence[int], udp_ports: Sequence[int], slow: bool = False) -> list[str]:
    """nmap's options after the scan type: no DNS, no ping, bounded in rate, retries and time.
    `slow`: nmap's own pace and three retries, to ask a few ports again."""
    ports = [*(["T:" + _ranges(tcp_ports)] if tcp_ports else []), *(["U:" + _ranges(udp_ports)] if udp_ports else [])]
    pace = ["--max-retries", "3"] if slow else ["--max-retries", "1", "--min-rate", str(MIN_RATE)]
    return ["-n", "-Pn", *pace, "--max-rate", str(MAX_RATE),
            "--host-timeout", f"{HOST_TIMEOUT_SECONDS}s", *(["-sU"] if udp_ports else []),
            "-p", ",".join(ports), "-oX", "-", *(["-6"] if ":" in address else []), address]


def _ranges(ports: Sequence[int]) -> str:
    """[1, 2, 3, 7] -> "1-3,7": a full scan stays one short argument."""
    numbers, parts = sorted(set(ports)), []
    start = previous = None
    for port in numbers + [None]:
        if port is not None and previous is not None and port == previous + 1:
            previous = port
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = port
    return ",".join(parts)


def _expand(text: str) -> list[int]:
    ports: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first:
            ports.extend(range(int(first), int(last or first) + 1))
    return ports


def parse_scan(xml_text: str, address: str, tcp_ports: Sequence[int], udp_ports: Sequence[int]
               ) -> dict[tuple[str, int], str]:
    """(protocol, port) -> state for every scanned port. Raises ScanError when nmap did not scan
    the address to the end (it timed out, or the output is not a finished scan)."""
    try:
        root = ElementTree.fromstring(xml_text)
    except ElementTree.ParseError as error:
        raise ScanError(f"nmap's output for {address} is not XML ({error})") from None
    host = root.find("host")
    if host is None or host.find("ports") is None:
        raise ScanError(f"nmap did not finish scanning {address} within {HOST_TIMEOUT_SECONDS} s")
    states: dict[tuple[str, int], str] = {}
    folded: list[str] = []
    for group in host.iter("extraports"):
        state = NMAP_STATES.get(group.get("state", ""), FILTERED)
        named = [reason for reason in group.iter("extrareasons") if reason.get("ports")]
        for reason in named:
            for port in _expand(reason.get("ports", "")):
                states[(reason.get("proto", "tcp"), port)] = state
        if not named:
            folded.append(state)
    for element in host.iter("port"):
        state_element = element.find("state")
        states[(element.get("protocol", ""), int(element.get("portid", "0")))] = NMAP_STATES.get(
            "" if state_element is None else state_element.get("state", ""), FILTERED)
    wanted = [("tcp", port) for port in tcp_ports] + [("udp", port) for port in udp_ports]
    missing = [key for key in wanted if key not in states]
    if missing and len(set(folded)) == 1:  # an older nmap: one folded group, ports not named
        states.update({key: folded[0] for key in missing})
    elif missing:
        raise ScanError(f"nmap left {len(missing)} port(s) of {address} without a state (e.g. "
                        f"{missing[0][0]}/{missing[0][1]}); nmap 7.90 or later names every port")
    return {key: states[key] for key in wanted}


@dataclass(frozen=True)
class Vantage:
    """Where probes start. `namespace`: one of this machine's network namespaces (the lab's
    internet); `endpoint`: a host reached over SSH with its pinned key; neither: this machine."""

    name: str  # for people: "this deployer", "internet namespace hl-lab-inet", "vantage 198.51.100.7"
    namespace: str | None = None
    endpoint: SshEndpoint | None = None

    def run(self, shell_command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """A POSIX sh command line run at the vantage; stdout and stderr as text."""
        if self.endpoint is not None:
            return run_remote(self.endpoint, shell_command, connect_timeout=10, timeout=timeout)
        argv = ["sh", "-c", shell_command]
        if self.namespace is not None:
            argv = ["ip", "netns", "exec", self.namespace, *argv]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                  env=environment_without_secrets())
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", f"no answer within {timeout:.0f} s")

    def source_address(self, destination: str) -> str:
        """The address this vantage sends from to reach `destination` (its route; no packet sent)."""
        result = self.run(f"ip -o route get {shlex.quote(destination)}", timeout=30)
        words = result.stdout.split()
        if result.returncode != 0 or "src" not in words[:-1]:
            raise ScanError(f"{self.name}: can't tell its source address towards {destination} "
                            f"(`ip route get`: {result.stderr.strip() or result.stdout.strip() or 'no answer'})")
        return words[words.index("src") + 1]

    @property
    def here(self) -> bool:
        """Its probes leave from this process's own network namespace (not a lab's, not over SSH)."""
        return self.namespace is None and self.endpoint is None

    @cached_property
    def privileged(self) -> bool:
        """root at the vantage: nmap's SYN and UDP scans need it (a connect scan does not)."""
        return self.run("id -u", timeout=30).stdout.strip() == "0"

    def scan(self, address: str, tcp_ports: Sequence[int], udp_ports: Sequence[int], slow: bool = False) -> Scan:
        """nmap from here: a SYN scan (and UDP) as root; an SSH vantage's other user gets a
        connect scan and no UDP (the Scan then holds no udp states). Here, a documentation address
        only the default route leads to raises UnroutedDocumentationAddress: nmap never starts."""
        if self.here:  # a lab namespace's default route leads into its lab; an SSH vantage scans from its host
            require_own_route([address])
        udp_ports = udp_ports if self.privileged else ()
        arguments = nmap_arguments(address, tcp_ports, udp_ports, slow)
        data_dir = quiet_data_dir() if self.endpoint is None else None
        command = ("command -v nmap >/dev/null || { echo 'nmap is not installed' >&2; exit 127; }; "
                   + shlex.join(["exec", "nmap", *(["--datadir", data_dir] if data_dir else []),
                                 "-sS" if self.privileged else "-sT", *arguments]))
        started = time.monotonic()
        result = self.run(command, timeout=HOST_TIMEOUT_SECONDS * 2 + 30)
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise ScanError(f"{self.name}: nmap of {address} failed (exit {result.returncode}): "
                            f"{(result.stderr.strip().splitlines() or ['no message'])[-1]}")
        return Scan(address, parse_scan(result.stdout, address, tcp_ports, udp_ports), seconds)


@cache
def quiet_data_dir() -> str | None:
    """QUIET_DATA_DIR, made once (its absolute path); None where it can't be written (nmap then
    reads its own services table, and scans the same)."""
    directory = QUIET_DATA_DIR.resolve()
    services = directory / "nmap-services"
    try:
        if not services.is_file():
            directory.mkdir(parents=True, exist_ok=True)
            temporary = services.with_name(f"nmap-services.{os.getpid()}")
            temporary.write_text("# empty: hardened-lightsail reads port states, not service names\n")
            temporary.replace(services)  # atomic: a scan started meanwhile sees no file or the whole one
    except OSError:
        return None
    return str(directory)
