"""`fw diff --from-host`: what a stack's policy would open and close on a server that already
runs, compared with the rules it runs now (read off it with iptables-save), as markdown in the
shape of `fw diff`: so the first `pulumi up` on an existing server holds no surprise. Pure."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .exposure import ExposureRow, PortProbe, exposure_rows, host_cell, policy_probes, ruleset_probes
from .findings import ERROR, Finding
from .policy import FirewallPolicy
from .policy_diff import CLOSES, DEFAULT_MAX_CHARS, OPENS, bounded, findings_section, table_lines
from .release import Release
from .saved_rules import SavedRuleset

RANK = {"closed": 0, "partly open": 1, "open": 2}
COLUMNS = ("change", "port", "family", "source", "host now", "host after", "cloud after", "reachable after")


def _after_state(row: ExposureRow) -> str:
    if row.reachable:
        return "open"
    return "partly open" if row.host_partly and row.cloud else "closed"


@dataclass(frozen=True)
class HostRowChange:
    """One exposure row: the live host layer now, and both layers of the release after `up`."""

    now: ExposureRow
    after: ExposureRow

    @property
    def change(self) -> str:
        before, after = RANK[self.now.host_state], RANK[_after_state(self.after)]
        return OPENS if after > before else CLOSES if after < before else ""

    def cells(self) -> list[str]:
        row = self.after
        return [self.change, row.port, f"IPv{row.family}", row.source, host_cell(self.now), host_cell(row),
                "open" if row.cloud else "closed", "YES" if row.reachable else "no"]


def merged_probes(first: list[PortProbe], second: list[PortProbe]) -> list[PortProbe]:
    """One probe per port (range), with the sources either list names for it."""
    merged: dict[tuple[Any, ...], PortProbe] = {}
    for probe in [*first, *second]:
        key = (probe.protocol, probe.first, probe.last)
        known = merged.get(key)
        merged[key] = probe if known is None else PortProbe(
            known.label, known.protocol, known.first, known.last, tuple(dict.fromkeys([*known.sources, *probe.sources])))
    return list(merged.values())


def compare_with_host(policy: FirewallPolicy, release: Release, live: tuple[SavedRuleset, SavedRuleset]) -> list[HostRowChange]:
    """Every row either side names, asked of the live rules and of the release alike."""
    probes = merged_probes(policy_probes(policy, release), ruleset_probes(live))
    now = {(r.port, r.family, r.source): r for r in exposure_rows(probes, live)}
    after = exposure_rows(probes, release.rulesets, release.port_infos)
    return [HostRowChange(now[(r.port, r.family, r.source)], r) for r in after]


def host_diff_markdown(stack: str, host: str, release: Release, changes: list[HostRowChange],
                       live_findings: list[Finding], policy_findings: list[Finding],
                       max_chars: int = DEFAULT_MAX_CHARS) -> str:
    opened = sum(c.change == OPENS for c in changes)
    closed = sum(c.change == CLOSES for c in changes)
    live_errors = sum(f.level == ERROR for f in live_findings)
    heading = "\n".join([
        f"### Firewall diff: `{host}` (live rules) → stack `{stack}`", "",
        f"What `pulumi up` of stack `{stack}` (release `{release.hash}`) would change on this server, compared with "
        "the rules it runs now (read with iptables-save and ip6tables-save; nothing was changed). The server's "
        "cloud firewall is not read: *after* includes the stack's cloud layer.", "",
        f"**{opened:,} opened, {closed:,} closed** · live rules: {live_errors} error(s), "
        f"{len(live_findings) - live_errors} warning(s) (`scripts/fw check --host {host}` lists them)"])
    tail = findings_section(policy_findings, max_chars // 4)
    budget = max_chars - len(heading) - len(tail) - 200
    changed = sorted((c for c in changes if c.change), key=lambda c: c.change != OPENS)
    unchanged = [c for c in changes if not c.change]
    parts = [heading]
    if changed:
        parts.append(bounded(table_lines(COLUMNS, [c.cells() for c in changed]), budget,
                             "changed rows (raise `--max-chars` to see them)"))
        budget -= len(parts[-1])
    else:
        parts.append("The exposure is the same: the policy keeps open exactly what the server opens now.")
    opening = f"<details><summary>Unchanged: {len(unchanged):,} rows</summary>\n\n"
    if unchanged and budget > len(opening) + 300:
        parts.append(opening + bounded(table_lines(COLUMNS[1:], [c.cells()[1:] for c in unchanged]),
                                       budget - len(opening) - 20, "unchanged rows") + "\n\n</details>")
    parts.append(tail)
    return "\n\n".join(parts) + "\n"
