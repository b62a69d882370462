"""Renders the policy into the Lightsail cloud firewall: `InstancePublicPorts.port_infos`.

The list is given to the provider exactly as returned (camelCase keys, as in `cloud-ports.json`);
order is stable so an unchanged policy shows no diff in `pulumi preview`."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .networks import ANY_V4, ANY_V6, Network, split_families
from .policy import FirewallPolicy

# Ping is ICMP type 8 code 0 / ICMPv6 type 128 code 0: the provider rejects -1 ("any code").
ICMP_ECHO = ("icmp", 8, 0)
ICMPV6_ECHO = ("icmpv6", 128, 0)
_PROTOCOL_ORDER = {"tcp": 0, "udp": 1, "icmp": 2, "icmpv6": 3}


def _port_info(protocol: str, from_port: int, to_port: int, networks: Iterable[Network]) -> dict[str, Any]:
    v4, v6 = split_families(networks)
    # Both lists are always explicit: a missing list would let AWS fill in its own default.
    return {
        "protocol": protocol,
        "fromPort": from_port,
        "toPort": to_port,
        "cidrs": [str(n) for n in v4],
        "ipv6Cidrs": [str(n) for n in v6],
        "cidrListAliases": [],
    }


def cloud_port_infos(policy: FirewallPolicy) -> list[dict[str, Any]]:
    """The complete allow-list for the cloud layer (PutInstancePublicPorts replaces the whole set)."""
    ssh_sources = policy.admin_cidrs
    if policy.allow_lockout:
        # A lock-out drill exercises the HOST layer's rollback. The cloud firewall has no
        # rollback, so it keeps SSH open for the known deployer addresses: the drill must end
        # with the deployer able to get back in.
        ssh_sources = (*policy.admin_cidrs, *policy.deployer_addresses)
    infos = [_port_info("tcp", policy.ssh_port, policy.ssh_port, ssh_sources)]
    for service in policy.services:
        infos.append(_port_info(service.protocol, service.ports.first, service.ports.last, service.sources))
    if policy.ping:
        infos.append(_port_info(*ICMP_ECHO, [ANY_V4]))
        infos.append(_port_info(*ICMPV6_ECHO, [ANY_V6]))
    # A port_info with no CIDR in either family would be filled in by AWS: leave it out instead.
    infos = [info for info in infos if info["cidrs"] or info["ipv6Cidrs"]]
    return sorted(infos, key=lambda i: (_PROTOCOL_ORDER[i["protocol"]], i["fromPort"], i["toPort"]))


# cloud-ports.json key -> the Python provider SDK's name for it (both ways, one table).
_PROVIDER_NAMES = {"fromPort": "from_port", "toPort": "to_port", "ipv6Cidrs": "ipv6_cidrs",
                   "cidrListAliases": "cidr_list_aliases"}


def to_provider_args(port_infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same list with the snake_case keys the Python provider SDK takes."""
    return [{_PROVIDER_NAMES.get(key, key): value for key, value in info.items()} for info in port_infos]


def from_provider_outputs(port_infos: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The resource's `port_infos` output (what AWS stores, as the provider read it back) in the
    cloud-ports.json shape; a list the provider left out is empty."""
    camel = {snake: key for key, snake in _PROVIDER_NAMES.items()}
    infos = []
    for info in port_infos or []:
        named = {camel.get(key, key): value for key, value in dict(info).items()}
        infos.append({"protocol": named.get("protocol"), "fromPort": named.get("fromPort"),
                      "toPort": named.get("toPort"), "cidrs": list(named.get("cidrs") or []),
                      "ipv6Cidrs": list(named.get("ipv6Cidrs") or []),
                      "cidrListAliases": list(named.get("cidrListAliases") or [])})
    return infos
