"""What the payload tests share: hand-written releases (one that keeps SSH, one with a
blocklist in ipsets and a raw table, one that locks everyone out), a rendered one, the sandbox
fixture, hlfw steps as the deployer runs them (`apply`, `confirm` over a new connection), and
the same over real SSH into a lab server. Import the fixtures into the test module."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab_fixtures import root_firewall
from payload_helpers import HostSandbox, host_files_fingerprint, make_release

ADMIN_V4 = "198.51.100.10"
ADMIN_V6 = "2001:db8:100::10"

# Releases own their HL-* chains, one jump into each from a built-in chain and INPUT's policy
# (payload/hlfw-owned.sh); everything else on the host stays as it is.
# Keeps SSH open from the admin address only; web open to all.
KEEPS_SSH_V4 = f"""*filter
:INPUT DROP [0:0]
:HL-INPUT - [0:0]
-A HL-INPUT -i lo -j ACCEPT
-A HL-INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A HL-INPUT -s {ADMIN_V4}/32 -p tcp -m tcp --dport 22 -j ACCEPT
-A HL-INPUT -p tcp -m tcp --dport 80 -j ACCEPT
-A INPUT -j HL-INPUT
COMMIT
"""
KEEPS_SSH_V6 = f"""*filter
:INPUT DROP [0:0]
:HL-INPUT - [0:0]
-A HL-INPUT -i lo -j ACCEPT
-A HL-INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A HL-INPUT -p ipv6-icmp -j ACCEPT
-A HL-INPUT -s {ADMIN_V6}/128 -p tcp -m tcp --dport 22 -j ACCEPT
-A HL-INPUT -p tcp -m tcp --dport 80 -j ACCEPT
-A INPUT -j HL-INPUT
COMMIT
"""
# Same plus a blocklist in ipsets and a chain of its own in the raw table.
BLOCKLIST_V4 = KEEPS_SSH_V4.replace(
    "-A HL-INPUT -i lo -j ACCEPT\n",
    "-A HL-INPUT -i lo -j ACCEPT\n-A HL-INPUT -m set --match-set hl-block-v4 src -j DROP\n",
) + "*raw\n:HL-RAW - [0:0]\n-A HL-RAW -s 192.0.2.66/32 -j DROP\n-A PREROUTING -j HL-RAW\nCOMMIT\n"
BLOCKLIST_V6 = KEEPS_SSH_V6.replace(
    "-A HL-INPUT -i lo -j ACCEPT\n",
    "-A HL-INPUT -i lo -j ACCEPT\n-A HL-INPUT -m set --match-set hl-block-v6 src -j DROP\n",
)
BLOCKLIST_IPSETS = """create hl-block-v4 hash:net family inet hashsize 1024 maxelem 65536
add hl-block-v4 203.0.113.0/24
add hl-block-v4 192.0.2.128/25
create hl-block-v6 hash:net family inet6 hashsize 1024 maxelem 65536
add hl-block-v6 2001:db8:bad::/48
"""
# Locks everyone out: no SSH, no established sessions.
LOCKS_OUT_V4 = """*filter
:INPUT DROP [0:0]
:HL-INPUT - [0:0]
-A HL-INPUT -i lo -j ACCEPT
-A INPUT -j HL-INPUT
COMMIT
"""
LOCKS_OUT_V6 = LOCKS_OUT_V4

EMPTY_POLICIES = ["-P INPUT ACCEPT", "-P FORWARD ACCEPT", "-P OUTPUT ACCEPT"]
TOO_LATE = "rules were rolled back: new SSH connections failed within {} s"


@pytest.fixture(autouse=True)
def machine_is_untouched():
    """Fails a test that changed this machine's own firewall or boot files."""
    rules_before, files_before = root_firewall(), host_files_fingerprint()
    yield
    assert root_firewall() == rules_before, "the root namespace's ruleset changed"
    assert host_files_fingerprint() == files_before, "the machine's firewall files changed"


@pytest.fixture
def host(tmp_path):
    sandbox = HostSandbox(tmp_path / "host")
    try:
        yield sandbox
    finally:
        sandbox.close()


@pytest.fixture
def keeps_ssh(tmp_path):
    directory = tmp_path / "release-keeps-ssh"
    return directory, make_release(directory, KEEPS_SSH_V4, KEEPS_SSH_V6)


@pytest.fixture
def blocklist(tmp_path):
    directory = tmp_path / "release-blocklist"
    return directory, make_release(directory, BLOCKLIST_V4, BLOCKLIST_V6, BLOCKLIST_IPSETS)


@pytest.fixture
def locks_out(tmp_path):
    directory = tmp_path / "release-locks-out"
    return directory, make_release(directory, LOCKS_OUT_V4, LOCKS_OUT_V6)


def apply(host, release_dir, timeout=30, extra=(), **kwargs):
    return host.hlfw("apply", "--release", str(release_dir), "--timeout", str(timeout), *extra, **kwargs)


# $SSH_CONNECTION ("client port server port") as sshd sets it: each new connection has its own.
APPLY_CONNECTION = f"{ADMIN_V4} 50100 192.0.2.1 22"
CONFIRM_CONNECTION = f"{ADMIN_V4} 50101 192.0.2.1 22"


def confirm(host, release_hash, *args, env=None, connection=CONFIRM_CONNECTION):
    """`hlfw confirm` as if over a new SSH connection (connection=None: not over SSH at all)."""
    env = dict(env or {})
    if connection is not None:
        env["SSH_CONNECTION"] = connection
    return host.hlfw("confirm", "--release", release_hash, *args, env=env)


def apply_and_confirm(host, release):
    directory, release_hash = release
    applied = apply(host, directory)
    assert applied.returncode == 0, applied.stderr
    confirmed = confirm(host, release_hash)
    assert confirmed.returncode == 0, confirmed.stderr


def load_rules(host, v4, v6, ipsets=None):
    """Puts hand-made 'previous' rules into the sandbox, as an operator might have."""
    if ipsets:
        host.netns_run(["ipset", "restore"], input=ipsets)
    host.netns_run(["iptables-restore"], input=v4)
    host.netns_run(["ip6tables-restore"], input=v6)


def send_udp_on_loopback(host):
    """A few packets through INPUT (v4 and v6) so that rule counters move."""
    host.netns_run([sys.executable, "-c", "import socket\n"
                    "for family, address in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):\n"
                    "    s = socket.socket(family, socket.SOCK_DGRAM)\n"
                    "    for _ in range(3): s.sendto(b'x', (address, 9))\n"])



def render_lab_release(tmp_path: Path, name: str, admin_cidrs, allow_lockout: bool = False):
    """A release rendered by hardened_lightsail from a small web-server policy."""
    from hardened_lightsail.config import settings_from_values
    from hardened_lightsail.release import render_release
    policy = settings_from_values({"firewall": {
        "adminCidrs": list(admin_cidrs),
        "services": [{"name": "http", "protocol": "tcp", "ports": "80"},
                     {"name": "https", "protocol": "tcp", "ports": "443"}],
        "blocklist": ["203.0.113.200/32", "2001:db8:bad::/48"],
        "allowLockout": allow_lockout,
    }}).firewall
    release = render_release(policy)
    return release.write(tmp_path / name), release.hash



# ---------------------------------------------------------------- over real SSH (the lab)
# The lab's server runs a real sshd in its own network namespace; its sessions see lab-owned
# /etc/iptables and /var/lib/hardened-lightsail. Every command is a fresh ssh process from the
# admin namespace, i.e. a new TCP connection, exactly like the deployer's steps.

def lab_ssh(lab, command: str, timeout: float = 60, connect_timeout: int = 5):
    return subprocess.run(lab.ssh_argv("admin", [command], connect_timeout=connect_timeout),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def lab_state(lab) -> dict[str, str]:
    path = lab.layout.server_fs("/var/lib/hardened-lightsail") / "state"
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def lab_rules(lab) -> list[str]:
    """The server's v4 and v6 rules, without counters (SSH traffic moves those)."""
    return [line for tool in ("iptables", "ip6tables") for line in lab.run("server", [tool, "-S"]).stdout.splitlines()]


def wait_for_lab_state(lab, wanted: str, timeout: float) -> float:
    start = time.monotonic()
    while lab_state(lab).get("state") != wanted:
        assert time.monotonic() - start < timeout, f"state never became {wanted}: {lab_state(lab)}"
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.fixture
def lab_server(lab_factory):
    """A fresh lab per test; a rollback sleeper left behind is stopped (by its PID) first."""
    lab = lab_factory.up()
    yield lab
    pid = lab_state(lab).get("rollback_handle", "")
    if pid.isdigit() and "_rollback-sleeper" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace") \
            if Path(f"/proc/{pid}/cmdline").exists() else False:
        os.killpg(int(pid), signal.SIGKILL)


def lab_good_release(lab, tmp_path):
    from lab import ADMIN_CIDRS
    return render_lab_release(tmp_path, "lab-good", ADMIN_CIDRS)
