"""Renders the policy into the host layer: one hardened iptables ruleset per address family.

The order is the point (see README, "Host rules"), all in HL-INPUT: loopback, conntrack (established first,
invalid dropped), TCP sanity, blocklist, scanner bans, SSH for admins, services, ICMP, the
port-scan trap, then a rate-limited log and the final drop. Nothing here touches a machine."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from .iptables_rules import NEVER, UNDER_LIMIT, Rule, Ruleset, quote
from .networks import Network, any_network, parse_cidr, split_families
from .policy import FirewallPolicy, PortRange

# Chain and set names are part of the contract with the payload and the lab (keep them short:
# ipset names are limited to 31 characters, recent lists to 200, chain names to 28). The
# project owns exactly its HL-* chains and the jumps into them (payload/hlfw-owned.sh): every
# other chain and rule on the host belongs to someone else (Docker, fail2ban, the operator).
CHAIN_INPUT = "HL-INPUT"
CHAIN_DOCKER, DOCKER_USER = "HL-DOCKER", "DOCKER-USER"
CHAIN_SSH, CHAIN_SCAN, CHAIN_BANNED, CHAIN_LOG_DROP = "HL-SSH", "HL-PORTSCAN", "HL-BANNED", "HL-LOG-DROP"
# Constant, so the jump stays where it is from one release to the next.
INPUT_JUMP_WHY = "hardened-lightsail: the host policy (HL-* chains)"
DOCKER_JUMP_WHY = "hardened-lightsail: the policy for Docker-published ports"


def blocklist_set(family: int) -> str:
    return f"hl-blocklist-v{family}"


def ban_list(family: int) -> str:
    return f"hl-banned-v{family}"


def hits_list(family: int) -> str:
    return f"hl-scanhits-v{family}"


def ssh_limit_table(family: int, per_minute: int, burst: int) -> str:
    """hashlimit table name, unique per setting: the kernel keeps a table's first settings while
    any rule names it, and iptables-restore adds new rules before dropping old ones, so a changed
    limit under the same name would silently keep the old rate (max 15 characters)."""
    digest = hashlib.sha1(f"{per_minute}/{burst}".encode()).hexdigest()[:6]
    return f"hl-ssh{family}-{digest}"


# Impossible TCP flag combinations: scanners (NULL, Xmas, FIN scans) and crafted packets.
BAD_TCP_FLAGS = (
    ("ALL", "NONE", "NULL scan: no flags at all"),
    ("ALL", "FIN,PSH,URG", "Xmas scan: FIN+PSH+URG"),
    ("ALL", "FIN", "FIN scan: FIN without ACK"),
    ("SYN,FIN", "SYN,FIN", "SYN+FIN never happens in real TCP"),
    ("SYN,RST", "SYN,RST", "SYN+RST never happens in real TCP"),
    ("FIN,RST", "FIN,RST", "FIN+RST never happens in real TCP"),
)


def host_ruleset(policy: FirewallPolicy, family: int) -> Ruleset:
    """The filter table for IPv4 (`family=4`) or IPv6 (`family=6`)."""
    icmp = "icmp" if family == 4 else "ipv6-icmp"
    tool = f"ip{'6' if family == 6 else ''}tables-restore"
    # No built-in chain's policy is the project's: the final DROP is HL-INPUT's last rule, so a
    # flushed INPUT (`iptables -F INPUT`) loses only the jump and locks nobody out.
    rs = Ruleset(family=family, policies={})
    rs.header = [
        f"rules.v{family} - hardened-lightsail host firewall ({tool} --noflush format)",
        "The release hash is in the RELEASE file next to this one.",
        "Generated from the stack's firewall policy; do not edit on the server: change the",
        "policy and run `pulumi up` (edits here are replaced by the next release).",
        "Default: drop everything inbound, then open only what the policy names (HL-INPUT ends",
        "with the DROP; built-in policies are left alone, so a flushed INPUT locks nobody out).",
        "Only the HL-* chains and the jumps into them are the project's: loaded with --noflush,",
        "every other chain, rule and policy (Docker, fail2ban, ...) stays as it is.",
    ]
    admins, _ = _by_family(policy.admin_cidrs, family)
    blocked = policy.blocklist_v4 if family == 4 else policy.blocklist_v6  # sorted once per policy
    rs.chains = [CHAIN_INPUT, CHAIN_SSH, CHAIN_LOG_DROP] + ([CHAIN_BANNED, CHAIN_SCAN] if policy.port_scan.enabled else [])

    rs.section("loopback")
    rs.add(Rule(CHAIN_INPUT, "ACCEPT", "loopback: local programs talk to each other", in_interface="lo"))
    if blocked:
        rs.section("blocklist first: one ipset lookup per packet however long the list; it also cuts "
                   "connections that were open before the source was listed")
        rs.sets[blocklist_set(family)] = blocked  # the policy's own list: its index and text are shared
        rs.add(Rule(CHAIN_INPUT, "DROP", "firewall.blocklist: these sources get nothing at all",
                    source_set=blocklist_set(family)))

    rs.section("spoofed loopback" + (", IPv6 control traffic" if family == 6 else "") + ", connection tracking")
    if family == 4:
        rs.add(Rule(CHAIN_INPUT, "DROP", "127.0.0.0/8 arriving from outside is spoofed",
                    source=_net("127.0.0.0/8"), not_in_interface="lo"))
    else:
        rs.add(Rule(CHAIN_INPUT, "DROP", "::1 arriving from outside is spoofed",
                    source=_net("::1/128"), not_in_interface="lo"))
        rs.add(Rule(CHAIN_INPUT, "DROP", "type 0 routing headers (RH0) are deprecated and abused",
                    matches=("-m", "rt", "--rt-type", "0"), new_connections=False))
        _ipv6_control(rs, icmp)
    if policy.ping:
        # Before conntrack: every echo request of one ping session after the first is
        # ESTABLISHED, so a limit placed after the ESTABLISHED accept would never see a flood.
        rs.section("ping (firewall.ping), rate-limited before conntrack so a flood is limited too")
        type_flag = "--icmp-type" if family == 4 else "--icmpv6-type"
        rs.add(Rule(CHAIN_INPUT, "ACCEPT", f"ping: at most {policy.ping_per_second}/s echo requests",
                    protocol=icmp,
                    matches=(type_flag, "echo-request", "-m", "limit", "--limit", f"{policy.ping_per_second}/sec",
                             "--limit-burst", str(policy.ping_per_second * 2))))
        rs.add(Rule(CHAIN_INPUT, "DROP", "echo requests over the limit", protocol=icmp,
                    matches=(type_flag, "echo-request"), steady_state=NEVER))
        rs.section("connection tracking")
    rs.add(Rule(CHAIN_INPUT, "ACCEPT", "replies and ongoing connections (early: most packets are these)",
                matches=("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED"), new_connections=False))
    rs.add(Rule(CHAIN_INPUT, "DROP", "packets conntrack can't place in any connection",
                matches=("-m", "conntrack", "--ctstate", "INVALID"), new_connections=False))

    rs.section("TCP sanity: impossible flags and new connections that don't start with SYN")
    for mask, flags, why in BAD_TCP_FLAGS:
        rs.add(Rule(CHAIN_INPUT, "DROP", why, protocol="tcp",
                    matches=("--tcp-flags", mask, flags), new_connections=False))
    rs.add(Rule(CHAIN_INPUT, "DROP", "a new TCP connection must start with SYN", protocol="tcp",
                matches=("!", "--syn", "-m", "conntrack", "--ctstate", "NEW"), new_connections=False))

    if policy.port_scan.enabled:
        # Admins skip the ban check: a source that became an admin after being banned (or an
        # admin caught during a lock-out drill) must get SSH back as soon as the rules say so.
        rs.section("port-scan bans (firewall.portScan; admin CIDRs are never banned)")
        rs.add(Rule(CHAIN_INPUT, CHAIN_BANNED, "new packets from banned scanners are dropped (admins exempt)"))
        for admin in admins:
            rs.add(Rule(CHAIN_BANNED, "RETURN", f"admin {admin} is never banned", source=admin))
        rs.add(Rule(CHAIN_BANNED, "DROP", f"banned scanner: dropped for {policy.port_scan.ban_seconds} s after its last packet",
                    matches=("-m", "recent", "--name", ban_list(family), "--update",
                             "--seconds", str(policy.port_scan.ban_seconds)),
                    steady_state=NEVER))

    rs.section(f"SSH on tcp/{policy.ssh_port}: only from firewall.adminCidrs, new connections rate-limited")
    rs.add(Rule(CHAIN_INPUT, CHAIN_SSH, "all new SSH connection attempts go through the admin check",
                protocol="tcp", dports=_port(policy.ssh_port),
                matches=("-m", "conntrack", "--ctstate", "NEW")))
    limit = policy.ssh_rate_limit
    for admin in admins:
        rs.add(Rule(CHAIN_SSH, "ACCEPT",
                    f"admin {admin}: at most {limit.per_minute}/min new SSH connections per source",
                    source=admin,
                    matches=("-m", "hashlimit", "--hashlimit-upto", f"{limit.per_minute}/min",
                             "--hashlimit-burst", str(limit.burst), "--hashlimit-mode", "srcip",
                             "--hashlimit-name", ssh_limit_table(family, limit.per_minute, limit.burst)),
                    steady_state=UNDER_LIMIT))
    for admin in admins:
        rs.add(Rule(CHAIN_SSH, CHAIN_LOG_DROP, f"admin {admin} over the SSH rate limit: drop, no ban",
                    source=admin))
    rs.add(Rule(CHAIN_SSH, "RETURN", "not an admin: SSH is closed for this source (port-scan trap next)"))

    rs.section("services (firewall.services): each port only from its sources")
    for service in policy.services:
        for source in _by_family(service.sources, family)[0]:
            rs.add(Rule(CHAIN_INPUT, "ACCEPT", f"service {service.name}: {service.protocol}/{service.ports} from {source}",
                        protocol=service.protocol, dports=service.ports, source=_none_if_any(source),
                        matches=("-m", "conntrack", "--ctstate", "NEW")))

    if policy.port_scan.enabled:
        _port_scan_trap(rs, policy, admins, family)

    rs.section("log (rate-limited) and drop everything else")
    rs.add(Rule(CHAIN_INPUT, CHAIN_LOG_DROP, "whatever no rule above accepted"))
    rs.add(Rule(CHAIN_LOG_DROP, "LOG", "kernel log line for the operator (journalctl -k | grep the prefix)",
                matches=("-m", "limit", "--limit", f"{policy.drop_log.per_minute}/min",
                         "--limit-burst", str(policy.drop_log.burst)),
                target_args=("--log-prefix", quote(policy.drop_log.prefix), "--log-level", "4")))
    rs.add(Rule(CHAIN_LOG_DROP, "DROP", "dropped (logged above, at most "
                                        f"{policy.drop_log.per_minute} lines/min)"))
    if policy.docker != "off":
        _docker_published_ports(rs, policy, admins, blocked, family)

    rs.section("the project's one rule in INPUT: every packet goes through HL-INPUT (appended, so rules "
               "other tools put first, e.g. fail2ban's bans, still come first)")
    rs.add(Rule("INPUT", CHAIN_INPUT, INPUT_JUMP_WHY))
    return rs


def _docker_published_ports(rs: Ruleset, policy: FirewallPolicy, admins: list[Network], blocked: Sequence[Network],
                            family: int) -> None:
    """Published container ports arrive by nat PREROUTING (DNAT) and FORWARD, never INPUT: Docker
    hands them to DOCKER-USER first. There the published (original) port is in conntrack, the
    packet itself already carries the container's."""
    rs.chains.append(CHAIN_DOCKER)
    rs.section("Docker-published ports (firewall.docker): the same policy for traffic Docker forwards "
               "to its containers (DOCKER-USER -> HL-DOCKER)")
    rs.add(Rule(CHAIN_DOCKER, "RETURN", "replies and ongoing connections: Docker's own rules decide",
                matches=("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"), new_connections=False))
    rs.add(Rule(CHAIN_DOCKER, "RETURN", "not to a published port (container egress, container to container)",
                matches=("-m", "conntrack", "!", "--ctstate", "DNAT"), new_connections=False))
    if blocked:
        rs.add(Rule(CHAIN_DOCKER, "DROP", "firewall.blocklist: these sources get no container either",
                    source_set=blocklist_set(family)))
    if policy.port_scan.enabled:
        rs.add(Rule(CHAIN_DOCKER, CHAIN_BANNED, "banned scanners get no container either"))
    for admin in admins:
        rs.add(Rule(CHAIN_DOCKER, "RETURN", f"admin {admin}: a published SSH port ({policy.ssh_port})",
                    protocol="tcp", source=admin,
                    matches=("-m", "conntrack", "--ctorigdstport", str(policy.ssh_port))))
    for service in policy.services:
        for source in _by_family(service.sources, family)[0]:
            rs.add(Rule(CHAIN_DOCKER, "RETURN",
                        f"service {service.name}: published {service.protocol}/{service.ports} from {source}",
                        protocol=service.protocol, source=_none_if_any(source),
                        matches=("-m", "conntrack", "--ctorigdstport", service.ports.iptables)))
    rs.add(Rule(CHAIN_DOCKER, CHAIN_LOG_DROP, "any other published port: filtered from outside"))
    if policy.docker == "on":
        rs.ensured.append(DOCKER_USER)
        rs.add(Rule(DOCKER_USER, CHAIN_DOCKER, DOCKER_JUMP_WHY))


def docker_hook_file(family: int) -> str:
    """firewall.docker: auto ships the jump apart (docker-hook.vN): the payload adds it only
    where Docker's chains are on the host when it applies."""
    return "\n".join([
        f"# docker-hook.v{family} - hardened-lightsail: loaded with rules.v{family} where Docker runs",
        "*filter", f":{DOCKER_USER} - [0:0]",
        Rule(DOCKER_USER, CHAIN_DOCKER, DOCKER_JUMP_WHY).line(), "COMMIT", ""])


def _ipv6_control(rs: Ruleset, icmp: str) -> None:
    """ICMPv6 that IPv6 cannot work without (RFC 4890), accepted before conntrack sees it."""
    for kind in ("router-solicitation", "router-advertisement",
                 "neighbour-solicitation", "neighbour-advertisement"):
        rs.add(Rule(CHAIN_INPUT, "ACCEPT", f"neighbour discovery ({kind}); hop limit 255 proves it is on-link",
                    protocol=icmp, matches=("--icmpv6-type", kind, "-m", "hl", "--hl-eq", "255"),
                    new_connections=False))
    for kind in ("destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem"):
        rs.add(Rule(CHAIN_INPUT, "ACCEPT", f"{kind}: path MTU discovery and error reporting need it",
                    protocol=icmp, matches=("--icmpv6-type", kind), new_connections=False))
    for kind in ("130", "131", "132", "143"):
        rs.add(Rule(CHAIN_INPUT, "ACCEPT", f"multicast listener discovery (type {kind}) from link-local only",
                    protocol=icmp, source=_net("fe80::/10"),
                    matches=("--icmpv6-type", kind, "-m", "hl", "--hl-eq", "1"), new_connections=False))
    # The client asks ff02::1:2 and the server answers from its link-local address: conntrack
    # never pairs the two, so without this the reply is NEW, dropped, and counted as a scan.
    # Link-local on both ends: nothing beyond the link can send it (not an exposed port).
    rs.add(Rule(CHAIN_INPUT, "ACCEPT", "DHCPv6 server replies to this host (its lease and renewals)",
                protocol="udp", source=_net("fe80::/10"),
                matches=("-d", "fe80::/10", "--sport", "547", "--dport", "546"), new_connections=False))


def _port_scan_trap(rs: Ruleset, policy: FirewallPolicy, admins: list[Network], family: int) -> None:
    """New TCP/UDP that reached this point hit a port that is closed for its source: count it."""
    trap = policy.port_scan
    rs.section(f"port-scan trap: {trap.threshold} closed-port hits in {trap.window_seconds} s "
               f"ban the source for {trap.ban_seconds} s")
    rs.add(Rule(CHAIN_INPUT, CHAIN_SCAN, "new TCP connection to a port closed for this source", protocol="tcp",
                matches=("--syn",)))
    rs.add(Rule(CHAIN_INPUT, CHAIN_SCAN, "new UDP datagram to a port closed for this source", protocol="udp",
                matches=("-m", "conntrack", "--ctstate", "NEW")))
    for admin in admins:
        rs.add(Rule(CHAIN_SCAN, "RETURN", f"admin {admin} is never counted or banned", source=admin))
    rs.add(Rule(CHAIN_SCAN, "DROP", f"hit number {trap.threshold} within {trap.window_seconds} s: ban the source",
                matches=("-m", "recent", "--name", hits_list(family), "--set",
                         "-m", "recent", "--name", hits_list(family), "--rcheck", "--seconds",
                         str(trap.window_seconds), "--hitcount", str(trap.threshold),
                         "-m", "recent", "--name", ban_list(family), "--set"),
                steady_state=NEVER))
    rs.add(Rule(CHAIN_SCAN, "RETURN", "counted; not (yet) a scanner: logged and dropped below"))


def _by_family(networks: Iterable[Network], family: int) -> tuple[list[Network], list[Network]]:
    v4, v6 = split_families(networks)
    return (v4, v6) if family == 4 else (v6, v4)


def _none_if_any(network: Network) -> Network | None:
    """`-s 0.0.0.0/0` says nothing: leave it out so the rule reads as "from anywhere"."""
    return None if network == any_network(network.version) else network


def _net(text: str) -> Network:
    return parse_cidr(text)


def _port(number: int) -> PortRange:
    return PortRange(number, number)

