"""Answers "may source S open protocol/port P?" for each layer, from the rendered artifacts or
from a ruleset read off a server.

Host layer: the rules are walked as the kernel would (INPUT, jumps, gotos, RETURN, the chain's
policy) for one probe: a new connection from `source` (see rule_conditions.Probe). A rule that
matches only some of the probe's packets (an interface, a source port, a condition the analysis
doesn't model) splits the walk; when the branches end differently the answer is PARTLY, naming
those rules. Conditional rules are taken in their steady state: nobody is banned, rate limits are
not exceeded. A policy's own rules are read back from their rendered text, so what is checked
is exactly what is shipped."""
from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .identity_cache import IdentityCache
from .iptables_rules import Ruleset
from .networks import Network, parse_cidr
from .rule_conditions import ALL, NONE, HostFacts, IpSet, Probe, conditions_match
from .saved_rules import BUILTIN_CHAINS, CONTINUING, SavedRule, SavedRuleset, parse_saved_ruleset

OPEN, CLOSED, PARTLY = "open", "closed", "partly"
_ACCEPT, _DROP, _UNKNOWN = "accept", "drop", "unknown"
MAX_JUMP_DEPTH = 16  # deeper than any real ruleset nests; deeper means a loop


@dataclass(frozen=True)
class HostVerdict:
    outcome: str  # OPEN, CLOSED or PARTLY
    because: tuple[SavedRule, ...] = ()  # for PARTLY: the rules that split the probe's packets
    accepted_by: tuple[SavedRule, ...] = ()  # ACCEPT rules some of the probe's packets end at


def evaluable(ruleset: Ruleset | SavedRuleset) -> SavedRuleset:
    """The rules as the analysis reads them: a policy's Ruleset is read back from its text
    (once per ruleset and content: tables ask thousands of questions of the same one)."""
    if isinstance(ruleset, SavedRuleset):
        return ruleset
    fingerprint = (tuple(map(id, ruleset.rules)), tuple(ruleset.policies.items()), tuple(ruleset.chains),
                   tuple((name, len(members)) for name, members in ruleset.sets.items()))
    cached = _READ_BACK.get(id(ruleset))
    if cached is not None and cached[0]() is ruleset and cached[1] == fingerprint:
        return cached[2]
    saved = _read_back(ruleset.render(), ruleset.family, tuple(sorted(ruleset.sets.items())))
    if len(_READ_BACK) > 64:
        _READ_BACK.clear()
    _READ_BACK[id(ruleset)] = (weakref.ref(ruleset), fingerprint, saved)
    return saved


_READ_BACK: dict[int, tuple[weakref.ref[Ruleset], tuple[Any, ...], SavedRuleset]] = {}  # id(ruleset) -> (weak reference, fingerprint, SavedRuleset)


# (text, family, (set name, id of its members)...) -> the rules read back. Keyed by the members'
# identity, not their value: hashing a set of 100,000 networks costs more than reading the rules
# back.
_READ_BACK_BY_TEXT: IdentityCache[SavedRuleset] = IdentityCache(32)


def _read_back(text: str, family: int, sets: tuple[tuple[str, Sequence[Network]], ...]) -> SavedRuleset:
    def read() -> SavedRuleset:
        ipsets = {name: IpSet(name, "hash:net", members) for name, members in sets}
        return parse_saved_ruleset(text, family, label=f"rules.v{family}", facts=HostFacts(sets=ipsets),
                                   line_numbers=False, noflush=True)

    key = (text, family, tuple((name, id(members)) for name, members in sets))
    return _READ_BACK_BY_TEXT.get(key, sets, read)


class _Walk:
    """One probe through one ruleset; each (chain, position, call stack) is explored once."""

    def __init__(self, ruleset: SavedRuleset, probe: Probe, start: str):
        self.ruleset, self.probe, self.start = ruleset, probe, start
        self.memo: dict[tuple[Any, ...], frozenset[str]] = {}
        self.because: dict[int, SavedRule] = {}
        self.accepted_by: dict[int, SavedRule] = {}

    def policy(self) -> frozenset[str]:
        return frozenset({_ACCEPT if self.ruleset.policies.get(self.start, "ACCEPT") == "ACCEPT" else _DROP})

    def from_rule(self, chain: str, position: int, stack: tuple[Any, ...]) -> frozenset[str]:
        key = (chain, position, stack)
        if key not in self.memo:
            self.memo[key] = frozenset({_UNKNOWN})  # a loop back here decides nothing
            self.memo[key] = self._from_rule(chain, position, stack)
        return self.memo[key]

    def _from_rule(self, chain: str, position: int, stack: tuple[Any, ...]) -> frozenset[str]:
        rules = self.ruleset.chain_rules(chain)
        for index in range(position, len(rules)):
            rule = rules[index]
            matched = conditions_match(rule.conditions, self.probe, self.ruleset.facts)
            if matched == NONE:
                continue
            taken = self.taken(rule, chain, index, stack)
            if taken is None:
                continue  # LOG and the like: the packet goes on either way
            if _UNKNOWN in taken and matched == ALL and rule.target not in self.ruleset.chains:
                self.because[rule.index] = rule
            if matched == ALL:
                return taken
            rest = self.from_rule(chain, index + 1, stack)
            if taken != rest:
                self.because[rule.index] = rule
            return taken | rest
        return self.chain_end(chain, stack)

    def taken(self, rule: SavedRule, chain: str, index: int, stack: tuple[Any, ...]) -> frozenset[str] | None:
        target = rule.target
        if target is None or target in CONTINUING:
            return None
        if target == "ACCEPT":
            self.accepted_by[rule.index] = rule
            return frozenset({_ACCEPT})
        if target in ("DROP", "REJECT"):
            return frozenset({_DROP})
        if target == "RETURN":
            return self.chain_end(chain, stack)
        if target in self.ruleset.chains:
            if rule.goto:
                return self.from_rule(target, 0, stack)
            if len(stack) >= MAX_JUMP_DEPTH:
                return frozenset({_UNKNOWN})
            return self.from_rule(target, 0, stack + ((chain, index + 1),))
        return frozenset({_UNKNOWN})

    def chain_end(self, chain: str, stack: tuple[Any, ...]) -> frozenset[str]:
        if chain in BUILTIN_CHAINS["filter"] or not stack:
            return self.policy()
        caller, resume = stack[-1]
        return self.from_rule(caller, resume, stack[:-1])


def host_verdict(ruleset: Ruleset | SavedRuleset, protocol: str, port: int | None, source: Network,
                 icmp_echo: bool = False, chain: str = "INPUT") -> HostVerdict:
    """What the host's INPUT chain (or FORWARD) does with a new connection (or a ping) from
    `source`."""
    saved = evaluable(ruleset)
    walk = _Walk(saved, Probe(protocol, port, source, icmp_echo), chain)
    outcomes = walk.from_rule(chain, 0, ())
    accepted = tuple(rule for _, rule in sorted(walk.accepted_by.items()))
    if outcomes == {_ACCEPT}:
        return HostVerdict(OPEN, accepted_by=accepted)
    if outcomes == {_DROP}:
        return HostVerdict(CLOSED)
    return HostVerdict(PARTLY, tuple(rule for _, rule in sorted(walk.because.items())), accepted)


def host_allows(ruleset: Ruleset | SavedRuleset, protocol: str, port: int | None, source: Network,
                icmp_echo: bool = False) -> bool:
    """Does the host ruleset accept every new connection (or ping) from `source`?"""
    return host_verdict(ruleset, protocol, port, source, icmp_echo).outcome == OPEN


@lru_cache(maxsize=65536)
def _span(text: str) -> tuple[int, int]:
    """port_infos hold CIDR strings; tables ask about thousands of rows, so parse each once into
    its first and last address as numbers."""
    network = parse_cidr(text)
    return int(network.network_address), int(network.broadcast_address)


def cloud_allows(port_infos: list[dict[str, Any]], protocol: str, port: int | None, source: Network,
                 icmp_echo: bool = False) -> bool:
    """Does the Lightsail allow-list let `source` reach `protocol/port` (or ping)?"""
    first, last = int(source.network_address), int(source.broadcast_address)
    for info in port_infos:
        cidrs = info.get("cidrs", []) if source.version == 4 else info.get("ipv6Cidrs", [])
        if not any(a <= first and last <= b for a, b in map(_span, cidrs)):
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
