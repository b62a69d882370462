"""A real DHCPv6 exchange between two lab namespaces: Kea's DHCPv6 server (Debian's
kea-dhcp6-server) on one side, ISC dhclient (isc-dhcp-client) on the other.

Both run with configs, leases, pid files and logs in a directory the caller owns, never the
machine's /etc/kea, /etc/dhcp, /var/lib/dhcp or resolv.conf: dhclient's address changes go
through our own script, which only sets the leased address on the client's interface (inside
its namespace) and logs each event. Short timers let a test watch a renewal in seconds."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import LabError
from .netns import LAB_NAMESPACE_PREFIX
from .processes import stop_pids, wait_for_pid_file

# dhclient calls this with $reason and new_ip6_* in its environment (dhclient-script(8)); it
# passes no other variables, so the events file is written into the script itself.
CLIENT_SCRIPT = """#!/bin/sh
PATH=/usr/sbin:/usr/bin:/sbin:/bin
printf '%s %s\\n' "$reason" "${{new_ip6_address:-${{old_ip6_address:-}}}}" >>{events}
case $reason in
    BOUND6 | RENEW6 | REBIND6 | REBOOT6)
        exec ip -6 address replace "$new_ip6_address/$new_ip6_prefixlen" dev "$interface" \\
            valid_lft "$new_max_life" preferred_lft "$new_preferred_life" ;;
    EXPIRE6 | RELEASE6 | STOP6)
        [ -z "${{old_ip6_address:-}}" ] || exec ip -6 address del "$old_ip6_address/$old_ip6_prefixlen" dev "$interface" ;;
esac
exit 0
"""


@dataclass(frozen=True)
class LeaseTimers:
    """Seconds: the client renews at `renew`, rebinds at `rebind`, loses the address at `valid`."""
    renew: int = 3
    rebind: int = 5
    preferred: int = 8
    valid: int = 10


class Dhcpv6Exchange:
    """Kea in `server_namespace` serving `subnet` on `server_interface`; dhclient in
    `client_namespace` on `client_interface`. `stop()` ends both by their pids."""

    def __init__(self, directory: Path, server_namespace: str, server_interface: str,
                 client_namespace: str, client_interface: str, subnet: str, timers: LeaseTimers = LeaseTimers()):
        for namespace in (server_namespace, client_namespace):
            if not namespace.startswith(LAB_NAMESPACE_PREFIX):
                raise LabError(f"refusing to run a DHCPv6 daemon outside a lab namespace (got {namespace!r})")
        self.directory = directory
        self.server = (server_namespace, server_interface)
        self.client = (client_namespace, client_interface)
        self.subnet, self.timers = subnet, timers
        self.events = directory / "client-events"
        self._pids: list[int] = []
        self._processes: list[subprocess.Popen] = []

    def start_server(self) -> int:
        namespace, interface = self.server
        prefix = self.subnet.split("/")[0].rstrip(":")
        config = {"Dhcp6": {
            "interfaces-config": {"interfaces": [interface]},
            "lease-database": {"type": "memfile", "persist": False},
            # Kea would keep its DUID in /var/lib/kea (the machine's): in memory, and ours.
            "server-id": {"type": "LL", "persist": False},
            "data-directory": str(self.directory),
            "renew-timer": self.timers.renew, "rebind-timer": self.timers.rebind,
            "preferred-lifetime": self.timers.preferred, "valid-lifetime": self.timers.valid,
            "subnet6": [{"id": 1, "subnet": self.subnet, "interface": interface,
                         "pools": [{"pool": f"{prefix}::100-{prefix}::1ff"}]}],
            "loggers": [{"name": "kea-dhcp6", "severity": "INFO",
                         "output_options": [{"output": str(self.directory / "kea.log")}]}],
        }}
        config_file = self.directory / "kea-dhcp6.json"
        config_file.write_text(json.dumps(config, indent=2))
        # Kea puts its pid and lock files where these say (default /run/kea, the machine's).
        env = {**os.environ, "KEA_PIDFILE_DIR": str(self.directory), "KEA_LOCKFILE_DIR": str(self.directory)}
        self._spawn(["ip", "netns", "exec", namespace, "kea-dhcp6", "-c", str(config_file)], env, "kea")
        # Kea names its pid file after the config file: <dir>/kea-dhcp6.kea-dhcp6.pid.
        return self._wait_pid(self.directory / "kea-dhcp6.kea-dhcp6.pid", "kea-dhcp6", "kea")

    def start_client(self) -> int:
        namespace, interface = self.client
        script = self.directory / "dhclient-script"
        script.write_text(CLIENT_SCRIPT.format(events=shlex.quote(str(self.events))))
        script.chmod(0o755)
        (self.directory / "dhclient.conf").write_text("")  # not the machine's /etc/dhcp/dhclient.conf
        pid_file = self.directory / "dhclient.pid"
        self._spawn(["ip", "netns", "exec", namespace, "dhclient", "-6", "-d", "-v",
                     "-cf", str(self.directory / "dhclient.conf"), "-lf", str(self.directory / "dhclient6.leases"),
                     "-pf", str(pid_file), "-sf", str(script), interface], dict(os.environ), "dhclient")
        return self._wait_pid(pid_file, "dhclient", "dhclient")

    def client_events(self) -> list[tuple[str, str]]:
        """(reason, address) for each time dhclient ran its script, oldest first."""
        if not self.events.exists():
            return []
        return [tuple((line.split() + [""])[:2]) for line in self.events.read_text().splitlines() if line.strip()]

    def wait_for_event(self, reason: str, timeout: float, after: int = 0) -> tuple[str, str] | None:
        """The first event named `reason` past the first `after` events, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.client_events()[after:]:
                if event[0] == reason:
                    return event
            time.sleep(0.1)
        return None

    def stop(self) -> None:
        left = stop_pids(self._pids)
        for process in self._processes:
            process.wait(timeout=10)  # reaped: no zombie left behind
        if left:
            raise LabError(f"DHCPv6 processes {left} survived SIGKILL")
        self._pids.clear()
        self._processes.clear()

    def _spawn(self, argv: list[str], env: dict, name: str) -> None:
        with open(self.directory / f"{name}.out", "ab") as log:  # the daemon keeps its own copy
            process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True)
        self._processes.append(process)
        self._pids.append(process.pid)  # `ip netns exec` execs the daemon: same pid

    def _wait_pid(self, pid_file: Path, marker: str, name: str) -> int:
        pid = wait_for_pid_file(pid_file, marker, timeout=10)
        if pid is None:
            output = (self.directory / f"{name}.out").read_text(errors="replace")[-2000:]
            raise LabError(f"{name} did not start within 10 s: {output}")
        if pid not in self._pids:
            self._pids.append(pid)
        return pid
