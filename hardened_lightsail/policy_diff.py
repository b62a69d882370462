"""`fw diff`: what a change to a stack's policy opens and closes, per layer and family, as PR
markdown (stack file at a git ref vs the working tree, both rendered as `pulumi up` would)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import posixpath
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .analysis import ERROR, Finding, analyse
from .config import (
    ConfigError,
    FileReader,
    beside,
    firewall_config_values,
    settings_from_values,
    values_from_stack_file,
)
from .effective_settings import effective_settings
from .exposure import OTHER_PORTS, ExposureRow, exposure_table
from .network_list import NetworkList
from .networks import Network
from .policy import FirewallPolicy, PortRange, Service
from .release import Release, render_release

NO_CHANGE = "No firewall change"
# A GitHub comment holds 65,536 characters; the PR workflow adds the lab and preview sections.
DEFAULT_MAX_CHARS = 60_000
MIN_MAX_CHARS = 4_000  # below this even the summary and a few rows don't fit
SAMPLE_SIZE = 5  # blocklist CIDRs shown per family and direction; the rest are counted
FINDING_CHARS = 600  # a shadowing finding quotes two rule lines; longer ones are cut
OPENS, CLOSES = "🔓 opens", "🔒 closes"
LAYERS = ("cloud", "host")
# Every release carries these two, and they always change with the hash: listing them says nothing.
BOOKKEEPING_FILES = ("manifest.sha256", "RELEASE")
# Shown by the exposure table or the blocklist summary, so not repeated under "other settings".
SHOWN_ELSEWHERE = ("adminCidrs", "services", "blocklist")


@dataclass(frozen=True)
class Side:
    """One side of the comparison: where it was read from and what it renders to."""

    label: str  # e.g. "origin/main:Pulumi.dev.yaml", for messages
    policy: FirewallPolicy | None  # None: the stack file does not exist there (a new stack)
    release: Release | None

    @classmethod
    def rendered(cls, label: str, policy: FirewallPolicy | None) -> Side:
        return cls(label, policy, render_release(policy) if policy is not None else None)

    @property
    def hash(self) -> str | None:
        return self.release.hash if self.release else None


@dataclass(frozen=True)
class RowChange:
    """One exposure row (port x family x source) on both sides."""

    before: ExposureRow
    after: ExposureRow

    @property
    def change(self) -> str:
        """OPENS / CLOSES when reachability from outside changes; when only one layer moves (the
        other still blocks, so the layers now disagree) a warning naming it; "" when unchanged."""
        if self.before.reachable != self.after.reachable:
            return OPENS if self.after.reachable else CLOSES
        moved = [f"{layer} {'opens' if getattr(self.after, layer) else 'closes'}"
                 for layer in LAYERS if getattr(self.before, layer) != getattr(self.after, layer)]
        return f"⚠️ {', '.join(moved)}" if moved else ""


# --- comparison (pure)

def _probe_policy(base: FirewallPolicy, head: FirewallPolicy) -> FirewallPolicy:
    """A policy naming every port and source that either side names, to ask both releases about.

    Only what `exposure_table` reads matters (SSH port and admin CIDRs, services' protocol, ports
    and sources); service names are irrelevant. A base SSH port that the head moved away from
    is kept as a pseudo-service, so the old port shows as closing."""
    merged: dict[tuple[str, PortRange], set[Network]] = {}
    for service in (*head.services, *base.services):
        merged.setdefault((service.protocol, service.ports), set()).update(service.sources)
    if base.ssh_port != head.ssh_port:
        merged.setdefault(("tcp", PortRange(base.ssh_port, base.ssh_port)), set()).update(base.admin_cidrs)
    services = tuple(Service(name=f"probe-{index}", protocol=protocol, ports=ports, sources=tuple(sources))
                     for index, ((protocol, ports), sources) in enumerate(merged.items()))
    admins = tuple({*head.admin_cidrs, *base.admin_cidrs})
    return dataclasses.replace(head, admin_cidrs=admins, services=services)


def _closed(row: ExposureRow) -> ExposureRow:
    """The same row with both layers closed: how it looks where there is nothing."""
    return dataclasses.replace(row, cloud=False, host=False)


def compare_exposure(base: Side, head: Side) -> list[RowChange]:
    """Every row of either side, in the head's order (then rows only the base has).

    Both releases are asked about the same ports and sources (all that either side names), so a
    narrowed source reads "closes for anyone else" while the kept network stays unchanged,
    instead of one row removed and another added."""
    assert head.policy is not None and head.release is not None  # the head side always has its stack file
    if base.policy is None:
        changes = [RowChange(_closed(row), row) for row in exposure_table(head.policy, head.release)]
    elif base.hash == head.hash:  # same bytes, same answers: don't evaluate twice
        changes = [RowChange(row, row) for row in exposure_table(head.policy, head.release)]
    else:
        probes = _probe_policy(base.policy, head.policy)
        assert base.release is not None  # rendered with its policy
        before = {(row.port, row.family, row.source): row for row in exposure_table(probes, base.release)}
        after = {(row.port, row.family, row.source): row for row in exposure_table(probes, head.release)}
        # A port only one release opens without naming it (a drifted artifact) is closed on the other.
        changes = ([RowChange(before.get(key, _closed(row)), row) for key, row in after.items()]
                   + [RowChange(row, _closed(row)) for key, row in before.items() if key not in after])
    # The ports nobody names are news only when something lets them in.
    return [c for c in changes if not (c.after.port.endswith(OTHER_PORTS) and not c.change
                                       and not (c.after.reachable or c.after.host or c.after.cloud))]


def change_counts(changes: list[RowChange]) -> dict[str, tuple[int, int]]:
    """{"reachable"|"cloud"|"host": (rows opened, rows closed)}."""
    counts = {}
    for column in ("reachable", *LAYERS):
        opened = sum(1 for c in changes if getattr(c.after, column) and not getattr(c.before, column))
        closed = sum(1 for c in changes if getattr(c.before, column) and not getattr(c.after, column))
        counts[column] = (opened, closed)
    return counts


def blocklist_changes(base: FirewallPolicy | None, head: FirewallPolicy) -> dict[int, tuple[NetworkList, NetworkList]]:
    """{4|6: (added CIDRs, removed CIDRs)}, each sorted (set differences of the lists' keys: no
    ipaddress object for an entry that is in both)."""
    before = (base.blocklist_v4.keys, base.blocklist_v6.keys) if base else ((), ())
    after = (head.blocklist_v4.keys, head.blocklist_v6.keys)
    return {version: (NetworkList(sorted(set(after[index]).difference(before[index]))),
                      NetworkList(sorted(set(before[index]).difference(after[index]))))
            for index, version in enumerate((4, 6))}


def _flatten(values: Any, path: str) -> dict[str, Any]:
    if isinstance(values, dict):
        flat = {}
        for key, value in values.items():
            flat.update(_flatten(value, f"{path}.{key}"))
        return flat
    return {path: values}


def setting_changes(base: FirewallPolicy, head: FirewallPolicy) -> list[tuple[str, Any, Any]]:
    """(config key, before, after) for every other firewall setting that differs, in config order."""
    def flat(policy: FirewallPolicy) -> dict[str, Any]:
        values = {key: value for key, value in firewall_config_values(policy).items() if key not in SHOWN_ELSEWHERE}
        return _flatten(values, "firewall")
    before, after = flat(base), flat(head)
    return [(key, before.get(key), value) for key, value in after.items() if before.get(key) != value]


def changed_files(base: Release, head: Release) -> list[str]:
    names = sorted((set(base.files) | set(head.files)) - set(BOOKKEEPING_FILES))
    return [name for name in names if base.files.get(name) != head.files.get(name)]


# --- markdown (pure)

def _state(allowed: bool, column: str) -> str:
    if column == "reachable":
        return "YES" if allowed else "no"
    return "open" if allowed else "closed"


def _cell(change: RowChange, column: str) -> str:
    before, after = getattr(change.before, column), getattr(change.after, column)
    if before == after:
        return _state(after, column)
    return f"{_state(before, column)} → **{_state(after, column)}**"


def _family(version: int) -> str:
    return f"IPv{version}"


COLUMNS = ("port", "family", "source", "cloud", "host", "reachable")


def _row_cells(change: RowChange) -> list[str]:
    row = change.after
    return [row.port, _family(row.family), row.source, *(_cell(change, column) for column in COLUMNS[3:])]


def table_lines(header: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(cells) + " |" for cells in rows])


def bounded(lines: list[str], budget: int, more: str) -> str:
    """The lines that fit in `budget` characters (the first two, a table header, always), then
    one "… N more" line for the rest."""
    kept = lines[:2]
    used = sum(len(line) + 1 for line in kept) + len(more) + 40  # room for the "… N more" line
    for line in lines[2:]:
        if used + len(line) + 1 > budget:
            break
        kept.append(line)
        used += len(line) + 1
    left_out = len(lines) - len(kept)
    # A blank line first: a text line right under a table would be read as one more row.
    return "\n".join(kept) + (f"\n\n… {left_out:,} more {more}" if left_out else "")


def _order(change: RowChange) -> int:
    """Opens first (what a reviewer must look at), then layer-only changes, then closes."""
    return 0 if change.change == OPENS else 2 if change.change == CLOSES else 1


def _summary(changes: list[RowChange]) -> str:
    counts = change_counts(changes)
    opened, closed = counts["reachable"]
    layers = " · ".join(f"{layer} layer +{counts[layer][0]:,}/−{counts[layer][1]:,}" for layer in LAYERS)
    return f"**{opened:,} opened, {closed:,} closed** (reachable from outside) · {layers}"


def _blocklist_section(base: FirewallPolicy | None, head: FirewallPolicy) -> str:
    changes = blocklist_changes(base, head)
    if not any(added or removed for added, removed in changes.values()):
        return ""
    totals = (head.blocklist_v4, head.blocklist_v6)
    counts = ", ".join(f"{_family(v)} +{len(a):,}/−{len(r):,}" for v, (a, r) in changes.items())
    lines = [f"**Blocklist** (host layer, dropped before anything else): {counts} CIDRs; now "
             f"{len(totals[0]):,} IPv4 and {len(totals[1]):,} IPv6 entries"]
    for direction, index in (("added", 0), ("removed", 1)):
        for version, pair in changes.items():
            networks = pair[index]
            if networks:
                sample = ", ".join(f"`{n}`" for n in networks[:SAMPLE_SIZE])
                rest = f" and {len(networks) - SAMPLE_SIZE:,} more" if len(networks) > SAMPLE_SIZE else ""
                lines.append(f"- {direction} ({_family(version)}): {sample}{rest}")
    return "\n".join(lines)


def _settings_section(base: FirewallPolicy, head: FirewallPolicy) -> str:
    changes = setting_changes(base, head)
    if not changes:
        return ""
    def show(value: Any) -> str:
        return f"`{json.dumps(value)[:200]}`"  # a long deployerAddresses list is cut, not the comment
    return "\n".join(["**Other settings**", *(f"- `{key}`: {show(old)} → {show(new)}" for key, old, new in changes)])


def findings_section(findings: list[Finding], budget: int) -> str:
    errors = sum(f.level == ERROR for f in findings)
    warnings = len(findings) - errors
    if not findings:
        return "**Lint of the proposed policy**: no findings"
    verdict = " (`pulumi up` refuses a policy with errors)" if errors else ""
    lines = [f"**Lint of the proposed policy**: {errors} error(s), {warnings} warning(s){verdict}", ""]
    for finding in findings:  # analyse() puts errors first
        icon = "❌" if finding.level == ERROR else "⚠️"
        message = finding.message if len(finding.message) <= FINDING_CHARS else finding.message[:FINDING_CHARS] + " …"
        lines.append(f"- {icon} {finding.level}: {message}")
    return bounded(lines, budget, "findings (`scripts/fw check` lists them all)")


def _heading(stack: str, base_ref: str, base: Side, head: Side, changes: list[RowChange]) -> str:
    lines = [f"### Firewall diff: stack `{stack}`", ""]
    if base.policy is None:
        lines.append(f"Release: none → `{head.hash}`: `{base.label}` does not exist, so this is a new stack "
                     "and everything it allows opens.")
    elif base.hash == head.hash:
        return "\n".join([*lines, f"**{NO_CHANGE}**: `{base_ref}` and the working tree render the same "
                                  f"release `{head.hash}`."])
    else:
        lines.append(f"Release: `{base.hash}` → `{head.hash}` (`{base_ref}` → working tree)")
    lines += ["", _summary(changes)]
    if not any(change.change for change in changes):
        lines += ["", "The exposure is the same on both sides; what does change is listed below."]
    return "\n".join(lines)


def _what_else_changes(base: Side, head: Side) -> list[str]:
    """Blocklist, other settings and release files: what the exposure table does not show."""
    assert head.policy is not None and head.release is not None  # the head side always has its stack file
    sections = [_blocklist_section(base.policy, head.policy)]
    if base.policy is not None and base.release is not None and base.hash != head.hash:
        files = changed_files(base.release, head.release)
        sections += [_settings_section(base.policy, head.policy),
                     "Release files that change: " + ", ".join(f"`{name}`" for name in files)]
    return sections


def _exposure_tables(changes: list[RowChange], budget: int) -> list[str]:
    """Changed rows (opens first) as a table, then unchanged rows folded into <details>; what
    does not fit in `budget` characters is counted in a "… N more" line."""
    changed = sorted((c for c in changes if c.change), key=_order)
    unchanged = [c for c in changes if not c.change]
    tables = []
    if changed:
        tables.append(bounded(table_lines(("change", *COLUMNS), [[c.change, *_row_cells(c)] for c in changed]),
                              budget, "changed rows (not shown to keep this short; raise `--max-chars` to see them)"))
        budget -= len(tables[-1])
    opening = f"<details><summary>{'Unchanged' if changed else 'Exposure (unchanged)'}: {len(unchanged):,} rows</summary>\n\n"
    closing = "\n\n</details>"
    if unchanged and budget > len(opening) + len(closing) + 200:
        table = bounded(table_lines(COLUMNS, [_row_cells(c) for c in unchanged]),
                        budget - len(opening) - len(closing), "unchanged rows (`scripts/fw check` lists them all)")
        tables.append(opening + table + closing)
    return tables


def diff_markdown(stack: str, base_ref: str, base: Side, head: Side, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The PR comment body, at most `max_chars` characters. The heading, summary, blocklist,
    settings and lint (a quarter of the budget at most) always fit; the exposure tables get
    the rest: changed rows first, unchanged rows (collapsed) last."""
    changes = compare_exposure(base, head)
    heading = _heading(stack, base_ref, base, head, changes)
    assert head.policy is not None and head.release is not None  # the head side always has its stack file
    tail = [*_what_else_changes(base, head), findings_section(analyse(head.policy, head.release), max_chars // 4)]
    tail_text = "\n\n".join(part for part in tail if part)
    tables = _exposure_tables(changes, max_chars - len(heading) - len(tail_text) - 200)  # 200: separators
    text = "\n\n".join([heading, *tables, tail_text]) + "\n"
    if len(text) > max_chars:  # only with a tiny --max-chars and many long settings or findings
        cut = "\n\n… (cut here to fit --max-chars)\n"
        text = text[:text.rfind("\n", 0, max_chars - len(cut))] + cut
    return text


# --- reading both sides (git, files) and the command

def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True)
    except FileNotFoundError:
        raise ConfigError(["--base needs git, and git is not installed"]) from None


def stack_file_at(ref: str, stack_file: Path) -> tuple[Path, str, bytes | None]:
    """(repository, path in it, content at `ref`) of `stack_file`, read from the git repository
    that contains it, so --base means the same whatever directory fw runs from. Content is None
    when the file does not exist at `ref` (a new stack)."""
    path = stack_file.resolve()
    top = _git(path.parent, "rev-parse", "--show-toplevel") if path.parent.is_dir() else None
    if top is None or top.returncode != 0:
        why = top.stderr.decode().strip().splitlines()[0] if top is not None and top.stderr.strip() else ""
        why = "" if "not a git repository" in why else why  # other reasons (e.g. "dubious ownership") are news
        raise ConfigError([f"{stack_file}: not inside a git repository, so --base {ref} has nothing to compare "
                           f"with{f' (git: {why})' if why else ''}"])
    repo = Path(top.stdout.decode().strip())
    relative = path.relative_to(repo.resolve()).as_posix()
    if _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        raise ConfigError([f"--base {ref}: no such commit in {repo} (fetch it first, e.g. "
                           "`git fetch origin main`, and pass origin/main)"])
    if _git(repo, "cat-file", "-e", f"{ref}:{relative}").returncode != 0:
        return repo, relative, None
    shown = _git(repo, "cat-file", "blob", f"{ref}:{relative}")
    if shown.returncode != 0:
        raise ConfigError([f"{ref}:{relative}: git could not read it: {shown.stderr.decode().strip()}"])
    return repo, relative, shown.stdout


def files_at(ref: str, repo: Path, stack_path: str) -> FileReader:
    """Reads the files a stack file names (firewall.blocklistFiles) as they were at `ref`."""
    def read(path: str) -> str:
        name = posixpath.normpath(posixpath.join(posixpath.dirname(stack_path), path))
        shown = _git(repo, "cat-file", "blob", f"{ref}:{name}")
        if shown.returncode != 0:
            raise OSError(f"not in git at {ref}:{name}")
        return shown.stdout.decode()
    return read


def _validated(side: str, label: str, path: Path, read_file: FileReader) -> FirewallPolicy:
    """The firewall policy `pulumi up` would render from a stack file (target additions included);
    problems name the side and the file as the user knows it."""
    try:
        return effective_settings(settings_from_values(values_from_stack_file(path), read_file=read_file)).firewall
    except ConfigError as error:
        # File-level problems start with the path read (a temporary file for the base side).
        raise ConfigError([f"{side} {label}{problem[len(str(path)):]}" if problem.startswith(str(path))
                           else f"{side} {label}: {problem}" for problem in error.problems]) from None


def read_sides(stack_file: Path, base_ref: str) -> tuple[Side, Side]:
    """Validate and render the stack file at `base_ref` and in the working tree; the problems
    of both sides are reported together."""
    repo, relative, base_content = stack_file_at(base_ref, stack_file)
    base_label = f"{base_ref}:{relative}"
    problems: list[str] = []
    base_policy = head_policy = None
    try:
        head_policy = _validated("head", relative, stack_file, beside(stack_file))
    except ConfigError as error:
        problems += error.problems
    if base_content is not None:
        with tempfile.TemporaryDirectory(prefix="fw-diff-") as directory:
            base_file = Path(directory) / stack_file.name
            base_file.write_bytes(base_content)
            try:
                base_policy = _validated("base", base_label, base_file, files_at(base_ref, repo, relative))
            except ConfigError as error:
                problems += error.problems
    if problems:
        raise ConfigError(problems)
    return Side.rendered(base_label, base_policy), Side.rendered(relative, head_policy)


def stack_name_of(stack_file: Path) -> str:
    name = stack_file.name
    if name.startswith("Pulumi.") and name.endswith(".yaml") and name.count(".") >= 2:
        return name[len("Pulumi."):-len(".yaml")]
    return name


def cmd_diff(args: argparse.Namespace, stack_file: Path) -> int:
    """`fw diff`: print the markdown; exit 0 even when the head has lint errors (it is a report)."""
    base, head = read_sides(stack_file, args.base)
    sys.stdout.write(diff_markdown(args.stack or stack_name_of(stack_file), args.base, base, head, args.max_chars))
    return 0


HELP = """\
Compare the stack's policy at a git ref with the working tree and print markdown for a pull
request comment: what opens and closes, per layer (cloud, host) and family, the release hash
change, blocklist and settings changes, and the lint of the working tree's policy.

--base REF is resolved in the git repository that contains the stack file (for --config FILE,
the repository of FILE, wherever fw runs from). A stack file missing at REF is a new stack:
everything it allows opens.

Exit 0 when both sides are valid, even if the working tree's policy has lint errors (this is a
report; `fw check` and `pulumi up` are the gates). Exit 2 when either side is invalid (each
problem on one line, naming the side, the file and the key) or REF is not a commit."""
