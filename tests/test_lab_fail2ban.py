"""fail2ban next to the project's rules (issue 11), in a real lab: the Debian package runs in the
lab server's namespace against the lab sshd's log (lab/fail2ban.py) and bans a source that
fails to log in; that ban survives an apply and a rollback of the project's rules (they own only
their HL-* chains), and it holds even for a source inside adminCidrs: both limits work together."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from lab import ADMIN_CIDRS
from lab.fail2ban import Fail2ban
from lab.topology import ADMIN, INTERNET2, SERVER

from payload_fixtures import lab_server, lab_ssh, lab_state, render_lab_release  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.netfilter,
    pytest.mark.skipif(shutil.which("fail2ban-server") is None, reason="fail2ban is not installed (scripts/setup)"),
]


def ssh_from(lab, client, user="root"):
    return subprocess.run(lab.ssh_argv(client, ["true"], user=user, connect_timeout=3),
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def apply_and_confirm(lab, directory, release_hash):
    applied = lab_ssh(lab, f"sh {directory}/hlfw apply --release {directory} --timeout 60")
    assert applied.returncode == 0, applied.stderr
    confirmed = lab_ssh(lab, f"sh {directory}/hlfw confirm --release {release_hash}")
    assert confirmed.returncode == 0, confirmed.stderr


def test_a_fail2ban_ban_survives_an_apply_and_a_rollback_and_holds_inside_admin_cidrs(lab_server, tmp_path):
    lab = lab_server
    # internet2 is an admin too: only fail2ban's ban can keep it out.
    admins = [*ADMIN_CIDRS, f"{lab.address(INTERNET2, 4)}/32"]
    first = render_lab_release(tmp_path, "first", admins)
    apply_and_confirm(lab, *first)
    assert ssh_from(lab, INTERNET2).returncode == 0
    fail2ban = Fail2ban(tmp_path / "fail2ban", lab.namespace(SERVER), lab.layout.log_file("sshd"), max_retry=3)
    fail2ban.start()
    try:
        for _ in range(4):  # unknown users: "Invalid user ... from <internet2>" in the sshd log
            assert ssh_from(lab, INTERNET2, user="nosuchuser").returncode == 255
        fail2ban.wait_until_banned(lab.address(INTERNET2, 4))
        banned = ssh_from(lab, INTERNET2)
        assert banned.returncode == 255 and "refused" in banned.stderr, banned.stderr
        f2b_rules = [line for line in lab.run(SERVER, ["iptables", "-S"]).stdout.splitlines() if "f2b-" in line]

        # A new release, applied and confirmed over SSH from the admin: the ban stays.
        second = render_lab_release(tmp_path, "second", [*admins, "2001:db8:ffff::/48"])
        apply_and_confirm(lab, *second)
        assert [line for line in lab.run(SERVER, ["iptables", "-S"]).stdout.splitlines() if "f2b-" in line] == f2b_rules
        assert "refused" in ssh_from(lab, INTERNET2).stderr
        assert ssh_from(lab, ADMIN).returncode == 0

        # One more, rolled back by hand: the ban stays through the rollback too.
        third_dir, _ = render_lab_release(tmp_path, "third", [*admins, "2001:db8:fffe::/48"])
        assert lab_ssh(lab, f"sh {third_dir}/hlfw apply --release {third_dir} --timeout 60").returncode == 0
        rolled_back = lab_ssh(lab, f"sh {third_dir}/hlfw rollback")
        assert rolled_back.returncode == 0, rolled_back.stderr
        assert lab_state(lab)["state"] == "rolled-back"
        assert [line for line in lab.run(SERVER, ["iptables", "-S"]).stdout.splitlines() if "f2b-" in line] == f2b_rules
        assert "refused" in ssh_from(lab, INTERNET2).stderr
        assert ssh_from(lab, ADMIN).returncode == 0
        assert fail2ban.banned() == [lab.address(INTERNET2, 4)]
    finally:
        fail2ban.stop()
