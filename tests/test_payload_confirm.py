"""A confirm is bound to its apply (payload side of issue 9): it must come over another SSH
connection than the apply (conntrack keeps the apply's own session alive under any rules) and
name the nonce whose sha256 the apply recorded (a confirm meant for an earlier apply of the same
release, or a root process on the host that never saw the nonce, cannot keep the rules).

The sandbox tests set $SSH_CONNECTION the way sshd does; the last test runs over real SSH."""

from __future__ import annotations

import hashlib
import os

import pytest

from payload_fixtures import (  # noqa: F401 (fixtures)
    ADMIN_V4,
    apply,
    confirm,
    host,
    keeps_ssh,
    lab_good_release,
    lab_server,
    lab_ssh,
    lab_state,
    machine_is_untouched,
)
from payload_helpers import PAYLOAD_MARKS

pytestmark = PAYLOAD_MARKS

APPLY_CONNECTION = f"{ADMIN_V4} 50100 192.0.2.1 22"
REFUSED = 5
NOT_OVER_SSH = ("hlfw: error: confirm must come over a new SSH connection: this one is not over SSH "
                "(SSH_CONNECTION is empty); release {} stays pending\n")
SAME_CONNECTION = ("hlfw: error: confirm must come over a new SSH connection: this is the apply's own "
                   "connection ({}); release {} stays pending\n")
STALE_NONCE = "hlfw: error: stale or wrong nonce: this confirm belongs to another apply"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apply_bound(host, directory, nonce: str, connection: str = APPLY_CONNECTION, timeout: int = 30):
    applied = apply(host, directory, timeout, extra=("--nonce-sha256", sha256(nonce)),
                    env={"SSH_CONNECTION": connection})
    assert applied.returncode == 0, applied.stderr
    return applied


def still_pending_and_armed(host, release_hash) -> bool:
    state = host.state()
    sleeper = state.get("rollback_handle", "")
    return (state.get("state") == "pending" and state.get("release") == release_hash
            and sleeper.isdigit() and os.path.exists(f"/proc/{sleeper}"))


def test_apply_records_the_nonce_hash_and_its_connection_and_ends_with_a_machine_line(host, keeps_ssh):
    directory, release_hash = keeps_ssh

    applied = apply_bound(host, directory, "nonce-one")

    state = host.state()
    assert state["nonce_sha256"] == sha256("nonce-one")
    assert "nonce-one" not in (host.state_dir / "state").read_text() + (host.state_dir / "log").read_text()
    assert state["apply_connection"] == APPLY_CONNECTION
    assert applied.stdout.splitlines()[-1] == f"hlfw-apply: pending release={release_hash} deadline={state['deadline']}"


def test_confirm_that_is_not_over_ssh_is_refused_and_changes_nothing(host, keeps_ssh):
    directory, release_hash = keeps_ssh
    apply_bound(host, directory, "nonce-one")
    before = host.save("v4")

    refused = confirm(host, release_hash, "--nonce", "nonce-one", connection=None)

    assert refused.returncode == REFUSED
    assert refused.stderr == NOT_OVER_SSH.format(release_hash)
    assert still_pending_and_armed(host, release_hash) and host.save("v4") == before
    assert list(host.etc_iptables.iterdir()) == []  # nothing persisted


def test_confirm_over_the_apply_connection_is_refused(host, keeps_ssh):
    directory, release_hash = keeps_ssh
    apply_bound(host, directory, "nonce-one")

    refused = confirm(host, release_hash, "--nonce", "nonce-one", connection=APPLY_CONNECTION)

    assert refused.returncode == REFUSED
    assert refused.stderr == SAME_CONNECTION.format(APPLY_CONNECTION, release_hash)
    assert still_pending_and_armed(host, release_hash)
    assert confirm(host, release_hash, "--nonce", "nonce-one").returncode == 0  # a new connection


def test_reapply_of_the_pending_release_makes_the_earlier_nonce_stale(host, keeps_ssh):
    directory, release_hash = keeps_ssh
    first = apply_bound(host, directory, "nonce-one")
    deadline = host.state()["deadline"]

    second = apply_bound(host, directory, "nonce-two", connection=f"{ADMIN_V4} 50102 192.0.2.1 22")

    # Nothing reloaded, same deadline, but only the newest apply's confirm counts now.
    assert "already live and waiting for confirmation" in second.stdout
    assert second.stdout.splitlines()[-1] == first.stdout.splitlines()[-1] == \
        f"hlfw-apply: pending release={release_hash} deadline={deadline}"
    for stale in (("--nonce", "nonce-one"), ("--nonce", "nonce-guessed"), ()):
        refused = confirm(host, release_hash, *stale)
        assert refused.returncode == REFUSED, stale
        assert refused.stderr.startswith(STALE_NONCE) and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "nonce-one" not in refused.stderr
        assert still_pending_and_armed(host, release_hash)
    confirmed = confirm(host, release_hash, "--nonce", "nonce-two")
    assert confirmed.returncode == 0, confirmed.stderr
    assert host.status()["state"] == "active"


def test_confirm_of_an_active_release_needs_no_nonce_and_changes_nothing(host, keeps_ssh):
    directory, release_hash = keeps_ssh
    apply_bound(host, directory, "nonce-one")
    assert confirm(host, release_hash, "--nonce", "nonce-one").returncode == 0

    again = confirm(host, release_hash, connection=None)

    assert again.returncode == 0, again.stderr
    assert "already confirmed" in again.stdout


def test_confirm_after_the_deadline_is_too_late_whatever_the_nonce(host, keeps_ssh):
    directory, release_hash = keeps_ssh
    apply_bound(host, directory, "nonce-one", timeout=1)
    host.wait_for_state("rolled-back", 1 + 5)

    late = confirm(host, release_hash, "--nonce", "nonce-one")

    assert late.returncode == 3
    assert late.stderr == "rules were rolled back: new SSH connections failed within 1 s\n"


@pytest.mark.parametrize("bad", ["ABCDEF" * 10 + "ABCD", "0" * 63, "xyz"])
def test_a_malformed_nonce_hash_is_a_usage_error_before_anything_is_touched(host, keeps_ssh, bad):
    directory, _ = keeps_ssh
    result = apply(host, directory, extra=("--nonce-sha256", bad))
    assert result.returncode == 2
    assert "--nonce-sha256 must be" in result.stderr
    assert host.state() == {}


def test_sudo_hands_on_the_ssh_connection_so_confirm_can_tell_connections_apart(host, keeps_ssh):
    # A login user that is not root: `id -u` says 1000 until "sudo" ran. The sudo shim resets
    # the environment like sudo's env_reset (only PATH and the sandbox's syslog switch survive),
    # so the connection reaches the root hlfw only if hlfw hands it on itself.
    host.write_shim("id", '[ "$1" = -u ] || exec /usr/bin/id "$@"\n'
                          '[ -n "${FAKE_ROOT:-}" ] && echo 0 || echo 1000\n')
    host.write_shim("sudo", 'while [ "$1" = -n ] || [ "$1" = -- ]; do shift; done\n'
                            'exec /usr/bin/env -i "PATH=$PATH" HLFW_SYSLOG=0 FAKE_ROOT=1 "$@"\n')
    directory, release_hash = keeps_ssh

    apply_bound(host, directory, "nonce-one")
    assert host.state()["apply_connection"] == APPLY_CONNECTION
    refused = confirm(host, release_hash, "--nonce", "nonce-one", connection=APPLY_CONNECTION)
    assert refused.returncode == REFUSED, refused.stderr
    confirmed = confirm(host, release_hash, "--nonce", "nonce-one")
    assert confirmed.returncode == 0, confirmed.stderr


def test_ssh_confirm_is_bound_to_a_new_connection_and_the_newest_apply(lab_server, tmp_path):
    lab = lab_server
    directory, release_hash = lab_good_release(lab, tmp_path)
    hlfw = f"sh {directory}/hlfw"

    # The deployer's apply session tries to confirm itself: same connection, refused.
    same = lab_ssh(lab, f"{hlfw} apply --release {directory} --timeout 60 --nonce-sha256 {sha256('first')}"
                        f' >/dev/null; echo "apply=$?"; {hlfw} confirm --release {release_hash} --nonce first;'
                        ' echo "confirm=$?"; echo "connection=$SSH_CONNECTION"')
    assert "apply=0" in same.stdout and f"confirm={REFUSED}" in same.stdout, same.stdout + same.stderr
    connection = same.stdout.split("connection=", 1)[1].strip()
    assert connection.split()[0] == lab.address("admin", 4) and connection.split()[3] == "22"
    assert SAME_CONNECTION.format(connection, release_hash) in same.stderr
    assert lab_state(lab)["apply_connection"] == connection

    # A second apply of the same release (a retried `up`) binds the confirm to its own nonce.
    again = lab_ssh(lab, f"{hlfw} apply --release {directory} --timeout 60 --nonce-sha256 {sha256('second')}")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1].startswith(f"hlfw-apply: pending release={release_hash} deadline=")
    stale = lab_ssh(lab, f"{hlfw} confirm --release {release_hash} --nonce first")
    assert stale.returncode == REFUSED and stale.stderr.startswith(STALE_NONCE), stale.stderr
    assert lab_state(lab)["state"] == "pending"

    confirmed = lab_ssh(lab, f"{hlfw} confirm --release {release_hash} --nonce second")
    assert confirmed.returncode == 0, confirmed.stderr
    state = lab_state(lab)
    assert state["state"] == "active" and state["confirm_connection"] not in ("", connection)
