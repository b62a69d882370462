"""fail2ban (the Debian package) really running in a lab server's network namespace, watching the
lab sshd's log and banning through iptables there, next to the project's rules.

Everything of its own lives in one directory the caller owns: the config (the package's filters
and actions, our fail2ban.conf and jail.local), its socket, pid file, database and log; it is
stopped by its pid. Its bans are the package's default action for a jail: a chain f2b-<jail>
that REJECTs banned sources, jumped to first from INPUT for the jail's ports."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from .errors import LabError
from .netns import LAB_NAMESPACE_PREFIX
from .processes import stop_pids, wait_for_pid_file

PACKAGE_CONFIG = Path("/etc/fail2ban")


class Fail2ban:
    def __init__(self, directory: Path, namespace: str, sshd_log: Path, ssh_port: int = 22,
                 max_retry: int = 3, ban_seconds: int = 600):
        if not namespace.startswith(LAB_NAMESPACE_PREFIX):
            raise LabError(f"refusing to run fail2ban outside a lab namespace (got {namespace!r})")
        self.directory, self.namespace, self.sshd_log = directory, namespace, sshd_log
        self.ssh_port, self.max_retry, self.ban_seconds = ssh_port, max_retry, ban_seconds
        self.config = directory / "config"
        self.socket, self.pid_file = directory / "fail2ban.sock", directory / "fail2ban.pid"

    def write_config(self) -> None:
        filters = self.config / "filter.d"
        filters.mkdir(parents=True, exist_ok=True)
        for link, target in ((self.config / "action.d", PACKAGE_CONFIG / "action.d"),
                             (filters / "sshd.conf", PACKAGE_CONFIG / "filter.d" / "sshd.conf"),
                             (filters / "common.conf", PACKAGE_CONFIG / "filter.d" / "common.conf")):
            if not link.exists():
                link.symlink_to(target)  # the package's own files, read-only
        # The lab sshd logs with -E: bare messages ("Invalid user x from ..."), no syslog prefix,
        # which the package's prefix pattern would half-swallow as a host name.
        (filters / "sshd.local").write_text(
            "[Definition]\nprefregex = ^<F-MLFID>\\s*</F-MLFID>%(__pref)s<F-CONTENT>.+</F-CONTENT>$\n")
        (self.config / "fail2ban.conf").write_text(
            "[Definition]\nloglevel = INFO\nallowipv6 = auto\n"
            f"logtarget = {self.directory / 'fail2ban.log'}\n"
            f"socket = {self.socket}\npidfile = {self.pid_file}\n"
            f"dbfile = {self.directory / 'fail2ban.sqlite3'}\ndbpurgeage = 1d\n")
        # The lab sshd logs with -E: plain messages without a date, so the time of reading counts.
        (self.config / "jail.conf").write_text(
            "[DEFAULT]\nbackend = polling\n"
            f"maxretry = {self.max_retry}\nfindtime = 600\nbantime = {self.ban_seconds}\n\n"
            f"[sshd]\nenabled = true\nfilter = sshd\nport = {self.ssh_port}\n"
            f"action = iptables-multiport[name=sshd, port=\"{self.ssh_port}\", protocol=tcp]\n"
            f"logpath = {self.sshd_log}\ndatepattern = {{NONE}}\n")

    def client(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["ip", "netns", "exec", self.namespace, "fail2ban-client", "-c", str(self.config),
                                 "-s", str(self.socket), "-p", str(self.pid_file), *args],
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise LabError(f"fail2ban-client {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result

    def start(self) -> int:
        self.write_config()
        self.client("start")
        pid = wait_for_pid_file(self.pid_file, "fail2ban-server", timeout=20)
        if pid is None:
            raise LabError(f"fail2ban did not start: {(self.directory / 'fail2ban.log').read_text(errors='replace')[-2000:]}")
        return pid

    def banned(self) -> list[str]:
        """Addresses the sshd jail bans now."""
        out = self.client("get", "sshd", "banned").stdout.strip()
        return [word.strip("[]',\"") for word in out.replace(",", " ").split() if word.strip("[]',\"")]

    def ban_rules(self) -> list[str]:
        """The jail's ban rules as they are in the kernel (`iptables -S f2b-sshd`)."""
        result = subprocess.run(["ip", "netns", "exec", self.namespace, "iptables", "-S", "f2b-sshd"],
                                capture_output=True, text=True, timeout=30)
        return result.stdout.splitlines() if result.returncode == 0 else []

    def wait_until_banned(self, address: str, timeout: float = 30) -> None:
        """Until the ban is in the kernel, not only in fail2ban's list (its action runs after)."""
        deadline = time.monotonic() + timeout
        while not any(f"-s {address}/32 " in rule for rule in self.ban_rules()):
            if time.monotonic() > deadline:
                raise LabError(f"fail2ban did not ban {address} within {timeout} s (banned: {self.banned()})")
            time.sleep(0.5)

    def stop(self) -> None:
        pid = wait_for_pid_file(self.pid_file, "fail2ban-server", timeout=0.1)
        if pid is not None:
            self.client("stop", check=False)
            if stop_pids([pid], grace_seconds=10):
                raise LabError(f"fail2ban-server (pid {pid}) survived SIGKILL")
