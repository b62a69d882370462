"""A fleet's full scan, shared out among its servers (`verify.fleetScan: split`, the default).

Every server of a stack runs the same release, and `hlfw verify` proves that on each of them
(live rules == release). So the rules treat a port the same way on every server, and scanning
all 65,535 ports of every server from one vantage measures the same rules N times over: N x the
packets from one vantage, N x the time at a polite rate. Split, each server's full scan takes
  - its block of the port space (a 1/N-th, contiguous, rotated with the release so successive
    releases put each block on another server), and
  - on every server: both ends of every stretch of ports the rules treat alike (so each rule's
    edges are measured on each server), plus what the quick check probes (SSH, every policy
    port, every listening port, the usual suspects) and the common UDP services.
Together the fleet measures every port once per vantage and address family. `every` keeps a
whole scan per server (for a fleet whose servers may differ beyond the release, e.g. hand-run
services that listen on other ports: listening ports are probed on every server either way).

The fleet reaches the deploy steps as a file the program writes on `up` (the servers' names in
order), not as a step input: a fleet that grows or shrinks must not redeploy the servers it
keeps. A deploy that runs later (a new release, a repaired drift) reads the fleet as it is then.
No file, or a server not in it: the whole scan, never less."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .policy import ALL_TCP_PORTS

SPLIT, EVERY = "split", "every"
FLEET_SCAN_MODES = (SPLIT, EVERY)
FLEET_FILE_VARIABLE, MEMBER_VARIABLE = "HL_FLEET_FILE", "HL_FLEET_MEMBER"
FLEETS_DIR = Path(".build") / "fleets"  # relative to the program's directory, like the releases


@dataclass(frozen=True)
class ScanShare:
    """Server `index` of `count` takes block (index + rotation) mod count of the port space."""

    index: int
    count: int
    rotation: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"scan share {self.index}/{self.count}: the index must be below the count")

    @property
    def ports(self) -> range:
        """This server's contiguous part of the TCP port space (the blocks differ by one at most)."""
        first, size = ALL_TCP_PORTS.start, len(ALL_TCP_PORTS)
        block = (self.index + self.rotation) % self.count
        return range(first + size * block // self.count, first + size * (block + 1) // self.count)

    def describe(self) -> str:
        return (f"share {self.index + 1} of {self.count}: ports {self.ports.start}-{self.ports.stop - 1} "
                "and every rule edge")


def server_share(index: int, count: int, fleet_scan: str, release_hash: str) -> ScanShare | None:
    """The share of server `index` of a stack's `count` (None: it scans everything). The release
    hash (hex) turns the blocks, so the next release scans each block on another server."""
    if count == 1 or fleet_scan != SPLIT:
        return None
    return ScanShare(index, count, int(release_hash[:8], 16) % count)


def fleet_file(stack: str) -> Path:
    """Where a stack's fleet is written (relative: the same input in any checkout)."""
    return FLEETS_DIR / f"{stack}.json"


def write_fleet_file(path: Path, names: Sequence[str], fleet_scan: str) -> None:
    """The fleet as the deploy steps read it: the servers' names in order, and verify.fleetScan."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"servers": list(names), "fleetScan": fleet_scan}) + "\n"
    if not path.is_file() or path.read_text() != text:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(path)  # a deploy step reading it meanwhile sees the old fleet or the new one


def share_from_environment(env: Mapping[str, str], release_hash: str) -> ScanShare | None:
    """This server's share, from the fleet file the program wrote (HL_FLEET_FILE) and its name
    in it (HL_FLEET_MEMBER). Anything missing or unreadable: None, the whole scan."""
    try:
        fleet = json.loads(Path(env[FLEET_FILE_VARIABLE]).read_text())
        names = fleet["servers"]
        return server_share(names.index(env[MEMBER_VARIABLE]), len(names), fleet["fleetScan"], release_hash)
    except (KeyError, OSError, ValueError, TypeError, AttributeError):
        return None
