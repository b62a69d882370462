"""Benchmark (not a test): what the host payload's commands cost with a 10,000-CIDR blocklist,
against the floor (the bare `ipset restore` + `iptables-restore` + `ip6tables-restore` of the
same release into an empty namespace, with no safety net at all).

    sudo .venv/bin/python bench/payload_bench.py [--payload DIR] [--runs N]

--payload runs another copy of the payload (e.g. an older checkout's payload/ directory) on the
same rules, for before/after figures. Everything runs in sandboxes of tests/payload_helpers.py
(a network namespace plus a private mount namespace per run), removed at the end; nothing
touches this machine's own firewall or files. Prints seconds (median of N runs) per command."""
from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from hardened_lightsail.config import settings_from_values  # noqa: E402
from hardened_lightsail.release import PAYLOAD_DIR, PAYLOAD_ENTRY, render_release  # noqa: E402

from blocklist_bench import documentation_blocklist  # noqa: E402
from payload_helpers import HostSandbox  # noqa: E402

ADMIN = "198.51.100.10"
# As sshd sets it for the apply's and for the confirm's connection (a new one).
APPLY_CONNECTION, CONFIRM_CONNECTION = f"{ADMIN} 50100 192.0.2.1 22", f"{ADMIN} 50101 192.0.2.1 22"
CONFIRM_TIMEOUT = 300


def release_files(blocklist: list, payload_dir: Path) -> tuple[str, dict[str, bytes]]:
    """(hash, files) of the bench policy's release, shipped with the payload in `payload_dir`."""
    policy = settings_from_values({"firewall": {
        "adminCidrs": [f"{ADMIN}/32"],
        "services": [{"name": "http", "protocol": "tcp", "ports": "80"}],
        "blocklist": [str(n) for n in blocklist],
    }}).firewall
    rendered = render_release(policy).files
    files = {name: content for name, content in rendered.items()
             if not name.startswith(PAYLOAD_ENTRY) and name not in ("manifest.sha256", "RELEASE")}
    for path in sorted(payload_dir.glob(f"{PAYLOAD_ENTRY}*")):
        files[path.name] = path.read_bytes()
    manifest = "".join(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n" for name in sorted(files))
    release_hash = hashlib.sha256(manifest.encode()).hexdigest()[:16]
    return release_hash, {**files, "manifest.sha256": manifest.encode(), "RELEASE": f"{release_hash}\n".encode()}


def write(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return directory


class Host:
    """One sandbox running the payload from `payload_dir`."""

    def __init__(self, root: Path, payload_dir: Path):
        self.sandbox, self.payload = HostSandbox(root), payload_dir / PAYLOAD_ENTRY

    def timed(self, *args: str, connection: str | None = None, ok=(0,)) -> float:
        env = self.sandbox.env({"SSH_CONNECTION": connection} if connection else None)
        started = time.perf_counter()
        result = subprocess.run(self.sandbox.wrap(["sh", str(self.payload), *args]), env=env,
                                capture_output=True, text=True, timeout=600)
        elapsed = time.perf_counter() - started
        if result.returncode not in ok:
            raise RuntimeError(f"hlfw {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        return elapsed

    def bare_restore(self, directory: Path) -> float:
        started = time.perf_counter()
        self.sandbox.netns_run(["ipset", "restore"], input=(directory / "ipsets").read_text())
        self.sandbox.netns_run(["iptables-restore"], input=(directory / "rules.v4").read_text())
        self.sandbox.netns_run(["ip6tables-restore"], input=(directory / "rules.v6").read_text())
        return time.perf_counter() - started

    def close(self) -> None:
        self.sandbox.close()


def one_run(work: Path, payload_dir: Path, big: tuple, changed: tuple) -> dict[str, float]:
    (big_hash, big_dir), (changed_hash, changed_dir) = big, changed
    has_drift = b"hlfw drift" in (payload_dir / PAYLOAD_ENTRY).read_bytes()
    seconds = {}
    floor = Host(work / "floor", payload_dir)
    try:
        seconds["floor: bare ipset + iptables + ip6tables restore"] = floor.bare_restore(big_dir)
    finally:
        floor.close()
    host = Host(work / "host", payload_dir)
    try:
        apply = ("apply", "--release")
        seconds["apply (first, empty host)"] = host.timed(*apply, str(big_dir), "--timeout", str(CONFIRM_TIMEOUT),
                                                          connection=APPLY_CONNECTION)
        seconds["confirm"] = host.timed("confirm", "--release", big_hash, connection=CONFIRM_CONNECTION)
        # An older payload may call the release's big set different (its hashsize grew while
        # loading): it still did the whole comparison, which is what is timed.
        seconds["verify"] = host.timed("verify", "--release", big_hash, ok=(0, 1))
        if has_drift:
            seconds["drift (in sync)"] = host.timed("drift", "--release", big_hash)
        seconds["apply (unchanged: no-op)"] = host.timed(*apply, str(big_dir), "--timeout", str(CONFIRM_TIMEOUT),
                                                         connection=APPLY_CONNECTION)
        seconds["apply (one entry more)"] = host.timed(*apply, str(changed_dir), "--timeout", str(CONFIRM_TIMEOUT),
                                                       connection=APPLY_CONNECTION)
        seconds["rollback (pending)"] = host.timed("rollback")
        if has_drift:
            seconds["drift (after the rollback: drift found)"] = host.timed("drift", "--release", changed_hash, ok=(1,))
    finally:
        host.close()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payload", type=Path, default=PAYLOAD_DIR, help="payload directory (default: this checkout's)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("payload_bench: needs root (it creates network namespaces); run it with sudo", file=sys.stderr)
        return 2
    blocklist = documentation_blocklist()
    with tempfile.TemporaryDirectory(prefix="hl-payload-bench-") as tmp:
        work = Path(tmp)
        big_hash, big_files = release_files(blocklist, args.payload)
        extra = blocklist + [ipaddress.ip_network("192.0.2.255/32")]
        changed_hash, changed_files = release_files(extra, args.payload)
        big = (big_hash, write(work / "big", big_files))
        changed = (changed_hash, write(work / "changed", changed_files))
        runs = []
        for number in range(args.runs):
            run_dir = work / f"run-{number}"
            run_dir.mkdir()
            runs.append(one_run(run_dir, args.payload, big, changed))
    print(f"hardened-lightsail payload benchmark: {len(blocklist):,}-CIDR blocklist, payload {args.payload}, "
          f"median of {args.runs} runs, {os.cpu_count()} CPUs")
    floor_name = next(iter(runs[0]))
    floor = statistics.median(run[floor_name] for run in runs)
    for name in runs[0]:
        value = statistics.median(run[name] for run in runs)
        ratio = "" if name == floor_name else f"   {value / floor:5.1f}x the floor"
        print(f"  {name:<52}{value:8.3f} s{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
