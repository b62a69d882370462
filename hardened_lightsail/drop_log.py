"""Summarizes the kernel's dropped-packet log lines (the LOG rule's prefix, e.g.
`IPTables-Dropped: IN=eth0 ... SRC=198.51.100.7 DST=... PROTO=TCP SPT=40000 DPT=23 ...`):
top sources, ports and protocols, IPv4 and IPv6, over the last minutes, and whether the LOG
rule's rate limit was reached (then lines are missing and the counts are lower bounds).

It reads the text `journalctl -k -o short-unix`, `dmesg` or /var/log/kern.log print. Pure."""
from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from .rule_conditions import SteadyState
from .saved_rules import SavedRuleset

SUPPRESSED = re.compile(r"(\d+) (?:callbacks|messages) suppressed")
# What syslog and the journal put before the kernel's own text: "web kernel: [  12.345678] ".
SYSLOG_HEAD = re.compile(r"^\s*(?:\S+ )?kernel: (?:\[\s*\d+\.\d+\] )?")
DMESG_TIME = re.compile(r"^\[\s*(\d+\.\d+)\]")
RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
              "d": 86400, "day": 86400}


@dataclass(frozen=True)
class DropLine:
    time: float  # epoch seconds
    family: int
    source: str
    protocol: str  # TCP, UDP, ICMP, ICMPv6, ...
    port: int | None  # destination port (TCP/UDP)
    icmp_type: int | None = None

    @property
    def port_label(self) -> str:
        if self.port is not None:
            return f"{self.protocol.lower()}/{self.port}"
        if self.icmp_type is not None:
            return f"{self.protocol} type {self.icmp_type}"
        return self.protocol


@dataclass(frozen=True)
class LogLimit:
    """A LOG rule's `-m limit`: `burst` lines at once, then `per_second`."""

    per_second: float
    burst: int
    text: str  # as written, e.g. "10/min, burst 5"
    where: str = ""  # the rule, e.g. "rules.v4 line 40"


def parse_limit(rate: str, burst: int = 5, where: str = "") -> LogLimit:
    """`--limit 10/min --limit-burst 5` (iptables' default burst is 5)."""
    count, _, unit = rate.partition("/")
    return LogLimit(float(count) / RATE_UNITS.get(unit or "sec", 1), burst, f"{rate}, burst {burst}", where)


@dataclass
class DropSummary:
    prefix: str
    log_source: str  # journal, dmesg, kern.log
    minutes: int
    now: float
    lines: list[DropLine] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)  # the kernel's own "N callbacks suppressed"
    limits: dict[int, LogLimit] = field(default_factory=dict)  # family -> its LOG rule's limit
    limited_at: dict[int, float] = field(default_factory=dict)  # family -> when that limit was reached


def _line_time(line: str, log: LogText) -> tuple[float | None, str]:
    """(epoch seconds, the rest of the line) for one line of the log source."""
    if log.source == "journal":
        stamp, _, rest = line.partition(" ")
        try:
            return float(stamp), rest
        except ValueError:
            return None, line
    if log.source == "dmesg":
        match = DMESG_TIME.match(line)
        if not match:
            return None, line
        return log.now - (log.uptime - float(match.group(1))), line[match.end():]
    stamp, _, rest = line.partition(" ")
    try:  # rsyslog's RFC 3339 stamps: 2024-11-20T13:32:01.123456+09:00
        return datetime.fromisoformat(stamp).timestamp(), rest
    except ValueError:
        pass
    try:  # the traditional "Nov 20 13:32:01", in the host's local time
        local = datetime.strptime(f"{log.year} {line[:15]}", "%Y %b %d %H:%M:%S")
        sign = -1 if log.utc_offset.startswith("-") else 1
        offset = timedelta(hours=int(log.utc_offset[1:3]), minutes=int(log.utc_offset[3:5])) * sign
        return local.replace(tzinfo=timezone(offset)).timestamp(), line[16:]
    except ValueError:
        return None, line


@dataclass(frozen=True)
class LogText:
    source: str
    text: str
    now: float
    uptime: float = 0.0
    utc_offset: str = "+0000"
    year: int = 1970


def log_rules(rulesets: Iterable[SavedRuleset]) -> dict[str, dict[int, list[tuple[str, LogLimit | None]]]]:
    """prefix -> family -> [(the rule's place, its LogLimit or None)] for every LOG rule."""
    found: dict[str, dict[int, list[tuple[str, LogLimit | None]]]] = {}
    for ruleset in rulesets:
        for rule in ruleset.rules:
            if rule.target != "LOG":
                continue
            prefix = (rule.target_option("--log-prefix") or ("",))[0]
            limit = None
            for condition in rule.conditions:
                if isinstance(condition, SteadyState) and condition.module == "limit":
                    words = dict(zip(condition.words[::2], condition.words[1::2], strict=False))
                    limit = parse_limit(words.get("--limit", "3/hour"), int(words.get("--limit-burst", 5)),
                                        ruleset.where(rule))
            found.setdefault(prefix, {}).setdefault(ruleset.family, []).append((ruleset.where(rule), limit))
    return found


def _fields(text: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in text.split() if "=" in word)


def parse_drop_line(text: str, prefix: str, time: float) -> DropLine | None:
    start = text.find(prefix)
    if start < 0:
        return None
    fields = _fields(text[start + len(prefix):])
    if "SRC" not in fields or "PROTO" not in fields:
        return None
    port = int(fields["DPT"]) if fields.get("DPT", "").isdigit() else None
    icmp = int(fields["TYPE"]) if fields.get("TYPE", "").isdigit() else None
    try:  # the kernel writes IPv6 addresses in full (2001:0db8:000b:...): show them as people write them
        source = ipaddress.ip_address(fields["SRC"])
    except ValueError:
        return None
    return DropLine(time, source.version, str(source), fields["PROTO"], port, icmp)


def summarize(log: LogText, prefix: str, minutes: int, limits: dict[int, LogLimit] | None = None) -> DropSummary:
    """The lines of the last `minutes` with `prefix`; `limits`: each family's LOG rule limit."""
    summary = DropSummary(prefix, log.source, minutes, log.now, limits=dict(limits or {}))
    since = log.now - minutes * 60
    for raw in log.text.splitlines():
        time, rest = _line_time(raw, log)
        if time is None or time < since:
            continue
        if SUPPRESSED.search(rest):
            summary.suppressed.append(SYSLOG_HEAD.sub("", rest).strip())
            continue
        line = parse_drop_line(rest, prefix, time)
        if line is not None:
            summary.lines.append(line)
    summary.lines.sort(key=lambda line: line.time)
    for family, limit in summary.limits.items():  # each LOG rule has its own token bucket
        reached = limit_reached([line for line in summary.lines if line.family == family], limit)
        if reached is not None:
            summary.limited_at[family] = reached
    return summary


def limit_reached(lines: list[DropLine], limit: LogLimit) -> float | None:
    """When the LOG rule's token bucket ran dry: after some run of lines i..j, fewer than one
    token was left even if the bucket was full at i (burst + rate * (t_j - t_i) - (j - i + 1) < 1).
    A packet dropped right after that was not logged."""
    lowest = None
    for index, line in enumerate(lines):
        value = index - limit.per_second * (line.time - lines[0].time)  # relative times keep precision
        lowest = value if lowest is None else min(lowest, value)
        if limit.burst - (value - lowest + 1) < 1:
            return line.time
    return None


# --- text ---------------------------------------------------------------------------------------

def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    numeric = [all(isinstance(row[i], int) for row in rows) for i in range(len(header))]
    return ["  ".join((str(cell).rjust(width) if number else str(cell).ljust(width))
                      for cell, width, number in zip(row, widths, numeric, strict=True)).rstrip() for row in [header, *rows]]


def format_summary(summary: DropSummary, where: str, top: int = 10) -> str:
    lines = summary.lines
    quoted = f'"{summary.prefix}"'
    head = f"{quoted} lines in the kernel log of {where} ({summary.log_source}), last {summary.minutes} min"
    out = []
    if not lines:
        out.append(f"{head}: none. Nothing was dropped and logged in that time.")
    else:
        families = Counter(line.family for line in lines)
        out.append(f"{head}: {len(lines):,} (IPv4 {families[4]:,}, IPv6 {families[6]:,}), "
                   f"{_clock(lines[0].time)} to {_clock(lines[-1].time)}")
    for family, limit in sorted(summary.limits.items()):
        rule = f" ({limit.where})" if limit.where else ""
        if family in summary.limited_at:
            out.append(f"rate-limited over IPv{family}: the LOG rule{rule} logs {limit.text}; that was reached at "
                       f"{_clock(summary.limited_at[family])}, so drops after it may be missing: the counts below "
                       "are lower bounds")
        else:
            out.append(f"rate limit over IPv{family}: the LOG rule{rule} logs {limit.text}; not reached")
    for message in summary.suppressed:
        out.append(f"the kernel suppressed log lines: {message}")
    if not lines:
        return "\n".join(out) + "\n"
    sources = Counter((line.source, line.family) for line in lines).most_common(top)
    out += ["", *_table(("top sources", "family", "lines"), [(s, f"IPv{f}", n) for (s, f), n in sources])]
    ports = Counter((line.port_label, line.family) for line in lines).most_common(top)
    out += ["", *_table(("top ports", "family", "lines"), [(p, f"IPv{f}", n) for (p, f), n in ports])]
    protocols = sorted(Counter(line.protocol for line in lines).items(), key=lambda item: (-item[1], item[0]))
    by_family = Counter((line.protocol, line.family) for line in lines)
    out += ["", *_table(("protocol", "IPv4", "IPv6", "lines"),
                        [(p, by_family[(p, 4)], by_family[(p, 6)], n) for p, n in protocols])]
    return "\n".join(out) + "\n"
