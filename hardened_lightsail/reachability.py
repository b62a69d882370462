"""Measures from this machine whether a TCP or UDP port answers: open, closed (RST / ICMP port
unreachable) or filtered (silence). Used by the deployer's outside verification and the lab.

A firewall DROP shows as "filtered"; "closed" means packets got through to a port nobody listens
on, which for a port the policy closes is a firewall hole. A documentation address only this
machine's default route leads to (its lab is down) is refused before anything is sent: that raises
UnroutedDocumentationAddress, never a state ("filtered" would pass for a denied port)."""
from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .documentation_routes import require_own_route

OPEN, CLOSED, FILTERED = "open", "closed", "filtered"
UDP_PAYLOAD = b"hardened-lightsail probe\n"


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def tcp_probe(address: str, port: int, timeout: float = 2.0) -> tuple[str, str]:
    """(state, detail): open = handshake done; closed = RST; filtered = silence, or an ICMP
    error some firewalls send instead (EHOSTUNREACH, EACCES...)."""
    require_own_route([address])
    return _tcp_probe(address, port, timeout)


def _tcp_probe(address: str, port: int, timeout: float) -> tuple[str, str]:
    with socket.socket(_family(address), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
        except TimeoutError:
            return FILTERED, "no answer"
        except ConnectionRefusedError:
            return CLOSED, "refused"
        except OSError as error:
            return FILTERED, errno.errorcode.get(error.errno or 0, str(error.errno))
        return OPEN, "connected"


def tcp_state(address: str, port: int, timeout: float = 2.0) -> str:
    return tcp_probe(address, port, timeout)[0]


def local_source_address(destination: str) -> str:
    """The address this machine would send from to reach `destination` (no packet is sent)."""
    with socket.socket(_family(destination), socket.SOCK_DGRAM) as sock:
        sock.connect((destination, 9))
        return str(sock.getsockname()[0])


def udp_probe(address: str, port: int, timeout: float = 2.0) -> tuple[str, str]:
    """(state, detail): open = a reply came; closed = ICMP port unreachable (the firewall let
    it through to a port nobody listens on); filtered = silence (dropped, or a quiet service)."""
    require_own_route([address])
    return _udp_probe(address, port, timeout)


def _udp_probe(address: str, port: int, timeout: float) -> tuple[str, str]:
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))  # a connected UDP socket reports ICMP unreachable
            sock.send(UDP_PAYLOAD)
            sock.recv(2048)
        except TimeoutError:
            return FILTERED, "no answer"
        except ConnectionRefusedError:
            return CLOSED, "port unreachable"
        except OSError as error:
            return FILTERED, errno.errorcode.get(error.errno or 0, str(error.errno))
        return OPEN, "answered"


# Unguarded, for a caller that judged every address of its batch with require_own_route before
# the first probe (measure(), lab/probe.py's worker): a route lookup per probe would cost a quick
# check's deploy about 4 ms of CPU per port.
UNCHECKED_PROBES: dict[str, Callable[[str, int, float], tuple[str, str]]] = {"tcp": _tcp_probe, "udp": _udp_probe}


def measure(protocol: str, targets: list[tuple[str, int]], timeout: float = 2.0, workers: int = 16
            ) -> dict[tuple[str, int], str]:
    """{(address, port): state} for `protocol`, in parallel (bounded: one probe per target).
    Raises UnroutedDocumentationAddress before any probe when one address may not be sent to."""
    probe = UNCHECKED_PROBES[protocol]
    require_own_route(address for address, _ in targets)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        states = pool.map(lambda target: probe(target[0], target[1], timeout)[0], targets)
        return dict(zip(targets, states, strict=True))
