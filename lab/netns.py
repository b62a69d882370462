"""Thin wrappers around `ip` for namespaces and links, and the one way the lab runs anything
that changes kernel state (iptables-restore, sysctl) — always inside a named lab namespace.

Every function is safe to call twice: creating what exists or deleting what is gone is a no-op,
which is what makes `up` and `down` idempotent."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from .commands import run_command
from .errors import LabError

NETNS_RUN_DIR = "/run/netns"  # where `ip netns add` pins namespaces (iproute2's default)
LAB_NAMESPACE_PREFIX = "hl-"


def ip(namespace: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`ip [-n NAMESPACE] ARGS`; namespace None is the root namespace (links and routes only)."""
    prefix = ["ip"] if namespace is None else ["ip", "-n", namespace]
    return run_command([*prefix, *args], check=check)


def in_namespace(namespace: str, argv: Sequence[str], *, input: str | None = None,
                 timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    """Run `argv` inside a lab namespace. Refuses anything else: firewall and sysctl changes
    must never reach the machine's own (root) namespace."""
    if not namespace or not namespace.startswith(LAB_NAMESPACE_PREFIX):
        raise LabError(f"refusing to run {argv[0]} outside a lab namespace (got {namespace!r})")
    return run_command(["ip", "netns", "exec", namespace, *argv], input=input, timeout=timeout, check=check)


def sysctl(namespace: str, **settings: str) -> None:
    """Set sysctls inside a lab namespace: sysctl(ns, **{"net.ipv4.ip_forward": "1"})."""
    in_namespace(namespace, ["sysctl", "-q", "-w", *(f"{key}={value}" for key, value in settings.items())])


def namespace_exists(namespace: str) -> bool:
    return os.path.exists(os.path.join(NETNS_RUN_DIR, namespace))


def add_namespace(namespace: str) -> None:
    if not namespace_exists(namespace):
        run_command(["ip", "netns", "add", namespace])
    ip(namespace, "link", "set", "lo", "up")


def delete_namespace(namespace: str) -> None:
    if namespace_exists(namespace):
        run_command(["ip", "netns", "delete", namespace])


def namespace_pids(namespace: str) -> list[int]:
    """PIDs of every process whose network namespace is `namespace` (empty if it is gone)."""
    if not namespace_exists(namespace):
        return []
    result = run_command(["ip", "netns", "pids", namespace], check=False)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def link_exists(namespace: str | None, device: str) -> bool:
    if namespace is not None and not namespace_exists(namespace):
        return False
    return ip(namespace, "link", "show", "dev", device, check=False).returncode == 0


def delete_link(namespace: str | None, device: str) -> None:
    if link_exists(namespace, device):
        ip(namespace, "link", "delete", "dev", device)


def lab_namespaces() -> list[str]:
    """Every lab namespace on the machine (for status and leak checks)."""
    try:
        names = os.listdir(NETNS_RUN_DIR)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if name.startswith(LAB_NAMESPACE_PREFIX))
