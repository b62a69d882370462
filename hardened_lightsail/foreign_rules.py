"""Does another tool's rule in front of the project's jump change what the server exposes?

`hlfw drift` names every ACCEPT or DROP another tool put before `-j HL-INPUT` as a warning:
it may bypass the policy or cut off what the policy allows, or do neither (a DROP of a port the
policy closes anyway). This decides which, by evaluating the release's rules with and without
those rules in front, over every port and source either of them names."""
from __future__ import annotations

from .exposure import ExposureRow, exposure_rows, host_cell, ruleset_probes
from .saved_rules import parse_saved_ruleset


def _with_rules_in_front(release_text: str, rules: list[str]) -> str:
    """The release as a --noflush file, with `rules` (INPUT lines) first in INPUT."""
    lines = release_text.splitlines()
    # After the chain declarations of *filter: the release only appends to INPUT (its jump).
    start = lines.index("*filter") + 1
    while start < len(lines) and lines[start].startswith(":"):
        start += 1
    return "\n".join([*lines[:start], *rules, *lines[start:]]) + "\n"


def exposure_changes(release_rules: dict[int, str], foreign: dict[int, list[str]]) -> list[str]:
    """One line per exposure row the foreign INPUT rules change, naming the rules; [] when they
    change nothing. `release_rules`: family -> the release's rules.vN; `foreign`: family -> the
    other tools' `-A INPUT ...` lines in front of the project's jump, in order."""
    changes = []
    for family, rules in foreign.items():
        if not rules or family not in release_rules:
            continue
        ours = parse_saved_ruleset(release_rules[family], family, noflush=True, line_numbers=False)
        theirs = parse_saved_ruleset(_with_rules_in_front(release_rules[family], rules), family, noflush=True,
                                     line_numbers=False)
        probes = ruleset_probes([theirs])
        before = _by_row(exposure_rows(probes, [ours] if family == 4 else [None, ours]))
        after = _by_row(exposure_rows(probes, [theirs] if family == 4 else [None, theirs]))
        changed = [f"{key} {before[key]} -> {after[key]}" for key in before if after.get(key) != before[key]]
        if changed:
            changes.append(f"rules of another tool in front of the project's jump change IPv{family} exposure: "
                           f"{'; '.join(changed[:4])}{' …' if len(changed) > 4 else ''} ({' | '.join(rules)})")
    return changes


def _by_row(rows: list[ExposureRow]) -> dict[str, str]:
    return {f"{row.port} from {row.source}": host_cell(row) for row in rows}
