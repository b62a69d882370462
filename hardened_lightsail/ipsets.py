"""Renders the blocklist as an `ipset restore` file: a hash:net set per family, so a packet costs
one hash lookup whether the list holds 10 or 100,000 networks (one rule per CIDR would not)."""
from __future__ import annotations

from .iptables_rules import Ruleset
from .network_list import NetworkList


def ipset_restore_file(rulesets: list[Ruleset]) -> str:
    """The sets the rulesets reference, in `ipset restore` format; empty when there are none."""
    lines = []
    for ruleset in rulesets:
        for name, members in sorted(ruleset.sets.items()):
            family = "inet" if ruleset.family == 4 else "inet6"
            # maxelem must hold the list. hashsize is the starting bucket count: started at
            # ipset's default (1024), a long list makes the kernel rehash every member each time
            # it doubles while `ipset restore` fills it; one bucket per member from the start
            # skips that (a sixth of a 100,000-member restore). Short lists keep the default.
            fitted = 1 << (len(members) - 1).bit_length()
            maxelem, hashsize = max(65536, fitted), max(1024, fitted)
            lines.append(f"create {name} hash:net family {family} hashsize {hashsize} maxelem {maxelem}")
            if members:  # one join: a policy's list has its text already (NetworkList.texts)
                lines.append(f"add {name} " + f"\nadd {name} ".join(NetworkList.of(members).texts))
    return "\n".join(lines) + "\n" if lines else ""
