"""The firewall policy and stack settings as plain, immutable data.

Every knob is declared here once, with its default and what it is for; `config.py` turns the
stack YAML into these objects and the renderers and the analysis only ever read them."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from .network_list import NetworkList
from .networks import Network, NetworkIndex, split_families

# Every TCP port a policy or a scan can name. Here, not in port_scan: the config reads fleet scan
# settings (scan_share), and loading the scanner for a constant cost every command ~30 ms.
ALL_TCP_PORTS = range(1, 65536)

TCP, UDP = "tcp", "udp"
PROTOCOLS = (TCP, UDP)


@dataclass(frozen=True, order=True)
class PortRange:
    first: int
    last: int

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"

    def overlaps(self, other: PortRange) -> bool:
        return self.first <= other.last and other.first <= self.last

    def contains(self, other: PortRange) -> bool:
        return self.first <= other.first and other.last <= self.last

    @property
    def iptables(self) -> str:
        """The `--dport` argument (iptables writes ranges with a colon)."""
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


@dataclass(frozen=True)
class Service:
    """A port (range) that is open to some sources, in both layers."""

    name: str
    protocol: str
    ports: PortRange
    sources: tuple[Network, ...]

    @property
    def sources_v4(self) -> list[Network]:
        return split_families(self.sources)[0]

    @property
    def sources_v6(self) -> list[Network]:
        return split_families(self.sources)[1]


@dataclass(frozen=True)
class SshRateLimit:
    """Per-source limit on NEW SSH connections (hashlimit): slows brute force, even from admins."""

    per_minute: int = 20  # sustained new connections per source and minute
    burst: int = 20  # connections a source may open at once before the rate applies


@dataclass(frozen=True)
class PortScanTrap:
    """A source that touches closed ports `threshold` times within `window_seconds` is banned."""

    enabled: bool = True
    threshold: int = 3  # closed-port hits (TCP SYN or UDP) that make a source a scanner
    window_seconds: int = 60  # time window for the hits above
    ban_seconds: int = 3600  # how long a scanner stays banned after its last packet


@dataclass(frozen=True)
class DropLog:
    """Rate-limited kernel log of dropped packets (read them with `journalctl -k` / dmesg)."""

    prefix: str = "IPTables-Dropped: "  # the prefix the operator greps for
    per_minute: int = 10  # log lines per minute at most, so a flood can't fill the disk
    burst: int = 5


@dataclass(frozen=True)
class FirewallPolicy:
    """Everything both layers are rendered from (config key `firewall`)."""

    admin_cidrs: tuple[Network, ...]  # SSH is allowed only from these, in both layers
    services: tuple[Service, ...] = ()
    ssh_port: int = 22
    ping: bool = True  # ICMP echo / ICMPv6 echo allowed (rate-limited on the host)
    ping_per_second: int = 5  # host-side limit on echo requests accepted per second
    confirm_timeout_seconds: int = 60  # unconfirmed rules roll back after this long
    # Dropped before anything else (host: ipset). From the stack config a NetworkList (equal to
    # the tuple of the same networks): lists run to hundreds of thousands of networks.
    blocklist: Sequence[Network] = ()
    allow_lockout: bool = False  # let a policy that fails the lock-out check through (drills)
    ssh_rate_limit: SshRateLimit = field(default_factory=SshRateLimit)
    port_scan: PortScanTrap = field(default_factory=PortScanTrap)
    drop_log: DropLog = field(default_factory=DropLog)
    # Docker-published ports bypass INPUT (nat PREROUTING -> FORWARD): the policy reaches them
    # through DOCKER-USER. auto: when Docker's chains are on the host at apply; on: always
    # (DOCKER-USER is made if missing); off: never.
    docker: str = "auto"
    # Addresses the deployer connects from; the lock-out check proves they keep SSH. The lab
    # fills this in itself; on Lightsail set it when your address is known.
    deployer_addresses: tuple[Network, ...] = ()
    # Where the blocklist's entries came from, for messages: (first index, config key) per part,
    # e.g. ((0, "firewall.blocklist"), (3, "firewall.blocklistFiles[0] (lists/drop.txt)")).
    # Not a config key and not part of the policy's value (same networks, same policy).
    blocklist_origins: tuple[tuple[int, str], ...] = field(default=(), compare=False, metadata={"config": False})

    def blocklist_entry(self, index: int) -> str:
        """`firewall.blocklist[3]`, or the file an entry was read from."""
        origin = "firewall.blocklist"
        for start, where in self.blocklist_origins:  # in order of their first index
            if start <= index:
                origin = where
        return f"firewall.blocklist[{index}]" if origin == "firewall.blocklist" else origin

    @property
    def admin_v4(self) -> list[Network]:
        return split_families(self.admin_cidrs)[0]

    @property
    def admin_v6(self) -> list[Network]:
        return split_families(self.admin_cidrs)[1]

    @cached_property
    def _blocklist_families(self) -> tuple[NetworkList, NetworkList]:
        # Sorted once per policy, as keys (network_list.py). The rulesets take these lists as
        # their sets' members as they are, so one index and one text serve every use.
        return NetworkList.of(self.blocklist).families

    @property
    def blocklist_v4(self) -> NetworkList:
        return self._blocklist_families[0]

    @property
    def blocklist_v6(self) -> NetworkList:
        return self._blocklist_families[1]

    @property
    def blocklist_texts(self) -> tuple[list[str], list[str]]:
        """blocklist_v4 and blocklist_v6 as text, written once per policy for both policy.json
        and the ipset file."""
        return self.blocklist_v4.texts, self.blocklist_v6.texts

    @cached_property
    def blocklist_index(self) -> NetworkIndex:
        """Is a source blocked: a few binary searches, however long the list (see NetworkIndex)."""
        return NetworkIndex.of_families(self.blocklist_v4.network_index, self.blocklist_v6.network_index)


@dataclass(frozen=True)
class ServerSettings:
    """Config key `server`: the Lightsail instance(s) (ignored by the lab target)."""

    availability_zone: str = "ap-northeast-1a"
    blueprint_id: str = "ubuntu_24_04"
    bundle_id: str = "nano_3_0"
    ip_address_type: str = "dualstack"  # dualstack | ipv4 | ipv6
    count: int = 1  # servers sharing the policy


@dataclass(frozen=True)
class LabSettings:
    """Config key `lab`: where the lab lives on this machine (lab target only)."""

    slot: int | None = None  # 0-15; picks address blocks so labs can coexist (None = auto)
    # A new lab server boots like a Lightsail instance over this many seconds (sshd late, on 22
    # with the image's key, then the first-boot step, cloud-init and the package lock); 0: ready at once.
    boot_seconds: int = 0


SCAN_MODES = ("full", "quick")  # every TCP port and the common UDP services | the policy's ports and a sample


@dataclass(frozen=True)
class Vantage:
    """Config key `verify.vantage`: a host outside firewall.adminCidrs, reached over SSH with its
    own pinned host key, from which the outside verification also probes (the "anyone else"
    rows, measured). Its private key is the secret `verify.vantage.privateKey`, never held here."""

    host: str  # an address or DNS name the deployer can SSH to
    user: str
    host_key: str  # its public host key, "ssh-ed25519 AAAA..." (`ssh-keyscan -t ed25519 HOST`)
    port: int = 22
    scan: str = "full"  # nmap runs there: full is polite from a host of your own


@dataclass(frozen=True)
class VerifySettings:
    """Config key `verify`: how the outside verification probes."""

    # From the deployer's own link. None: full in the lab (the whole TCP port space), quick for
    # Lightsail (a full scan of a cloud address from your own line is impolite, and slow).
    scan: str | None = None
    vantage: Vantage | None = None
    # A fleet's full scans: `split` among its servers (each port once per fleet, every rule edge
    # on every server; scan_share.py), or `every` port of every server.
    fleet_scan: str = "split"

    def deployer_scan(self, target: str) -> str:
        return self.scan or ("full" if target == "lab" else "quick")


@dataclass(frozen=True)
class StackSettings:
    """The whole validated stack config."""

    target: str
    firewall: FirewallPolicy
    server: ServerSettings = field(default_factory=ServerSettings)
    lab: LabSettings = field(default_factory=LabSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)
