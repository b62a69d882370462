"""The lab's stand-in for the Lightsail cloud firewall: reads `cloud-ports.json` (the list given
to `lightsail.InstancePublicPorts.port_infos`) and enforces it on the edge router.

Semantics, as Lightsail applies them:
- stateful: replies and related ICMP (ESTABLISHED,RELATED) always pass, both ways;
- a packet towards the server passes only if some entry allows its protocol, port and source:
  `cidrs` are IPv4 sources, `ipv6Cidrs` IPv6 sources; tcp/udp use fromPort..toPort; icmp and
  icmpv6 use fromPort as the type and toPort as the code (-1: any); "all" is every protocol;
- everything else towards the server is dropped silently (a probe sees "filtered");
- the server's own outbound traffic is not filtered.
`cidrListAliases` ("lightsail-connect", the console's browser SSH) has no lab equivalent and
opens nothing here. No file, or an empty one, is Lightsail's default for a new instance:
tcp 22 and 80 open to 0.0.0.0/0 and ::/0. `[]` is an instance with every port closed.
An entry with no source at all is rejected: AWS would fill in a default of its own."""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from .errors import LabError
from .netns import in_namespace
from .topology import EDGE, LabTopology

PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6", "all")
KEYS = ("protocol", "fromPort", "toPort", "cidrs", "ipv6Cidrs", "cidrListAliases")
ANY_PORT = -1

# What Lightsail opens on a new instance when nobody set its ports.
LIGHTSAIL_DEFAULT_PORTS = [
    {"protocol": "tcp", "fromPort": port, "toPort": port, "cidrs": ["0.0.0.0/0"],
     "ipv6Cidrs": ["::/0"], "cidrListAliases": []}
    for port in (22, 80)
]


def _problem(where: str, message: str) -> LabError:
    return LabError(f"{where}: {message}")


def _int_field(entry: dict, key: str, where: str, low: int, high: int) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _problem(f"{where}.{key}", f"{value!r} is not a whole number from {low} to {high}")
    return value


def _cidr_list(entry: dict, key: str, where: str, version: int) -> list[str]:
    values = entry.get(key, [])
    if not isinstance(values, list):
        raise _problem(f"{where}.{key}", f"{values!r} is not a list of CIDRs")
    networks = []
    for index, text in enumerate(values):
        try:
            network = ipaddress.ip_network(text, strict=False) if isinstance(text, str) else None
        except ValueError:
            network = None
        if network is None or network.version != version:
            family = "IPv4" if version == 4 else "IPv6"
            raise _problem(f"{where}.{key}[{index}]", f"{text!r} is not an {family} CIDR")
        networks.append(str(network))
    return networks


def validate_port_infos(data, source: str = "cloud-ports.json") -> list[dict]:
    """Check the list entry by entry; every problem names the entry and the key."""
    if not isinstance(data, list):
        raise LabError(f"{source}: expected a JSON list of port infos, got {type(data).__name__}")
    infos = []
    for index, entry in enumerate(data):
        where = f"{source}[{index}]"
        if not isinstance(entry, dict):
            raise _problem(where, f"{entry!r} is not an object with keys {', '.join(KEYS)}")
        unknown = sorted(set(entry) - set(KEYS))
        if unknown:
            raise _problem(f"{where}.{unknown[0]}", f"unknown key (expected {', '.join(KEYS)})")
        protocol = entry.get("protocol")
        if protocol not in PROTOCOLS:
            raise _problem(f"{where}.protocol", f"{protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if protocol in ("tcp", "udp", "all"):
            low, high = 0, 65535
        else:
            low, high = ANY_PORT, 255
        from_port = _int_field(entry, "fromPort", where, low, high)
        to_port = _int_field(entry, "toPort", where, low, high)
        if protocol in ("tcp", "udp") and from_port > to_port:
            raise _problem(f"{where}.toPort", f"{to_port} is below fromPort {from_port}")
        aliases = entry.get("cidrListAliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise _problem(f"{where}.cidrListAliases", f"{aliases!r} is not a list of names")
        cidrs = _cidr_list(entry, "cidrs", where, 4)
        ipv6_cidrs = _cidr_list(entry, "ipv6Cidrs", where, 6)
        if not (cidrs or ipv6_cidrs or aliases):
            raise _problem(where, "no cidrs, ipv6Cidrs or cidrListAliases: list the sources "
                                  "explicitly (AWS would pick a default)")
        infos.append({"protocol": protocol, "fromPort": from_port, "toPort": to_port,
                      "cidrs": cidrs, "ipv6Cidrs": ipv6_cidrs, "cidrListAliases": aliases})
    return infos


def _file_text(path: str | Path | None) -> str | None:
    """The file's text, or None when there is no file or it is blank (Lightsail's default)."""
    if path is None or not Path(path).exists():
        return None
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise LabError(f"cannot read {path}: {error.strerror}") from None
    return text if text.strip() else None


def read_port_infos(path: str | Path | None) -> list[dict]:
    """The port infos in `path`; Lightsail's default when there is no file or it is empty."""
    text = _file_text(path)
    if text is None:
        return [dict(info) for info in LIGHTSAIL_DEFAULT_PORTS]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise LabError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    return validate_port_infos(data, str(path))


def _match_args(info: dict, family: int) -> list[str] | None:
    """iptables match arguments for one entry in one family; None when it doesn't apply."""
    protocol, low, high = info["protocol"], info["fromPort"], info["toPort"]
    if protocol in ("tcp", "udp"):
        return ["-p", protocol, "--dport", str(low) if low == high else f"{low}:{high}"]
    if protocol == "all":
        return []
    if (protocol == "icmp") != (family == 4):
        return None  # icmp is IPv4 only, icmpv6 IPv6 only
    name, option = ("icmp", "--icmp-type") if family == 4 else ("ipv6-icmp", "--icmpv6-type")
    if low == ANY_PORT:
        return ["-p", name]
    return ["-p", name, option, str(low) if high == ANY_PORT else f"{low}/{high}"]


def _describe(info: dict) -> str:
    protocol, low, high = info["protocol"], info["fromPort"], info["toPort"]
    if protocol in ("icmp", "icmpv6"):
        return f"{protocol} type {low} code {high}"
    return protocol if protocol == "all" else f"{protocol} {low}" + ("" if low == high else f"-{high}")


def describe_open_ports(port_infos: list[dict]) -> str:
    """One line saying what the layer lets in, e.g. "tcp 22 from 192.0.2.0/24, 2001:db8:a::/48;
    tcp 80 from anyone" (for messages: what is open now)."""
    parts = []
    for info in port_infos:
        sources = [*info["cidrs"], *info["ipv6Cidrs"]]
        if "0.0.0.0/0" in sources and "::/0" in sources:
            sources = ["anyone"] + [s for s in sources if s not in ("0.0.0.0/0", "::/0")]
        parts.append(f"{_describe(info)} from {', '.join(sources) or 'nobody'}")
    return "; ".join(parts) or "nothing (every port closed)"


def render_edge_rules(lab: LabTopology, port_infos: list[dict], family: int, source: str) -> str:
    """The edge's whole filter table for one family, in iptables-restore format."""
    server_port = lab.segments["server"].edge.interface  # the servers' bridge
    uplink_port = lab.segments["uplink"].edge.interface
    key = "cidrs" if family == 4 else "ipv6Cidrs"
    lines = [
        f"# Lab {lab.name} (slot {lab.slot}) edge router: the Lightsail cloud firewall, from {source}.",
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":lightsail - [0:0]",
        "# Everything routed towards the servers passes the Lightsail allow-list.",
        f"-A FORWARD -o {server_port} -j lightsail",
        "# Only the servers may reach the deployer uplink: the root namespace would answer anyone",
        "# else through the machine's real default route.",
        f'-A FORWARD -o {uplink_port} ! -i {server_port} -m comment --comment "lab: uplink is for the servers only" -j DROP',
        "# Lightsail is stateful: replies and related ICMP pass whatever the allow-list says.",
        '-A lightsail -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment "lightsail: stateful" -j ACCEPT',
    ]
    for index, info in enumerate(port_infos):
        match = _match_args(info, family)
        sources = info[key]
        if match is None or not sources:
            continue
        lines.append(f"# port info [{index}]: {_describe(info)} from {', '.join(sources)}")
        for cidr in sources:
            comment = f'"lightsail [{index}]: {_describe(info)}"'
            lines.append(" ".join(["-A", "lightsail", "-s", cidr, *match, "-m", "comment", "--comment",
                                   comment, "-j", "ACCEPT"]))
    lines += [
        "# Not in the allow-list: dropped silently, as Lightsail does.",
        '-A lightsail -m comment --comment "lightsail: not allowed" -j DROP',
        "COMMIT",
        "",
    ]
    return "\n".join(lines)


def load_cloud_layer(lab: LabTopology, path: str | Path | None = None,
                     keep_previous: bool = True) -> list[dict]:
    """Replace the edge's rules with the ones for `path` (None: Lightsail's default).

    Each family is one `iptables-restore` (atomic); both are tested before either is loaded, so
    a bad file leaves the old rules in place. The layer replaced is kept as the one to go back to
    (edge_follower), unless `keep_previous` is false (the follower's own returns). Returns the
    port infos now enforced."""
    port_infos = read_port_infos(path)
    source = "Lightsail's default (tcp 22 and 80 open to all)" if _file_text(path) is None else str(path)
    edge_ns = lab.namespace(EDGE)
    rendered = {family: render_edge_rules(lab, port_infos, family, source) for family in (4, 6)}
    restore = {4: "iptables-restore", 6: "ip6tables-restore"}
    for family, text in rendered.items():
        in_namespace(edge_ns, [restore[family], "--test"], input=text)
    lab.layout.edge_dir.mkdir(parents=True, exist_ok=True)
    for family, text in rendered.items():
        in_namespace(edge_ns, [restore[family]], input=text)
        (lab.layout.edge_dir / f"rules.v{family}").write_text(text)
    in_force, content = lab.layout.edge_dir / "cloud-ports.json", json.dumps(port_infos, indent=2) + "\n"
    if keep_previous and in_force.exists() and in_force.read_text() != content:
        # The layer to go back to if the host rolls back a release it never confirmed (edge_follower).
        in_force.replace(lab.layout.edge_dir / "previous-cloud-ports.json")
    in_force.write_text(content)
    return port_infos
