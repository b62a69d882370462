"""Measures from this machine whether a TCP port answers: open, closed (RST) or filtered (silence).

A firewall DROP shows as "filtered"; "closed" means packets got through to a port nobody listens
on, which for a port the policy closes is a firewall hole."""
from __future__ import annotations

import errno
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor

OPEN, CLOSED, FILTERED = "open", "closed", "filtered"


def tcp_state(address: str, port: int, timeout: float = 2.0) -> str:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        code = sock.connect_ex((address, port))
    if code == 0:
        return OPEN
    if code == errno.ECONNREFUSED:
        return CLOSED
    return FILTERED  # timeout, or an ICMP unreachable some firewalls send instead of silence


def tcp_states(targets: list[tuple[str, int]], timeout: float = 2.0, workers: int = 16) -> dict:
    """{(address, port): state} measured in parallel (bounded: one connect per target)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        states = pool.map(lambda target: tcp_state(*target, timeout=timeout), targets)
        return dict(zip(targets, states))


def local_source_address(destination: str) -> str:
    """The address this machine would send from to reach `destination` (no packet is sent)."""
    family = socket.AF_INET6 if ipaddress.ip_address(destination).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((destination, 9))
        return sock.getsockname()[0]


def udp_state(address: str, port: int, timeout: float = 2.0) -> str:
    """open (a reply came), closed (ICMP port unreachable: the firewall let it through to a
    port nobody listens on) or filtered (silence: dropped, or a service that doesn't answer)."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((address, port))  # a connected UDP socket reports ICMP unreachable as ECONNREFUSED
        try:
            sock.send(b"hardened-lightsail reachability probe\n")
            sock.recv(512)
            return OPEN
        except ConnectionRefusedError:
            return CLOSED
        except OSError:
            return FILTERED


def udp_states(targets: list[tuple[str, int]], timeout: float = 2.0, workers: int = 16) -> dict:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        states = pool.map(lambda target: udp_state(*target, timeout=timeout), targets)
        return dict(zip(targets, states))
