"""A booting lab server: what a new Lightsail instance goes through before it is ready, played in
the server's own namespaces with lab-owned files (never on this machine's sshd or package lock).

With a BootPlan of S seconds, `up` returns at once and then, counted from `up`:
  0      cloud-init `running`; the package lock held (as unattended-upgrades holds it);
  S/4    sshd starts on 22 with the image's own host key (a throwaway key, not the pinned one);
  S/2    the first-boot step: sshd restarts with the pinned host key, on the plan's SSH port;
  S      the package lock is free and cloud-init says `done`.
The daemon runs as `python -m lab.boot ...` in the server's network namespace and private mount
namespace (lab/services.py starts it there), so the sshd it starts and every SSH session see the
lab's `cloud-init` stand-in and its lock file; it exits when the boot is over."""
from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .processes import detach, running_pid, stop_pids
from .topology import SSH_PORT

PACKAGE_LOCK = "/var/lib/dpkg/lock-frontend"  # as the server sees it: a lab-owned file there
RUNNING, DONE = "running", "done"


@dataclass(frozen=True)
class BootPlan:
    seconds: float  # from `up` until the server is ready
    ssh_port: int = SSH_PORT  # where the first-boot step moves sshd (22: it stays on 22)

    @property
    def sshd_at(self) -> float:
        return self.seconds / 4

    @property
    def first_boot_at(self) -> float:
        return self.seconds / 2


def cloud_init_stand_in(status_file: Path) -> str:
    """The lab server's `cloud-init` (only `status [--wait]`), answering from `status_file`."""
    return f"""#!/bin/sh
# hardened-lightsail lab: the server's stand-in for cloud-init. Only `status` is known; it reads
# {status_file}, which says running while the lab's boot step runs, then done.
read_status() {{ status=$(cat '{status_file}' 2>/dev/null || echo done); }}
read_status
case "${{1:-}}" in
    status)
        if [ "${{2:-}}" = --wait ]; then
            while [ "$status" = {RUNNING} ]; do sleep 1; read_status; done
        fi
        echo "status: $status" ;;
    *) echo "cloud-init (hardened-lightsail lab stand-in): only 'status' is known" >&2; exit 2 ;;
esac
"""


def _sleep_until(started: float, at: float) -> None:
    time.sleep(max(0.0, started + at - time.monotonic()))


def _start_sshd(sshd: str, config: str, log: str) -> None:
    """sshd detaches by itself and writes the PidFile its config names."""
    subprocess.run([sshd, "-f", config, "-E", log], check=True, timeout=10, stdin=subprocess.DEVNULL)


def stop_image_sshd(pid_file: Path, image_config: str) -> None:
    """Stop the image's sshd, found by its pid file, if that pid is still the sshd started with
    `image_config`: a pid file left stale (that sshd failed to start, or is gone) may name a
    process of someone else's by now (another lab's scan, a test client), which must live on."""
    pid = running_pid(pid_file, image_config)
    if pid is not None:
        stop_pids([pid])


def run_boot(args: argparse.Namespace) -> None:
    started = time.monotonic()
    status = Path(args.status_file)
    status.write_text(RUNNING + "\n")
    lock = None
    if os.path.exists(PACKAGE_LOCK):
        lock = os.open(PACKAGE_LOCK, os.O_RDWR)
        fcntl.flock(lock, fcntl.LOCK_EX)  # what apt takes; `fuser` sees who holds it
    _sleep_until(started, args.sshd_at)
    _start_sshd(args.sshd, args.image_config, args.log)
    _sleep_until(started, args.first_boot_at)
    stop_image_sshd(Path(args.sshd_pid_file), args.image_config)
    _start_sshd(args.sshd, args.config, args.log)
    _sleep_until(started, args.seconds)
    if lock is not None:
        os.close(lock)
    status.write_text(DONE + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.boot", description=__doc__)
    for option in ("--sshd", "--config", "--image-config", "--log", "--sshd-pid-file", "--status-file", "--pid-file",
                   "--boot-log"):
        parser.add_argument(option, required=True)
    for option in ("--seconds", "--sshd-at", "--first-boot-at"):
        parser.add_argument(option, type=float, required=True)
    args = parser.parse_args(argv)
    if not detach(args.pid_file, args.boot_log):
        try:
            run_boot(args)
        finally:
            os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
