"""Docker's iptables layout, reproduced in lab namespaces (Docker itself can't run here: dockerd
needs the devices cgroup). It follows Docker Engine 29.7.2's documented rules for the default
bridge with published ports (moby/moby integration/network/bridge/iptablesdoc/generated/
new-daemon.md and usernet-portmap.md at tag docker-v29.7.2): the filter chains DOCKER,
DOCKER-BRIDGE, DOCKER-CT, DOCKER-FORWARD, DOCKER-INTERNAL and DOCKER-USER with FORWARD jumping
to DOCKER-USER then DOCKER-FORWARD, nat DNAT per published port, the raw-table guard against
direct access to the container, and a container in its own namespace behind a bridge.

Like dockerd, `start()` adds its rules with iptables commands next to whatever is there: it
creates DOCKER-USER only if missing (never flushing it) and puts its two FORWARD jumps first.
Addresses are documentation ranges (Docker's 172.17.0.0/16 is not one)."""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .netns import add_namespace, delete_namespace, in_namespace, ip, namespace_pids
from .processes import stop_pids

# Runs argv in the Docker host's network namespace (a payload sandbox passes its own runner).
Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]

DOCKER_VERSION = "29.7.2"
BRIDGE = "docker0"


@dataclass(frozen=True)
class PublishedPort:
    host_port: int
    container_port: int
    protocol: str = "tcp"


class DockerLayout:
    """Docker on the lab host `host_namespace`: bridge docker0 (`gateway`/24), one container
    namespace (`container_address`) whose `ports` are published on every host address."""

    def __init__(self, host_namespace: str, container_namespace: str, ports: list[PublishedPort],
                 gateway: str = "192.0.2.1", container_address: str = "192.0.2.2", run: Runner | None = None):
        self.host, self.container = host_namespace, container_namespace
        self.run = run or (lambda argv: in_namespace(host_namespace, argv, check=False))
        self.ports, self.gateway, self.container_address = ports, gateway, container_address
        self.subnet = gateway.rsplit(".", 1)[0] + ".0/24"

    # --- the container's network: a namespace behind the bridge (what `docker run` sets up)
    def create_network(self) -> None:
        add_namespace(self.container)
        ip(self.host, "link", "add", BRIDGE, "type", "bridge")
        ip(self.host, "address", "add", f"{self.gateway}/24", "dev", BRIDGE)
        ip(self.host, "link", "set", BRIDGE, "up")
        ip(self.host, "link", "add", "veth-c1", "type", "veth", "peer", "name", "eth0", "netns", self.container)
        ip(self.host, "link", "set", "veth-c1", "master", BRIDGE)
        ip(self.host, "link", "set", "veth-c1", "up")
        ip(self.container, "address", "add", f"{self.container_address}/24", "dev", "eth0")
        ip(self.container, "link", "set", "eth0", "up")
        ip(self.container, "route", "add", "default", "via", self.gateway)
        self.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])

    def remove_network(self) -> None:
        stop_pids(namespace_pids(self.container))
        delete_namespace(self.container)
        ip(self.host, "link", "delete", BRIDGE, check=False)

    # --- dockerd's rules
    def commands(self) -> list[list[str]]:
        """The iptables commands dockerd runs at start and for the container's published ports."""
        filter_chains = ("DOCKER", "DOCKER-BRIDGE", "DOCKER-CT", "DOCKER-FORWARD", "DOCKER-INTERNAL", "DOCKER-USER")
        commands: list[list[str]] = [["-t", "filter", "-N", chain] for chain in filter_chains]
        commands += [["-t", "nat", "-N", "DOCKER"]]
        # Its FORWARD jumps go first: DOCKER-FORWARD inserted at the top, then DOCKER-USER above it.
        for chain in ("DOCKER-FORWARD", "DOCKER-USER"):
            commands += [["-t", "filter", "-D", "FORWARD", "-j", chain], ["-t", "filter", "-I", "FORWARD", "1", "-j", chain]]
        commands += [
            ["-t", "filter", "-P", "FORWARD", "DROP"],  # dockerd enabled ip_forward itself
            ["-t", "filter", "-A", "DOCKER-BRIDGE", "-o", BRIDGE, "-j", "DOCKER"],
            ["-t", "filter", "-A", "DOCKER-CT", "-o", BRIDGE, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
            ["-t", "filter", "-A", "DOCKER-FORWARD", "-j", "DOCKER-CT"],
            ["-t", "filter", "-A", "DOCKER-FORWARD", "-j", "DOCKER-INTERNAL"],
            ["-t", "filter", "-A", "DOCKER-FORWARD", "-j", "DOCKER-BRIDGE"],
            ["-t", "filter", "-A", "DOCKER-FORWARD", "-i", BRIDGE, "-j", "ACCEPT"],
            ["-t", "filter", "-A", "DOCKER", "!", "-i", BRIDGE, "-o", BRIDGE, "-j", "DROP"],
            ["-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"],
            ["-t", "nat", "-A", "OUTPUT", "!", "-d", "127.0.0.0/8", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"],
            ["-t", "nat", "-A", "POSTROUTING", "-s", self.subnet, "!", "-o", BRIDGE, "-j", "MASQUERADE"],
        ]
        for port in self.ports:  # per container: inserted at the head of DOCKER (setPerPortForwarding)
            commands += [
                ["-t", "filter", "-I", "DOCKER", "1", "-d", f"{self.container_address}/32", "!", "-i", BRIDGE,
                 "-o", BRIDGE, "-p", port.protocol, "-m", port.protocol, "--dport", str(port.container_port), "-j", "ACCEPT"],
                ["-t", "nat", "-A", "DOCKER", "!", "-i", BRIDGE, "-p", port.protocol, "-m", port.protocol,
                 "--dport", str(port.host_port), "-j", "DNAT",
                 "--to-destination", f"{self.container_address}:{port.container_port}"],
            ]
        commands += [["-t", "raw", "-A", "PREROUTING", "-d", f"{self.container_address}/32", "!", "-i", BRIDGE, "-j", "DROP"]]
        return commands

    def start(self) -> None:
        """dockerd starting: its chains and rules join whatever the host already has."""
        for command in self.commands():
            creates = "-N" in command
            deletes = "-D" in command
            result = self.run(["iptables", *command])
            # Like dockerd: an existing chain is kept as it is, a missing jump is nothing to delete.
            if result.returncode != 0 and not creates and not deletes:
                raise RuntimeError(f"iptables {' '.join(command)} failed: {result.stderr.strip()}")

    def rules(self) -> dict[str, list[str]]:
        """Docker's rules as `iptables -S` lines per table (chains named DOCKER*, and rules jumping
        to them), to check they are all still there."""
        found = {}
        for table in ("filter", "nat", "raw"):
            lines = self.run(["iptables", "-t", table, "-S"]).stdout.splitlines()
            found[table] = [line for line in lines if "HL-" not in line and (
                "DOCKER" in line or self.container_address in line or BRIDGE in line or line == "-P FORWARD DROP")]
        return found
