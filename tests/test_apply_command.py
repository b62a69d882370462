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
