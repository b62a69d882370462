"""Answers "may source S open protocol/port P?" for each layer, from the rendered artifacts.

Semantics: a source network is allowed when the first rule that matches *every* address in it
accepts. Rules that match only part of it (a narrower carve-out) describe other sources and are
skipped; the lock-out check looks for partial overlaps separately. Conditional rules are taken in
their steady state: nobody is banned, rate limits are not exceeded."""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

from .iptables_rules import NEVER, TERMINAL, Rule, Ruleset
from .networks import Network, covers, parse_cidr


def _matches(rule: Rule, ruleset: Ruleset, protocol: str, port: Optional[int], source: Network,
             icmp_echo: bool = False) -> bool:
    if not rule.new_connections or rule.steady_state == NEVER or rule.in_interface:
        return False
    if rule.protocol is not None and rule.protocol != protocol:
        return False
    if rule.dports is not None and (port is None or not rule.dports.first <= port <= rule.dports.last):
        return False
    if rule.source is not None and not covers(rule.source, source):
        return False
    if rule.source_set is not None and not any(covers(member, source) for member in ruleset.sets.get(rule.source_set, ())):
        return False
    if rule.protocol in ("icmp", "ipv6-icmp") and ("echo-request" in rule.matches) != icmp_echo:
        return False
    return True


def _walk(ruleset: Ruleset, chain: str, probe: tuple, depth: int = 0) -> Optional[bool]:
    """True/False when a rule decides, None when the chain returns without deciding."""
    if depth > 8:
        raise ValueError(f"chain {chain}: jumps nest deeper than 8 (a loop?)")
    for rule in ruleset.chain_rules(chain):
        if not _matches(rule, ruleset, *probe):
            continue
        if rule.target == "ACCEPT":
            return True
        if rule.target in TERMINAL:
            return False
        if rule.target == "RETURN":
            return None
        if rule.target == "LOG":
            continue
        decision = _walk(ruleset, rule.target, probe, depth + 1)
        if decision is not None:
            return decision
    return None


def host_allows(ruleset: Ruleset, protocol: str, port: Optional[int], source: Network,
                icmp_echo: bool = False) -> bool:
    """Does the host ruleset accept a new connection (or a ping) from `source`?"""
    decision = _walk(ruleset, "INPUT", (protocol, port, source, icmp_echo))
    return decision if decision is not None else ruleset.policies.get("INPUT") == "ACCEPT"


@lru_cache(maxsize=65536)
def _cidr(text: str) -> Network:
    """port_infos hold CIDR strings; tables ask about thousands of rows, so parse each once."""
    return parse_cidr(text)


def cloud_allows(port_infos: list[dict], protocol: str, port: Optional[int], source: Network,
                 icmp_echo: bool = False) -> bool:
    """Does the Lightsail allow-list let `source` reach `protocol/port` (or ping)?"""
    for info in port_infos:
        cidrs = info.get("cidrs", []) if source.version == 4 else info.get("ipv6Cidrs", [])
        if not any(covers(_cidr(cidr), source) for cidr in cidrs):
            continue
        if info["protocol"] == "all":
            return True
        if icmp_echo:
            if (info["protocol"], info["fromPort"]) in (("icmp", 8), ("icmpv6", 128)):
                return True
            continue
        if info["protocol"] == protocol and port is not None and info["fromPort"] <= port <= info["toPort"]:
            return True
    return False
