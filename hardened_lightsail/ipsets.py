"""Renders the blocklist as an `ipset restore` file: a hash:net set per family, so a packet costs
one hash lookup whether the list holds 10 or 100,000 networks (one rule per CIDR would not)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from .iptables_rules import Ruleset
from .networks import cidr_text


def ipset_restore_file(rulesets: list[Ruleset], written: Mapping[str, Sequence[str]] | None = None) -> str:
    """The sets the rulesets reference, in `ipset restore` format; empty when there are none.
    `written`: sets whose members are already text (set name -> the members' cidr_text, in order)."""
    lines = []
    for ruleset in rulesets:
        for name, members in sorted(ruleset.sets.items()):
            family = "inet" if ruleset.family == 4 else "inet6"
            # maxelem must hold the list; hashsize is only the starting bucket count.
            maxelem = max(65536, 1 << (len(members) - 1).bit_length())
            lines.append(f"create {name} hash:net family {family} hashsize 1024 maxelem {maxelem}")
            texts = (written or {}).get(name)
            if texts is None or len(texts) != len(members):
                texts = [cidr_text(member) for member in members]
            lines += [f"add {name} {text}" for text in texts]
    return "\n".join(lines) + "\n" if lines else ""
