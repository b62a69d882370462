"""A small model of iptables rules: the host renderer builds it, the analysis reads it, and it
prints itself in `iptables-restore` format, so what is checked is exactly what is shipped."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .networks import Network
from .policy import PortRange

# How a conditional rule behaves in the steady state the analysis reasons about.
ALWAYS, UNDER_LIMIT, NEVER = "always", "under-limit", "never"
TERMINAL = ("ACCEPT", "DROP", "REJECT")


@dataclass(frozen=True)
class Rule:
    chain: str
    target: str  # ACCEPT, DROP, RETURN, LOG or a user chain
    why: str  # one line for the operator: printed above the rule and kept as -m comment
    protocol: str | None = None
    source: Network | None = None
    source_set: str | None = None  # ipset name (members known to the analysis via Ruleset.sets)
    dports: PortRange | None = None
    in_interface: str | None = None
    not_in_interface: str | None = None
    matches: tuple[str, ...] = ()  # further match arguments, verbatim
    target_args: tuple[str, ...] = ()
    # False for rules that can't decide a clean new connection attempt (state, flag checks):
    # the analysis skips them when it asks "who may open port P".
    new_connections: bool = True
    steady_state: str = ALWAYS  # NEVER: only matches banned/over-limit sources; UNDER_LIMIT: rate-limited

    def args(self) -> list[str]:
        parts = ["-A", self.chain]
        if self.in_interface:
            parts += ["-i", self.in_interface]
        if self.not_in_interface:
            parts += ["!", "-i", self.not_in_interface]
        if self.source is not None:
            parts += ["-s", str(self.source)]
        if self.protocol:
            parts += ["-p", self.protocol]
        if self.dports is not None:
            parts += ["--dport", self.dports.iptables]
        if self.source_set:
            parts += ["-m", "set", "--match-set", self.source_set, "src"]
        parts += list(self.matches)
        if self.why:
            parts += ["-m", "comment", "--comment", quote(self.why[:250])]
        parts += ["-j", self.target, *self.target_args]
        return parts

    def line(self) -> str:
        return " ".join(self.args())


@dataclass
class Ruleset:
    """One family's filter table: chain policies, user chains, rules in order, ipset members."""

    family: int
    policies: dict[str, str]  # built-in chain -> policy
    chains: list[str] = field(default_factory=list)  # user chains, in declaration order
    # Other tools' chains a jump of ours goes into (DOCKER-USER): declared so the load makes
    # them if missing; the payload never flushes one that exists.
    ensured: list[str] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    sets: dict[str, Sequence[Network]] = field(default_factory=dict)  # a policy's: NetworkLists
    header: list[str] = field(default_factory=list)
    sections: dict[int, str] = field(default_factory=dict)  # rule index -> section heading

    def add(self, rule: Rule) -> None:
        self.rules.append(rule)

    def section(self, heading: str) -> None:
        """Start a commented section; the heading is printed before the next rule."""
        self.sections[len(self.rules)] = heading

    def chain_rules(self, chain: str) -> list[Rule]:
        return [rule for rule in self.rules if rule.chain == chain]

    def render(self) -> str:
        """The `iptables-restore` file: comments explain each group so `cat rules.v4` reads."""
        out = [f"# {line}" if line else "#" for line in self.header]
        out += ["*filter"]
        out += [f":{chain} {policy} [0:0]" for chain, policy in self.policies.items()]
        out += [f":{chain} - [0:0]" for chain in self.chains + self.ensured]
        for index, rule in enumerate(self.rules):
            if index in self.sections:
                out += ["", f"# --- {self.sections[index]}"]
            out.append(rule.line())  # the reason travels as -m comment, visible in `iptables -S`
        out += ["", "COMMIT", ""]
        return "\n".join(out)


def quote(text: str) -> str:
    """One iptables-restore argument in double quotes (no quote or backslash can break out)."""
    return '"' + text.replace("\\", "").replace('"', "'") + '"'
