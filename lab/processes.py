"""Pid files of the lab's daemons: is a daemon running, and stopping one by its pid.

A pid is only trusted if /proc/PID/cmdline still names the lab directory, so a stale pid file
whose number was reused by an unrelated process can never get that process killed."""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(text) if text.isdigit() else None


def is_alive(pid: int) -> bool:
    """True for a running process (a zombie has finished, whatever /proc says)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def running_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in `pid_file` if that process is alive and its command line contains `marker`."""
    pid = read_pid(pid_file)
    if pid is not None and is_alive(pid) and marker in command_line(pid):
        return pid
    return None


def wait_for_pid_file(pid_file: Path, marker: str, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = running_pid(pid_file, marker)
        if pid is not None:
            return pid
        time.sleep(0.02)
    return None


def stop_pids(pids: Iterable[int], grace_seconds: float = 3.0) -> list[int]:
    """SIGTERM each pid, SIGKILL what is left after the grace period; returns pids still alive."""
    pids = [pid for pid in pids if pid != os.getpid()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(is_alive(pid) for pid in pids):
        time.sleep(0.02)
    for pid in pids:
        if is_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(is_alive(pid) for pid in pids):
        time.sleep(0.02)
    return [pid for pid in pids if is_alive(pid)]


def detach(pid_file: str, log: str | None = None) -> bool:
    """Fork a lab daemon off: True in the parent, once the child's pid is in `pid_file` (the
    parent then exits, which is what the starter waits for); False in the child, which is in its
    own session with stdin closed and stdout/stderr going to `log` (or nowhere)."""
    child = os.fork()
    if child:
        with open(pid_file + ".tmp", "w") as handle:
            handle.write(f"{child}\n")
        os.replace(pid_file + ".tmp", pid_file)
        return True
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    output = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log else devnull
    os.dup2(devnull, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    return False
