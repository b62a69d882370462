"""A booting lab server's first-boot step stops the image's sshd by its pid file only while that
pid is still that sshd: a stale pid file must never cost another process (another lab's scan,
a test client) a SIGTERM. No namespaces needed: plain processes stand in for the two."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lab.boot import stop_image_sshd
from lab.processes import is_alive

SLEEPER = "import time; time.sleep(60)"


def _process(*marker: str) -> subprocess.Popen:
    """A process that sleeps; `marker` words end up in its command line. Returned once it runs
    the sleeper: between fork and exec its command line is still this test's own."""
    process = subprocess.Popen([sys.executable, "-c", SLEEPER, *marker])
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    deadline = time.monotonic() + 10
    while SLEEPER not in cmdline.read_bytes().decode(errors="replace"):
        assert time.monotonic() < deadline, "the stand-in process never started"
        time.sleep(0.01)
    return process


def _ended(process: subprocess.Popen) -> bool:
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_a_stale_image_sshd_pid_file_naming_another_process_stops_nothing(tmp_path):
    image_config = str(tmp_path / "lab" / "sshd_config.image")
    pid_file = tmp_path / "sshd.pid"
    bystander = _process()  # another process now holds the number the pid file names
    try:
        pid_file.write_text(f"{bystander.pid}\n")
        stop_image_sshd(pid_file, image_config)
        assert not _ended(bystander), "a process that is not the image's sshd was stopped"
        assert is_alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait()


def test_the_image_sshd_named_by_its_pid_file_is_stopped(tmp_path):
    image_config = str(tmp_path / "lab" / "sshd_config.image")
    pid_file = tmp_path / "sshd.pid"
    image_sshd = _process("-f", image_config)  # its command line names the image's config, as sshd's does
    try:
        pid_file.write_text(f"{image_sshd.pid}\n")
        stop_image_sshd(pid_file, image_config)
        assert _ended(image_sshd), "the image's sshd was left running"
    finally:
        image_sshd.kill()
        image_sshd.wait()


def test_no_pid_file_stops_nothing(tmp_path):
    stop_image_sshd(Path(tmp_path / "missing.pid"), str(tmp_path / "sshd_config.image"))
