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
services that listen on other ports: listening ports are probed on every server either way)."""
from __future__ import annotations

import re
from dataclasses import dataclass

SPLIT, EVERY = "split", "every"
FLEET_SCAN_MODES = (SPLIT, EVERY)
SHARE_VARIABLE = "HL_SCAN_SHARE"  # "i/N": this server is the i-th (from 0) of N
_SHARE_TEXT = re.compile(r"(\d{1,3})/(\d{1,3})")


@dataclass(frozen=True)
class ScanShare:
    """Server `index` of `count` takes block (index + rotation) mod count of the port space."""

    index: int
    count: int
    rotation: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"scan share {self.index}/{self.count}: the index must be below the count")

    @classmethod
    def from_text(cls, text: str | None, release_hash: str) -> ScanShare | None:
        """HL_SCAN_SHARE ("i/N", absent for one server or `every`); the release hash (hex) turns
        the blocks so the next release scans each block on another server."""
        if not text:
            return None
        match = _SHARE_TEXT.fullmatch(text)
        if match is None:
            raise ValueError(f"{SHARE_VARIABLE}={text!r} is not INDEX/COUNT")
        index, count = int(match.group(1)), int(match.group(2))
        return None if count == 1 else cls(index, count, int(release_hash[:8], 16) % count)

    def block(self, first: int, last: int) -> range:
        """This server's contiguous part of first..last (the blocks differ in size by one at most)."""
        size = last - first + 1
        block = (self.index + self.rotation) % self.count
        start, end = first + size * block // self.count, first + size * (block + 1) // self.count
        return range(start, end)

    def describe(self, first: int, last: int) -> str:
        ports = self.block(first, last)
        return f"share {self.index + 1} of {self.count}: ports {ports.start}-{ports.stop - 1} and every rule edge"


def server_share(index: int, count: int, fleet_scan: str) -> str | None:
    """HL_SCAN_SHARE for server `index` of a stack's `count` (None: it scans everything)."""
    return f"{index}/{count}" if count > 1 and fleet_scan == SPLIT else None
