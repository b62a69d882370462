"""The apply's one SSH command: persistence packages first, then the release (commit_confirm.apply).

The remote command runs here with a real `sh` in a directory that stands in for the host's release
copy, with a stub `hlfw` that records what it was asked to do; the lab tests run the real one."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hardened_lightsail import commit_confirm
from hardened_lightsail.commit_confirm import DeployError, RemoteRelease
from hardened_lightsail.ssh_session import SshEndpoint

STUB_HLFW = """#!/bin/sh
echo "$1" >> "$(dirname "$0")/calls"
case $1 in
    install-deps)
        [ -f "$(dirname "$0")/deps-fail" ] && { echo "hlfw: error: apt-get update failed" >&2; exit 1; }
        echo "install-deps: iptables, ipset and netfilter-persistent are already installed; nothing to install" ;;
    apply)
        echo "applied 4 rules"
        echo "pending" ;;
esac
"""


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A release directory and a run_remote that runs the command with sh in it."""
    directory = tmp_path / "release"
    directory.mkdir()
    (directory / "RELEASE").write_text("abc123\n")
    (directory / "hlfw").write_text(STUB_HLFW)
    commands = []

    def run_here(_endpoint, command, connect_timeout=5, timeout=120, stdin=None):
        commands.append(command)
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)

    monkeypatch.setattr(commit_confirm, "run_remote", run_here)
    target = RemoteRelease(SshEndpoint("203.0.113.10", 22, "admin", "unused", "ssh-ed25519 AAAA"), str(directory),
                           "abc123")
    return target, directory, commands


def calls(directory: Path) -> list[str]:
    return (directory / "calls").read_text().split()


def test_packages_then_the_release_in_one_ssh_command(host, tmp_path):
    target, directory, commands = host
    said = []
    state = commit_confirm.apply(target, tmp_path, 30, "nonce", said.append)
    assert state == "pending"
    assert len(commands) == 1  # one connection: each costs the host and the deployer a key exchange
    assert calls(directory) == ["install-deps", "apply"]
    # The packages' line is shown as it is, the apply's with its step name.
    assert said == ["install-deps: iptables, ipset and netfilter-persistent are already installed; nothing to install",
                    "apply: applied 4 rules"]


def test_failed_packages_stop_before_anything_is_applied(host, tmp_path):
    target, directory, _ = host
    (directory / "deps-fail").touch()
    with pytest.raises(DeployError) as failed:
        commit_confirm.apply(target, tmp_path, 30, "nonce", lambda _line: None)
    assert calls(directory) == ["install-deps"]
    message = str(failed.value)
    assert "installing the persistence packages failed on the host; nothing was applied" in message
    assert "apt-get update failed" in message


# --- after the confirm: the login home's copies of earlier releases go (commit_confirm.verify_on_host)

RELEASE = "0123456789abcdef"
VERIFY_STUB = """#!/bin/sh
[ "$1" = verify ] || exit 64
echo "verified $3"
exit "$(cat "$(dirname "$0")/verify-exit" 2>/dev/null || echo 0)"
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A login home as CopyToRemote leaves it after three releases, plus what is not ours."""
    home = tmp_path / "home"
    current = home / f".hardened-lightsail-{RELEASE}"
    current.mkdir(parents=True)
    (current / "hlfw").write_text(VERIFY_STUB)
    for older in ("fedcba9876543210", "00000000000000aa"):
        (home / f".hardened-lightsail-{older}").mkdir()
        (home / f".hardened-lightsail-{older}" / "rules.v4").write_text("*filter\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("a symlink's target is not ours to remove\n")
    (home / ".hardened-lightsail-1111111111111111").symlink_to(elsewhere)
    (home / ".hardened-lightsail-notes").mkdir()  # not a release hash
    (home / ".hardened-lightsail-2222").mkdir()  # too short for one
    monkeypatch.setattr(commit_confirm, "run_remote", lambda _endpoint, command, connect_timeout=5, timeout=120:
                        subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30))
    return home, current


def _left(home: Path) -> list[str]:
    return sorted(path.name for path in home.iterdir())


def test_a_verified_release_removes_the_copies_of_earlier_ones_and_nothing_else(home, tmp_path):
    home, current = home
    target = RemoteRelease(SshEndpoint("203.0.113.10", 22, "admin", "unused", "ssh-ed25519 AAAA"), str(current), RELEASE)
    report = commit_confirm.verify_on_host(target)
    assert f"verified {RELEASE}" in report
    assert _left(home) == [".hardened-lightsail-0123456789abcdef", ".hardened-lightsail-1111111111111111",
                           ".hardened-lightsail-2222", ".hardened-lightsail-notes"]
    assert (tmp_path / "elsewhere" / "keep").exists()
    assert (current / "hlfw").exists()


def test_a_failed_verify_still_fails_after_the_cleanup(home):
    home, current = home
    (current / "verify-exit").write_text("4\n")
    target = RemoteRelease(SshEndpoint("203.0.113.10", 22, "admin", "unused", "ssh-ed25519 AAAA"), str(current), RELEASE)
    with pytest.raises(DeployError, match=r"is not what the host runs \(exit 4\)"):
        commit_confirm.verify_on_host(target)
    # The release was confirmed before verify ran: the older copies are still not needed.
    assert ".hardened-lightsail-fedcba9876543210" not in _left(home)


def test_a_release_directory_not_named_by_its_hash_removes_nothing(home, tmp_path):
    home, current = home
    custom = home / "my-release"
    current.rename(custom)
    target = RemoteRelease(SshEndpoint("203.0.113.10", 22, "admin", "unused", "ssh-ed25519 AAAA"), str(custom), RELEASE)
    commit_confirm.verify_on_host(target)
    assert ".hardened-lightsail-fedcba9876543210" in _left(home)
    assert commit_confirm.stale_copies_removed(target) == ":"
