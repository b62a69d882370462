"""Benchmark (not a test): the lab through the real Pulumi engine, timed against the targets.

    sudo .venv/bin/python bench/lab_bench.py [--slot K]

1. nothing -> verified lab: `pulumi up` of a new lab stack (target < 60 s);
2. a policy change (tcp/8080 added) applied and verified: `pulumi up` (target < 15 s);
3. a bad push (SSH narrowed to the internet range, forced with allowLockout, confirmTimeoutSeconds
   10) rolled back by the host: from the moment `hlfw apply` starts on the host to the moment the
   host records `rolled-back`, watched in the lab server's own state files (target <= 10 + 5 s).
It runs `scripts/pulumi` with a private file backend in a temporary directory, on a temporary
stack file Pulumi.bench-PID.yaml with an explicit `hardened-lightsail:lab.slot` (the highest
free one unless --slot), and always destroys the stack and removes its files. Exit 0 when every
target is met."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from lab import ADMIN_CIDRS, LabTopology  # noqa: E402
from lab.identity import stack_lab  # noqa: E402
from lab.machine_addresses import machine_addresses, slot_conflicts  # noqa: E402
from lab.netns import link_exists  # noqa: E402
from lab.probe import probe  # noqa: E402
from lab.slots import registered_labs  # noqa: E402
from lab.topology import SLOT_COUNT, uplink_interface_name  # noqa: E402

from engine import PROJECT_DIR, engine_missing_reason, pulumi  # noqa: E402

CONFIRM_TIMEOUT_SECONDS = 10
TARGET_FIRST_UP, TARGET_CHANGE, ROLLBACK_MARGIN = 60.0, 15.0, 5.0
BASE = {"adminCidrs": list(ADMIN_CIDRS), "confirmTimeoutSeconds": CONFIRM_TIMEOUT_SECONDS, "ping": True,
        "services": [{"name": "http", "protocol": "tcp", "ports": "80"},
                     {"name": "https", "protocol": "tcp", "ports": "443"}]}
CHANGED = dict(BASE, services=BASE["services"] + [{"name": "alt-http", "protocol": "tcp", "ports": "8080"}])
# Only the internet client's range may use SSH: the deployer is locked out, the host must roll back.
LOCKED_OUT = dict(CHANGED, adminCidrs=["198.51.100.0/24"], allowLockout=True)
UP = ["--yes", "--skip-preview", "--non-interactive"]
# hlfw's log line when an apply starts (after the lock): "... hlfw[PID] apply: apply HASH (timeout N s) ..."
APPLY_STARTED = re.compile(r" apply: apply ([0-9a-f]+) \(timeout (\d+) s\)")


def free_slot() -> int:
    """The highest slot no lab holds and no address of this machine collides with (the tests'
    lab stacks take the lowest free ones)."""
    taken, machine = registered_labs(), machine_addresses()
    for slot in reversed(range(SLOT_COUNT)):
        if slot not in taken and not link_exists(None, uplink_interface_name(slot)) and \
                not slot_conflicts(LabTopology("bench", slot, "/tmp/bench"), machine):
            return slot
    raise SystemExit("lab_bench: no free lab slot (python -m lab list)")


class HostWatch:
    """Watches the lab server's hlfw files (its /var/lib/hardened-lightsail, bind-mounted from the
    lab directory) every 10 ms: when an apply starts and when the host records `rolled-back`."""

    def __init__(self, state_dir: Path):
        self.log, self.state = state_dir / "log", state_dir / "state"
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        self.apply_started = self.rolled_back = None  # time.monotonic() values
        self.release, self.host_seconds = None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set() and self.rolled_back is None:
            now = time.monotonic()
            if self.apply_started is None and self.log.exists():
                with self.log.open() as log:
                    log.seek(self.log_offset)
                    found = APPLY_STARTED.search(log.read())
                if found:
                    self.apply_started, self.release = now, found.group(1)
            if self.release and self.state.exists():
                state = dict(line.split("=", 1) for line in self.state.read_text().splitlines() if "=" in line)
                if state.get("state") == "rolled-back" and state.get("release") == self.release:
                    self.rolled_back = now
                    # The host's own clock, to the second: applied_at -> rolled_back_at.
                    if state.get("applied_at", "").isdigit() and state.get("rolled_back_at", "").isdigit():
                        self.host_seconds = int(state["rolled_back_at"]) - int(state["applied_at"])
            time.sleep(0.01)


class LabStack:
    """A temporary lab stack: its file, a private backend, and a destroy that always runs."""

    def __init__(self, name: str, slot: int, backend: Path):
        self.name, self.slot, self.backend = name, slot, backend
        self.file = PROJECT_DIR / f"Pulumi.{name}.yaml"
        self.lab = stack_lab(PROJECT_DIR, name)  # the lab this stack stands up (lab/identity.py)
        self.lab_dir = self.lab.state_dir

    def write(self, firewall: dict) -> None:
        config = {"config": {"hardened-lightsail:target": "lab", "hardened-lightsail:lab": {"slot": self.slot},
                             "hardened-lightsail:firewall": firewall}}
        self.file.write_text(yaml.safe_dump(config))

    def run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        return pulumi(args, self.backend, check=check)

    def timed_up(self, firewall: dict, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
        self.write(firewall)
        started = time.monotonic()
        result = self.run(["up", "-s", self.name, *UP], check=check)
        return time.monotonic() - started, result

    def outputs(self) -> dict:
        return json.loads(self.run(["stack", "output", "-s", self.name, "--json"]).stdout)

    def remove(self) -> list[str]:
        """Destroy, forget the stack, remove its files; returns what could not be cleaned up."""
        problems = []
        if self.file.exists():
            destroyed = self.run(["destroy", "-s", self.name, *UP], check=False)
            if destroyed.returncode != 0:
                problems.append(f"pulumi destroy failed: {destroyed.stderr.strip()[-300:]}")
            self.run(["stack", "rm", self.name, "--yes", "--force"], check=False)
        self.file.unlink(missing_ok=True)
        # Whatever destroy left (or an `up` that died before the engine knew the lab): down is idempotent.
        subprocess.run([str(PROJECT_DIR / "scripts" / "hl-lab"), "down"], capture_output=True, check=False,
                       env={**os.environ, "HL_LAB_NAME": self.lab.name, "HL_LAB_DIR": str(self.lab_dir)})
        if self.lab_dir.exists():
            shutil.rmtree(self.lab_dir)
        return problems


def reachable_from_internet(outputs: dict, port: int) -> list[str]:
    """States of `port` on the lab server (v4 and v6) from the untrusted internet namespace."""
    addresses = [outputs["publicIp"], *outputs["ipv6Addresses"]]
    return [r.state for r in probe(outputs["labInternetNamespace"], [(a, "tcp", port) for a in addresses])]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def run(slot: int) -> int:
    name = f"bench-{os.getpid() % 100000}"
    backend = Path(tempfile.mkdtemp(prefix="hl-lab-bench-"))
    stack = LabStack(name, slot, backend)
    print(f"lab benchmark: stack {name}, slot {slot}, real engine (scripts/pulumi), backend {backend}")
    try:
        stack.write(BASE)
        started = time.monotonic()
        stack.run(["stack", "init", name])
        init_seconds = time.monotonic() - started

        first_up, _ = stack.timed_up(BASE)
        outputs = stack.outputs()
        first_ok = ("verified:" in outputs["verifiedExposure"] and "MISMATCH" not in outputs["verifiedExposure"]
                    and reachable_from_internet(outputs, 80) == ["open", "open"]
                    and reachable_from_internet(outputs, 22) == ["filtered", "filtered"])

        change_up, _ = stack.timed_up(CHANGED)
        change_ok = reachable_from_internet(stack.outputs(), 8080) == ["open", "open"]

        state_dir = LabTopology(stack.lab.name, slot, stack.lab_dir).layout.server_fs("/var/lib/hardened-lightsail")
        with HostWatch(state_dir) as watch:
            forced_up, forced = stack.timed_up(LOCKED_OUT, check=False)
            deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS + ROLLBACK_MARGIN
            while watch.rolled_back is None and time.monotonic() < deadline:
                time.sleep(0.05)  # the engine normally returns after the host rolled back
        said = "rules were rolled back: new SSH connections failed within" in forced.stdout + forced.stderr
        ssh_back = subprocess.run(
            ["ssh", "-F", "/dev/null", "-i", str(stack.lab_dir / "ssh" / "id_ed25519"), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
             f"root@{outputs['publicIp']}", "true"], capture_output=True, timeout=30).returncode == 0
        rollback = (watch.rolled_back - watch.apply_started) if watch.rolled_back and watch.apply_started else None
    finally:
        problems = stack.remove()
        shutil.rmtree(backend, ignore_errors=True)

    rollback_target = CONFIRM_TIMEOUT_SECONDS + ROLLBACK_MARGIN
    rows = [
        ("nothing -> verified lab (pulumi up)", f"< {TARGET_FIRST_UP:.0f} s", first_up,
         first_up < TARGET_FIRST_UP and first_ok),
        ("policy change verified (pulumi up, +tcp/8080)", f"< {TARGET_CHANGE:.0f} s", change_up,
         change_up < TARGET_CHANGE and change_ok),
        ("bad push rolled back (host: apply -> rolled-back)", f"<= {rollback_target:.0f} s", rollback,
         rollback is not None and rollback <= rollback_target and forced.returncode != 0 and said and ssh_back),
    ]
    print(f"  {'':<52}{'target':<10}{'measured':>10}  result")
    for what, target, seconds, ok in rows:
        measured = "never" if seconds is None else f"{seconds:.1f} s"
        print(f"  {what:<52}{target:<10}{measured:>10}  {verdict(ok)}")
    print(f"  (stack init {init_seconds:.1f} s, not counted; first up verified: "
          f"{'yes' if first_ok else 'NO'}; tcp/8080 open from the internet after the change: "
          f"{'yes' if change_ok else 'NO'})")
    host_clock = "?" if watch.host_seconds is None else f"{watch.host_seconds} s"
    print(f"  (rollback: confirm timeout {CONFIRM_TIMEOUT_SECONDS} s; the host's own clock says applied_at -> "
          f"rolled_back_at {host_clock}; the forced `pulumi up` failed after {forced_up:.1f} s "
          f"{'with' if said else 'WITHOUT'} the rolled-back message; deployer SSH afterwards: "
          f"{'works' if ssh_back else 'BROKEN'})")
    for problem in problems:
        print(f"  cleanup: {problem}", file=sys.stderr)
    return 0 if all(ok for *_, ok in rows) and not problems else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slot", type=int, help="lab slot 0-15 (default: the highest free one)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("lab_bench: needs root (the lab creates network namespaces); run it with sudo", file=sys.stderr)
        return 2
    missing = engine_missing_reason()
    if missing:
        print(f"lab_bench: {missing}", file=sys.stderr)
        return 2
    # A Ctrl-C or kill still runs the `finally` that destroys the stack.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    return run(free_slot() if args.slot is None else args.slot)


if __name__ == "__main__":
    sys.exit(main())
