"""Sandboxes and releases for testing payload/hlfw without touching this machine.

A HostSandbox is a network namespace plus, for every hlfw run, a private mount
namespace in which /etc and /var/lib are overlays (so nothing can write the
real ones) and /etc/iptables, /etc/sysconfig and /var/lib/hardened-lightsail
are bind mounts of the sandbox's own directories.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from hardened_lightsail.release import payload_files

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = REPO / "payload" / "hlfw"

# The marks of every payload test module: it loads rules into namespaces it makes (root, iptables).
PAYLOAD_MARKS = [
    pytest.mark.netfilter,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("iptables-restore") is None, reason="iptables not installed"),
]

# Runs inside `unshare --mount --propagation private`; "$@" is the command.
_MOUNT_SCRIPT = """set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir={root}/etc-upper,workdir={root}/etc-work /etc
mount -t overlay overlay -o lowerdir=/var/lib,upperdir={root}/varlib-upper,workdir={root}/varlib-work /var/lib
mkdir -p /etc/iptables /etc/sysconfig /var/lib/hardened-lightsail
mount --bind {root}/etc-iptables /etc/iptables
mount --bind {root}/etc-sysconfig /etc/sysconfig
mount --bind {root}/state /var/lib/hardened-lightsail
exec "$@"
"""


# `sshd -T` of a keys-only sshd (what the sandbox's `sshd` shim prints).
SSHD_T_KEYS_ONLY = ("printf '%s\\n' 'passwordauthentication no' 'kbdinteractiveauthentication no' "
                    "'permitrootlogin without-password' 'authenticationmethods any'\n")


class HostSandbox:
    """One fake server: its own netfilter (netns) and its own boot/state files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.netns = f"hlt-{uuid.uuid4().hex[:10]}"
        for name in ("etc-upper", "etc-work", "varlib-upper", "varlib-work",
                     "etc-iptables", "etc-sysconfig", "state", "shims"):
            (root / name).mkdir(parents=True, exist_ok=True)
        self.etc_iptables = root / "etc-iptables"
        self.etc_sysconfig = root / "etc-sysconfig"
        self.state_dir = root / "state"
        self.shims = root / "shims"
        self._started: list[subprocess.Popen] = []
        # hlfw verify asks sshd what it allows; outside any sshd it would read this machine's
        # /etc/ssh: the sandbox's sshd is a keys-only one (tests/test_sshd_logins.py varies a real one).
        self.write_shim("sshd", SSHD_T_KEYS_ONLY)
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        self.netns_run(["ip", "link", "set", "lo", "up"])

    # ------------------------------------------------------------ running

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs argv in this sandbox's namespaces."""
        script = _MOUNT_SCRIPT.format(root=shlex.quote(str(self.root)))
        return ["ip", "netns", "exec", self.netns, "unshare", "--mount",
                "--propagation", "private", "sh", "-c", script, "hlfw-sandbox", *argv]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.shims}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env["HLFW_SYSLOG"] = "0"
        env.pop("HLFW_STATE_DIR", None)
        env.pop("SSH_CONNECTION", None)  # a test run from an SSH session is not the deployer's
        env.update(extra or {})
        return env

    def hlfw(self, *args: str, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.wrap(["sh", str(PAYLOAD), *args]), env=self.env(env),
                              capture_output=True, text=True, timeout=timeout)

    def popen(self, argv: list[str], env: dict[str, str] | None = None,
              **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(self.wrap(argv), env=self.env(env), text=True,
                                start_new_session=True, **kwargs)
        self._started.append(proc)
        return proc

    def popen_hlfw(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.popen(["sh", str(PAYLOAD), *args], env=env)

    def netns_run(self, argv: list[str], check: bool = True,
                  input: str | None = None) -> subprocess.CompletedProcess:
        """Runs argv in the sandbox's network namespace (no mount namespace needed)."""
        result = subprocess.run(["ip", "netns", "exec", self.netns, *argv], input=input,
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} failed ({result.returncode}): {result.stderr}")
        return result

    # ------------------------------------------------------------ looking

    def save(self, family: str = "v4", counters: bool = False) -> str:
        """iptables-save of the sandbox without comment lines (and counters unless asked)."""
        tool = "iptables-save" if family == "v4" else "ip6tables-save"
        out = self.netns_run([tool, "-c"] if counters else [tool]).stdout
        lines = [line for line in out.splitlines() if not line.startswith("#")]
        if not counters:
            lines = [re.sub(r" \[\d+:\d+\]$", "", line) for line in lines]
        return "\n".join(lines) + "\n"

    def rules(self, family: str = "v4") -> list[str]:
        """`iptables -S` lines, e.g. ['-P INPUT DROP', '-A INPUT -i lo -j ACCEPT']."""
        tool = "iptables" if family == "v4" else "ip6tables"
        return self.netns_run([tool, "-S"]).stdout.splitlines()

    def all_rules(self, family: str = "v4") -> dict[str, list[str]]:
        """`iptables -t TABLE -S` of every table; a missing table shows as empty ACCEPT."""
        tool = "iptables" if family == "v4" else "ip6tables"
        return {table: self.netns_run([tool, "-t", table, "-S"]).stdout.splitlines()
                for table in ("filter", "raw", "mangle", "nat")}

    def ipsets(self) -> str:
        out = self.netns_run(["ipset", "save"]).stdout
        return "\n".join(sorted(re.sub(r" initval 0x[0-9a-f]+", "", line)
                                for line in out.splitlines())) + "\n"

    def state(self) -> dict[str, str]:
        path = self.state_dir / "state"
        if not path.exists():
            return {}
        return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)

    def status(self) -> dict[str, str]:
        result = self.hlfw("status")
        assert result.returncode == 0, result.stderr
        return dict(line.split("=", 1) for line in result.stdout.splitlines())

    def wait_for_state(self, wanted: str, timeout: float) -> float:
        """Polls the state file until state == wanted; returns the seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.state().get("state") == wanted:
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"state never became {wanted!r} within {timeout} s: {self.state()}")

    def flush_everything(self) -> None:
        """What a reboot leaves: no rules, ACCEPT policies, no sets."""
        for tool in ("iptables", "ip6tables"):
            for chain in ("INPUT", "FORWARD", "OUTPUT"):
                self.netns_run([tool, "-P", chain, "ACCEPT"])
            self.netns_run([tool, "-F"])
            self.netns_run([tool, "-X"])
        self.netns_run(["ipset", "destroy"])

    def kill_sleeper(self) -> None:
        """Kills the rollback sleeper, as a reboot would."""
        pid = int(self.state()["rollback_handle"])
        os.killpg(pid, signal.SIGKILL)

    def write_shim(self, name: str, body: str) -> None:
        path = self.shims / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)

    # ------------------------------------------------------------ teardown

    def close(self) -> None:
        """Kills every process left in the sandbox (by PID), then removes the netns."""
        for proc in self._started:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        pids = subprocess.run(["ip", "netns", "pids", self.netns],
                              capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", self.netns], check=False)


def make_release(directory: Path, rules_v4: str, rules_v6: str, ipsets: str | None = None) -> str:
    """Writes a release directory the way hardened_lightsail.release does; returns its hash.

    manifest.sha256 covers every file but itself and RELEASE; the hash is the start of
    sha256(manifest.sha256)."""
    files = {"rules.v4": rules_v4.encode(), "rules.v6": rules_v6.encode(), **payload_files()}
    if ipsets is not None:
        files["ipsets"] = ipsets.encode()
    directory.mkdir(parents=True, exist_ok=True)
    manifest = "".join(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n" for name in sorted(files))
    release_hash = hashlib.sha256(manifest.encode()).hexdigest()[:16]
    files["manifest.sha256"] = manifest.encode()
    files["RELEASE"] = f"{release_hash}\n".encode()
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return release_hash


def host_files_fingerprint() -> dict[str, str]:
    """Hashes of the files in the machine's own boot-time firewall and state directories.

    Only files count: the lab creates empty mountpoints for its bind mounts there."""
    found = {}
    defaults = Path("/etc/default/netfilter-persistent")  # the payload sets its boot flags there
    if defaults.is_file():
        found[str(defaults)] = hashlib.sha256(defaults.read_bytes()).hexdigest()
    for base in ("/etc/iptables", "/etc/sysconfig", "/var/lib/hardened-lightsail"):
        path = Path(base)
        if path.is_dir():
            for item in sorted(path.rglob("*")):
                if item.is_file():
                    found[str(item)] = hashlib.sha256(item.read_bytes()).hexdigest()
    return found
