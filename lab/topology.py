"""Names and addresses of one lab (pure arithmetic on its name and slot), and how to run a
command or open SSH from any of its hosts. Nothing here creates anything; see network.py.

Slot k (0..15) gives every lab its own addresses and interface names, so labs sit side by side:
  admin     edge <-> adm   192.0.2.8k/29        2001:db8:a:<k>::/64       edge .1/::1, adm .2/::2
  uplink    edge <-> root  192.0.2.128+8k/29    2001:db8:a:<100+k>::/64   edge .1/::1, root .2/::2
  internet  edge <-> inet, inet2
                           198.51.100.16k/28    2001:db8:b:<16k>::/64     edge .1/::1, inet .2/::2,
                                                                          inet2 .3/::3
  server    edge <-> srv, srv1, ...
                           203.0.113.16k/28     2001:db8:c:<16k>::/64     edge .1/::1, server i: see
                                                                          server_host_number(i)
(<> in hex; host numbers are offsets from the segment's first address.) A lab has 1 to
MAX_SERVERS servers (server.count), each in its own namespace, on one segment bridged in the
edge, so the edge enforces the cloud layer for all of them. Every slot's admin link
lies in 192.0.2.0/25 and 2001:db8:a::/60, every uplink in 192.0.2.128/25 and 2001:db8:a:100::/60:
the deployer's side of any lab is DEPLOYER_CIDRS, whatever slot the lab was given."""
from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .commands import run_command
from .docnet import require_documentation_address
from .errors import LabError
from .layout import SERVER_BIND_MOUNTS, LabLayout, ServerLayout

SLOT_COUNT = 16
NAME_MAX_LENGTH = 24  # namespaces are hl-NAME-srv12 (interface names use the slot, not the name)
# A slot's server segment is a /28: .0 and .15 are its network and broadcast, .1 the edge, which
# leaves 13 host numbers (IPv6 has room to spare in its /64).
MAX_SERVERS = 13
# Used with fullmatch: `match` with `$` would let "lab\n" through into namespace names.
NAME_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,%d}[a-z0-9])?" % (NAME_MAX_LENGTH - 2))  # noqa: UP031 (an f-string doubles the braces)

# Roles of the hosts in a lab; "root" is the machine's own namespace (the deployer's uplink).
# SERVER is the first server; server i > 0 is "server<i>" (server_role).
SERVER, EDGE, INTERNET, INTERNET2, ADMIN, ROOT = "server", "edge", "internet", "internet2", "admin", "root"
NAMESPACE_SUFFIX = {SERVER: "srv", EDGE: "edge", INTERNET: "inet", INTERNET2: "inet2", ADMIN: "adm"}
SERVER_ROLE = re.compile(r"server([1-9][0-9]?)")  # fullmatch

# Never run in the root namespace through LabTopology.run/exec_argv.
ROOT_FORBIDDEN_TOOLS = frozenset({
    "iptables", "ip6tables", "iptables-restore", "ip6tables-restore", "iptables-legacy",
    "ip6tables-legacy", "iptables-nft", "ip6tables-nft", "iptables-legacy-restore",
    "ip6tables-legacy-restore", "iptables-nft-restore", "ip6tables-nft-restore", "ipset", "nft",
    "sysctl", "ebtables", "arptables", "conntrack",
})

# Covers every slot's admin client and deployer uplink: what a lab policy's adminCidrs should be.
ADMIN_CIDRS = ("192.0.2.0/24", "2001:db8:a::/48")
# This machine's end of every slot's uplink: where the deployer connects from, in any lab. Known
# without the slot, so the lock-out check and the release are the same before and after a slot
# is allocated (and for `fw check`, which never sees one).
DEPLOYER_CIDRS = ("192.0.2.128/25", "2001:db8:a:100::/60")

SSH_PORT, HTTP_PORT, HTTPS_PORT = 22, 80, 443
# Listening on the server but meant to stay invisible unless a policy opens them.
HIDDEN_TCP_PORTS = (23, 5432, 8080)
HIDDEN_UDP_PORTS = (5353,)


UPLINK_SUFFIX = "up"


def uplink_interface_name(slot: int) -> str:
    """The one interface a lab in `slot` adds to the root namespace."""
    return f"hl{slot}{UPLINK_SUFFIX}"


def server_role(index: int) -> str:
    """The role of server `index`: the first is "server" (as in a one-server lab), then "server1"..."""
    return SERVER if index == 0 else f"{SERVER}{index}"


def server_index(role: str) -> int | None:
    """server -> 0, server3 -> 3; None for a role that is not a server's."""
    if role == SERVER:
        return 0
    match = SERVER_ROLE.fullmatch(role)
    return int(match.group(1)) if match and int(match.group(1)) < MAX_SERVERS else None


def server_host_number(index: int) -> int:
    """Server i's host number in the server /28 and /64: .10 to .14, then .2 to .9 (IPv4), and
    ::10 + i (IPv6). The first server keeps .10, the address a one-server lab always had."""
    return 2 + (8 + index) % MAX_SERVERS


def namespace_name(name: str, role: str) -> str:
    """Network namespace of `role` in lab `name` (independent of the slot)."""
    index = server_index(role)
    if index is not None:
        return f"hl-{name}-{NAMESPACE_SUFFIX[SERVER]}{index or ''}"
    if role not in NAMESPACE_SUFFIX:
        raise LabError(f"unknown lab role {role!r}: use one of {', '.join([*NAMESPACE_SUFFIX, ROOT])} "
                       f"(or server1 ... server{MAX_SERVERS - 1} in a lab of several servers)")
    return f"hl-{name}-{NAMESPACE_SUFFIX[role]}"


def recorded_server_count(layout: LabLayout) -> int:
    """How many servers the lab in this directory has (lab.json; 1 for a lab made before labs
    had several)."""
    servers = (layout.record() or {}).get("servers", 1)
    return servers if isinstance(servers, int) and not isinstance(servers, bool) and 1 <= servers <= MAX_SERVERS else 1


def validate_server_count(servers: int) -> int:
    if isinstance(servers, bool) or not isinstance(servers, int) or not 1 <= servers <= MAX_SERVERS:
        raise LabError(f"lab server count {servers!r} is not valid: use a number from 1 to {MAX_SERVERS} "
                       "(a slot's server segment is a /28)")
    return servers


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise LabError(
            f"lab name {name!r} is not valid: use 1-{NAME_MAX_LENGTH} characters of a-z, 0-9 and '-', "
            "not starting or ending with '-' (it becomes part of namespace names)"
        )
    return name


def validate_slot(slot: int) -> int:
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < SLOT_COUNT:
        raise LabError(f"lab slot {slot!r} is not valid: use a number from 0 to {SLOT_COUNT - 1}")
    return slot


@dataclass(frozen=True)
class Endpoint:
    """One interface of one host on one segment."""

    role: str
    interface: str
    ipv4: ipaddress.IPv4Interface
    ipv6: ipaddress.IPv6Interface
    edge_port: str | None = None  # hosts only: the edge-side end of this host's veth


@dataclass(frozen=True)
class Segment:
    """One link: the edge's side, the hosts on the other side, and (internet) the bridge."""

    name: str
    edge: Endpoint
    hosts: tuple[Endpoint, ...]
    # The internet segment has two clients, so the edge bridges their veth ends: edge.interface
    # is then the bridge (it holds the edge's addresses) and each host's edge_port is a port of it.
    bridged: bool = False


def _v4(network: str, offset: int, prefix: int) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(f"{ipaddress.IPv4Network(network)[offset]}/{prefix}")


def _v6(network: str, host: int) -> ipaddress.IPv6Interface:
    return ipaddress.IPv6Interface(f"{ipaddress.IPv6Network(network)[host]}/64")


@dataclass(frozen=True)
class LabTopology:
    """Everything about lab `name` in slot `slot`, with `servers` servers, that can be known
    without looking."""

    name: str
    slot: int
    state_dir: Path
    servers: int = 1

    def __post_init__(self) -> None:
        validate_name(self.name)
        validate_slot(self.slot)
        validate_server_count(self.servers)
        object.__setattr__(self, "state_dir", Path(self.state_dir).absolute())

    # --- names -----------------------------------------------------------------------------
    def namespace(self, role: str) -> str | None:
        """Network namespace of `role`; None for "root" (the machine's own namespace)."""
        return None if role == ROOT else namespace_name(self.name, role)

    @property
    def server_roles(self) -> list[str]:
        return [server_role(index) for index in range(self.servers)]

    @property
    def namespaces(self) -> dict[str, str]:
        """Every namespace of the lab, by role: the servers first, then the rest."""
        roles = [*self.server_roles, *(role for role in NAMESPACE_SUFFIX if role != SERVER)]
        return {role: self.namespace(role) for role in roles}

    @property
    def uplink_interface(self) -> str:
        return uplink_interface_name(self.slot)

    @cached_property
    def layout(self) -> LabLayout:
        return LabLayout(self.state_dir)

    # --- addresses -------------------------------------------------------------------------
    @cached_property
    def segments(self) -> dict[str, Segment]:
        base, k = 16 * self.slot, self.slot
        # Admin links and uplinks in separate halves, so DEPLOYER_CIDRS covers every uplink only.
        admin4, uplink4 = f"192.0.2.{8 * k}/29", f"192.0.2.{128 + 8 * k}/29"
        inet4, srv4 = f"198.51.100.{base}/28", f"203.0.113.{base}/28"
        admin6, uplink6 = f"2001:db8:a:{k:x}::/64", f"2001:db8:a:{0x100 + k:x}::/64"
        inet6, srv6 = f"2001:db8:b:{base:x}::/64", f"2001:db8:c:{base:x}::/64"

        # Interface names are hl<slot><what>: at most 11 characters (Linux allows 15).
        def endpoint(role, interface, net4, off4, pfx4, net6, host6, edge_port=None):
            return Endpoint(role, f"hl{k}{interface}", _v4(net4, off4, pfx4), _v6(net6, host6),
                            edge_port and f"hl{k}{edge_port}")

        return {
            "admin": Segment(
                "admin",
                endpoint(EDGE, "e-adm", admin4, 1, 29, admin6, 1),
                (endpoint(ADMIN, "adm", admin4, 2, 29, admin6, 2, "e-adm"),),
            ),
            "uplink": Segment(
                "uplink",
                endpoint(EDGE, "e-up", uplink4, 1, 29, uplink6, 1),
                (endpoint(ROOT, UPLINK_SUFFIX, uplink4, 2, 29, uplink6, 2, "e-up"),),
            ),
            "internet": Segment(
                "internet",
                endpoint(EDGE, "br-inet", inet4, 1, 28, inet6, 1),
                (
                    endpoint(INTERNET, "inet", inet4, 2, 28, inet6, 2, "e-inet"),
                    endpoint(INTERNET2, "inet2", inet4, 3, 28, inet6, 3, "e-inet2"),
                ),
                bridged=True,
            ),
            # The servers share one link, bridged in the edge (like instances in one subnet):
            # the edge routes and filters everything from outside to any of them.
            "server": Segment(
                "server",
                endpoint(EDGE, "br-srv", srv4, 1, 28, srv6, 1),
                tuple(endpoint(server_role(index), f"srv{index or ''}", srv4, server_host_number(index), 28,
                               srv6, 0x10 + index, f"e-srv{index or ''}") for index in range(self.servers)),
                bridged=True,
            ),
        }

    def endpoint(self, role: str) -> Endpoint:
        """The (only) interface of a client, the server or the root uplink."""
        for segment in self.segments.values():
            for host in segment.hosts:
                if host.role == role:
                    return host
        raise LabError(f"role {role!r} has no single address: the edge has one per segment")

    def address(self, role: str, family: int = 4) -> str:
        endpoint = self.endpoint(role)
        return str((endpoint.ipv4 if family == 4 else endpoint.ipv6).ip)

    @property
    def server_ipv4(self) -> str:
        """The first server's IPv4 address (the only one in a one-server lab)."""
        return self.address(SERVER, 4)

    @property
    def server_ipv6(self) -> str:
        return self.address(SERVER, 6)

    def server_layout(self, index: int) -> ServerLayout:
        """Where server `index` keeps its files (the first server's are the lab directory's own)."""
        return self.layout.server(index)

    # --- running things ---------------------------------------------------------------------
    def _namespace_of(self, where: str) -> str | None:
        if where == ROOT:
            return None
        if where in self.namespaces:
            return self.namespace(where)
        if where in self.namespaces.values():
            return where
        raise LabError(f"{where!r} is not a host of lab {self.name}: use a role "
                       f"({', '.join([*self.namespaces, ROOT])}) or one of its namespaces")

    def exec_argv(self, where: str, argv: Sequence[str]) -> list[str]:
        """`argv` prefixed so that it runs in `where` (a role, a namespace name, or "root").

        Firewall and sysctl tools are refused in the root namespace: the lab never changes the
        machine's own firewall, whatever a caller asks."""
        namespace = self._namespace_of(where)
        if namespace is None:
            if Path(argv[0]).name in ROOT_FORBIDDEN_TOOLS:
                raise LabError(f"refusing to run {argv[0]} in the root namespace: the lab never "
                               "changes this machine's firewall (run it in a lab namespace)")
            return list(argv)
        return ["ip", "netns", "exec", namespace, *argv]

    def run(self, where: str, argv: Sequence[str], *, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run `argv` in `where` and capture text output; with check, a failure is a LabError."""
        return run_command(self.exec_argv(where, argv), input=input, timeout=timeout, check=check,
                           what=f"{' '.join(argv)} (in {where})")

    def ssh_argv(self, origin: str, remote_command: Sequence[str] = (), *, family: int = 4,
                 user: str = "root", connect_timeout: int = 5, options: Sequence[str] = (),
                 server: int = 0) -> list[str]:
        """An ssh command line from `origin` to server `server`, with the lab key and no state kept.

        No config file, no known_hosts, no control socket: every call is a fresh TCP connection,
        which is what commit-confirm and the firewall tests must measure. Like ssh itself, the
        words of `remote_command` are joined with spaces and run by the server's login shell,
        so pass a shell command line as one string: ["echo ok > /tmp/x"]."""
        target = require_documentation_address(self.address(server_role(server), family))
        argv = [
            "ssh", "-F", "/dev/null",
            "-i", str(self.layout.client_key), "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={connect_timeout}", "-p", str(SSH_PORT),
            *options, f"{user}@{target}", *remote_command,
        ]
        return self.exec_argv(origin, argv)

    def load_cloud_layer(self, cloud_ports=None) -> list[dict]:
        """Replace the edge's cloud-layer rules (see cloud_layer.load_cloud_layer)."""
        from .cloud_layer import load_cloud_layer  # cloud_layer builds on this module
        return load_cloud_layer(self, cloud_ports)

    # --- description ------------------------------------------------------------------------
    def describe(self) -> dict:
        """The JSON that `python -m lab up` prints (and LabServer turns into stack outputs)."""
        def pair(endpoint: Endpoint) -> dict:
            return {"ipv4": str(endpoint.ipv4.ip), "ipv6": str(endpoint.ipv6.ip),
                    "ipv4Cidr": str(endpoint.ipv4.network), "ipv6Cidr": str(endpoint.ipv6.network),
                    "interface": endpoint.interface}

        hosts = {host.role: pair(host) for seg in self.segments.values() for host in seg.hosts}
        hosts["deployer"] = hosts.pop(ROOT)
        hosts["edge"] = {name: pair(seg.edge) for name, seg in self.segments.items()}
        return {
            "name": self.name,
            "slot": self.slot,
            "dir": str(self.state_dir),
            "namespaces": self.namespaces,
            "uplinkInterface": self.uplink_interface,
            "addresses": hosts,
            "adminCidrs": list(ADMIN_CIDRS),
            "ssh": {
                "user": "root",
                "host": self.server_ipv4,
                "hostIpv6": self.server_ipv6,
                "port": SSH_PORT,
                "privateKeyPath": str(self.layout.client_key),
                "knownHostsPath": str(self.layout.known_hosts),  # the first server's host key, for ssh
                "publicKeyPath": str(self.layout.client_key) + ".pub",
            },
            "ports": {
                "ssh": SSH_PORT, "http": HTTP_PORT, "https": HTTPS_PORT,
                "hiddenTcp": list(HIDDEN_TCP_PORTS), "hiddenUdp": list(HIDDEN_UDP_PORTS),
            },
            "serverFiles": {path: str(self.layout.server_fs(path)) for path in SERVER_BIND_MOUNTS},
            # Every server (the first one is also `ssh.host` above): one entry each, in order.
            "servers": [{
                "index": index, "role": role, "namespace": self.namespace(role),
                "ipv4": self.address(role, 4), "ipv6": self.address(role, 6),
                "hostPublicKeyPath": str(self.server_layout(index).host_key) + ".pub",
                "knownHostsPath": str(self.server_layout(index).known_hosts),  # its host key, for ssh
                "serverFiles": {path: str(self.server_layout(index).server_fs(path)) for path in SERVER_BIND_MOUNTS},
            } for index, role in enumerate(self.server_roles)],
        }
