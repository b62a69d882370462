"""The exposure table: for every port the policy names (or a layer opens), which sources each
layer lets in.

It is computed from the rendered artifacts (not from the policy), so it shows what would really
be shipped; `fw check` prints it, `fw diff` compares two of them, verification measures it."""
from __future__ import annotations

from dataclasses import dataclass

from .evaluate import cloud_allows, host_allows
from .networks import any_network, parse_cidr, split_families
from .policy import PROTOCOLS, PortRange
from .release import Release

ANYONE_ELSE = "anyone else"


@dataclass(frozen=True, order=True)
class ExposureRow:
    port: str  # "tcp/22", "udp/5000-5010", "ping"
    family: int
    source: str  # a CIDR named in the policy, or ANYONE_ELSE
    cloud: bool
    host: bool

    @property
    def reachable(self) -> bool:
        return self.cloud and self.host


def _probes(policy, release: Release):
    """(label, protocol, first port, last port, named sources) for every port the policy names,
    then for every tcp/udp port either layer opens although the policy does not name it (a
    hand-edited or drifted artifact): without those rows a port opened in one layer only would
    never reach the layer check."""
    named = [(f"tcp/{policy.ssh_port}", "tcp", policy.ssh_port, policy.ssh_port, policy.admin_cidrs)]
    named += [(f"{s.protocol}/{s.ports}", s.protocol, s.ports.first, s.ports.last, s.sources)
              for s in policy.services]
    yield from named
    unnamed: dict[tuple[str, int, int], set] = {}
    for info in release.port_infos:
        if info["protocol"] in PROTOCOLS:
            unnamed.setdefault((info["protocol"], info["fromPort"], info["toPort"]), set()).update(
                parse_cidr(cidr) for cidr in [*info.get("cidrs", []), *info.get("ipv6Cidrs", [])])
    for ruleset in release.rulesets:
        for rule in ruleset.rules:
            if rule.target == "ACCEPT" and rule.protocol in PROTOCOLS and rule.dports is not None:
                unnamed.setdefault((rule.protocol, rule.dports.first, rule.dports.last), set()).update(
                    [rule.source] if rule.source is not None else [])
    for known in named:
        unnamed.pop(known[1:4], None)
    for (protocol, first, last), sources in sorted(unnamed.items()):
        yield f"{protocol}/{PortRange(first, last)}", protocol, first, last, tuple(sources)
    yield "ping", "icmp", None, None, ()


def exposure_table(policy, release: Release) -> list[ExposureRow]:
    rows = []
    for label, protocol, first, last, named in _probes(policy, release):
        for family, ruleset in ((4, release.rulesets[0]), (6, release.rulesets[1])):
            sources = [n for n in split_families(named)[0 if family == 4 else 1]
                       if n != any_network(family)]
            for source, name in [(s, str(s)) for s in sources] + [(any_network(family), ANYONE_ELSE)]:
                host_protocol = protocol if protocol != "icmp" else ("icmp" if family == 4 else "ipv6-icmp")
                echo = protocol == "icmp"
                # A range is open only if both ends are: catches a layer that opened part of it.
                ports = [None] if echo else sorted({first, last})
                rows.append(ExposureRow(
                    port=label, family=family, source=name,
                    cloud=all(cloud_allows(release.port_infos, protocol, p, source, echo) for p in ports),
                    host=all(host_allows(ruleset, host_protocol, p, source, echo) for p in ports)))
    return rows


def _mark(allowed: bool) -> str:
    return "open" if allowed else "closed"


def exposure_map(rows: list[ExposureRow]) -> dict[str, str]:
    """The table as {"tcp/22 IPv4 from 192.0.2.0/24": "open", ...}: the `exposure` stack output.

    Pulumi shows a changed map key by key, so a preview names exactly the rows that open or
    close (a text table is cut to its first lines, and one wider cell changes every line)."""
    def state(row: ExposureRow) -> str:
        if row.cloud == row.host:
            return _mark(row.reachable)
        return f"closed (cloud {_mark(row.cloud)}, host {_mark(row.host)})"
    summary = {f"{r.port} IPv{r.family} from {r.source}": state(r) for r in rows}
    summary["any other port"] = "closed"
    return summary


def format_table(rows: list[ExposureRow], markdown: bool = False) -> str:
    header = ("port", "family", "source", "cloud", "host", "reachable")
    body = [(r.port, f"IPv{r.family}", r.source, _mark(r.cloud), _mark(r.host),
             "YES" if r.reachable else "no") for r in rows]
    body.append(("any other port", "both", "anyone", "closed", "closed", "no"))
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *body])
