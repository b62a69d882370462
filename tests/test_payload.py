"""The host payload (payload/hlfw) in a sandboxed network + mount namespace.

Each test gets a fresh HostSandbox (see payload_helpers): hlfw runs for real
(iptables-restore, ipset, the detached rollback sleeper) but only ever sees the
sandbox's netfilter, boot files and state directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from payload_fixtures import (  # noqa: F401 (fixtures)
    ADMIN_V4,
    ADMIN_V6,
    BLOCKLIST_IPSETS,
    BLOCKLIST_V4,
    BLOCKLIST_V6,
    EMPTY_POLICIES,
    KEEPS_SSH_V4,
    KEEPS_SSH_V6,
    TOO_LATE,
    apply,
    apply_and_confirm,
    blocklist,
    confirm,
    host,
    keeps_ssh,
    lab_good_release,
    lab_rules,
    lab_server,
    lab_ssh,
    lab_state,
    load_rules,
    locks_out,
    machine_is_untouched,
    render_lab_release,
    send_udp_on_loopback,
    wait_for_lab_state,
)
from payload_helpers import PAYLOAD, PAYLOAD_MARKS, make_release

pytestmark = PAYLOAD_MARKS

# ---------------------------------------------------------------- apply + confirm

def test_first_apply_then_confirm_makes_release_active_and_persisted(host, blocklist):
    directory, release_hash = blocklist

    applied = apply(host, directory, timeout=30)

    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.startswith(f"applied release {release_hash} (v4: 8 rules, v6: 7 rules, ipsets: 2)")
    assert host.status()["state"] == "pending"
    assert f"-A HL-INPUT -s {ADMIN_V4}/32 -p tcp -m tcp --dport 22 -j ACCEPT" in host.rules("v4")
    assert "-A HL-INPUT -m set --match-set hl-block-v6 src -j DROP" in host.rules("v6")
    assert "add hl-block-v4 203.0.113.0/24" in host.ipsets()

    confirmed = confirm(host, release_hash)

    assert confirmed.returncode == 0, confirmed.stderr
    status = host.status()
    assert status["state"] == "active"
    assert status["release"] == release_hash
    assert status["persisted_release"] == release_hash
    assert status["deadline"] == ""
    # The release files themselves are persisted, byte for byte (never iptables-save).
    assert (host.etc_iptables / "rules.v4").read_text() == BLOCKLIST_V4
    assert (host.etc_iptables / "rules.v6").read_text() == BLOCKLIST_V6
    assert (host.etc_iptables / "ipsets").read_text() == BLOCKLIST_IPSETS
    assert sorted(p.name for p in host.etc_iptables.iterdir()) == ["ipsets", "rules.v4", "rules.v6"]
    # The sleeper is gone: nothing would roll the confirmed release back.
    time.sleep(0.5)
    assert subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True,
                          text=True).stdout.split() == []
    verified = host.hlfw("verify", "--release", release_hash)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_confirm_persists_to_sysconfig_on_amazon_linux(host, blocklist, tmp_path):
    os_release = tmp_path / "os-release"
    os_release.write_text('NAME="Amazon Linux"\nVERSION_ID="2023"\nID="amzn"\nID_LIKE="fedora"\n')
    env = {"HLFW_OS_RELEASE": str(os_release)}
    directory, release_hash = blocklist

    assert apply(host, directory, env=env).returncode == 0
    confirmed = confirm(host, release_hash, env=env)

    assert confirmed.returncode == 0, confirmed.stderr
    assert (host.etc_sysconfig / "iptables").read_text() == BLOCKLIST_V4
    assert (host.etc_sysconfig / "ip6tables").read_text() == BLOCKLIST_V6
    assert (host.etc_sysconfig / "ipset").read_text() == BLOCKLIST_IPSETS
    assert list(host.etc_iptables.iterdir()) == []
    assert host.hlfw("verify", "--release", release_hash, env=env).returncode == 0


def test_status_json_is_machine_readable(host, keeps_ssh):
    directory, release_hash = keeps_ssh
    assert json.loads(host.hlfw("status", "--json").stdout)["state"] == "none"

    apply(host, directory, timeout=30)
    status = json.loads(host.hlfw("status", "--json").stdout)

    assert status["state"] == "pending"
    assert status["release"] == release_hash
    assert status["timeout"] == 30
    assert isinstance(status["deadline"], int) and status["deadline"] > time.time()
    assert status["previous"] is None and status["persisted_release"] is None


def test_reapply_of_active_release_leaves_live_rules_and_counters_untouched(host, blocklist):
    directory, release_hash = blocklist
    apply_and_confirm(host, blocklist)
    # Make counters non-zero; re-loading the tables would reset them.
    send_udp_on_loopback(host)
    before = (host.save("v4", counters=True), host.save("v6", counters=True), host.ipsets())
    assert "[0:0] -A HL-INPUT -i lo -j ACCEPT" not in before[0]

    again = apply(host, directory)

    assert again.returncode == 0, again.stderr
    assert again.stdout == f"release {release_hash} already active; nothing to do\nhlfw-apply: active release={release_hash}\n"
    assert (host.save("v4", counters=True), host.save("v6", counters=True), host.ipsets()) == before
    assert host.status()["state"] == "active"


def test_reapply_of_pending_release_keeps_the_original_rollback_target(host, keeps_ssh):
    directory, _release_hash = keeps_ssh
    assert apply(host, directory, timeout=30).returncode == 0

    again = apply(host, directory, timeout=30)

    assert again.returncode == 0
    assert "already live and waiting for confirmation" in again.stdout
    assert host.hlfw("rollback").returncode == 0
    assert host.rules("v4") == EMPTY_POLICIES


def test_reapply_after_live_drift_applies_again(host, keeps_ssh):
    directory, _release_hash = keeps_ssh
    apply_and_confirm(host, keeps_ssh)
    host.netns_run(["iptables", "-I", "HL-INPUT", "-j", "ACCEPT"])

    again = apply(host, directory, timeout=30)

    assert again.returncode == 0
    assert "live rules differ" in again.stderr
    assert "-A HL-INPUT -j ACCEPT" not in host.rules("v4")
    assert host.status()["state"] == "pending"


# ---------------------------------------------------------------- rollback

def test_unconfirmed_apply_rolls_back_within_timeout_and_confirm_then_fails(host, locks_out):
    directory, release_hash = locks_out
    timeout = 4
    applied_at = time.monotonic()

    applied = apply(host, directory, timeout=timeout)
    assert applied.returncode == 0, applied.stderr
    assert host.rules("v4")[0] == "-P INPUT DROP"

    host.wait_for_state("rolled-back", timeout + 5)
    waited = time.monotonic() - applied_at
    print(f"rollback after {waited:.1f} s for a {timeout} s timeout")
    assert timeout - 1 <= waited <= timeout + 5
    assert host.rules("v4") == EMPTY_POLICIES
    assert host.rules("v6") == EMPTY_POLICIES

    confirmed = confirm(host, release_hash)
    assert confirmed.returncode == 3
    assert confirmed.stderr == TOO_LATE.format(timeout) + "\n"
    assert host.status()["state"] == "rolled-back"
    assert list(host.etc_iptables.iterdir()) == []


def test_confirm_after_deadline_rolls_back_even_if_timer_is_late(host, locks_out):
    directory, release_hash = locks_out
    assert apply(host, directory, timeout=2).returncode == 0
    host.kill_sleeper()  # as if the timer had not fired yet
    time.sleep(2.5)

    confirmed = confirm(host, release_hash)

    assert confirmed.returncode == 3
    assert confirmed.stderr == TOO_LATE.format(2) + "\n"
    assert host.rules("v4") == EMPTY_POLICIES


def test_killing_the_apply_session_right_after_rules_go_live_still_rolls_back(host, locks_out):
    directory, release_hash = locks_out
    timeout = 4
    # The SSH session: a shell running apply and then lingering, killed as a whole group.
    session = host.popen(["sh", "-c", f"sh {PAYLOAD} apply --release {directory} --timeout {timeout}; sleep 60"])
    started = time.monotonic()
    while host.state().get("state") != "pending" or host.rules("v4")[0] != "-P INPUT DROP":
        assert time.monotonic() - started < 20, "apply never went live"
        time.sleep(0.05)
    went_live = time.monotonic()

    os.killpg(session.pid, signal.SIGKILL)
    session.wait(timeout=10)

    host.wait_for_state("rolled-back", timeout + 5)
    print(f"rollback {time.monotonic() - went_live:.1f} s after the session died (timeout {timeout} s)")
    assert host.rules("v4") == EMPTY_POLICIES
    assert confirm(host, release_hash).returncode == 3


def test_apply_returns_at_once_because_the_sleeper_holds_no_session_pipes(host, keeps_ssh):
    directory, release_hash = keeps_ssh
    proc = host.popen_hlfw("apply", "--release", str(directory), "--timeout", "60")
    started = time.monotonic()

    _stdout, stderr = proc.communicate(timeout=30)  # EOF on both pipes, like an SSH channel

    assert proc.returncode == 0, stderr
    assert time.monotonic() - started < 10
    assert host.state()["state"] == "pending"
    assert "inherited fd" not in (host.state_dir / "log").read_text()
    assert confirm(host, release_hash).returncode == 0


def test_rollback_restores_exactly_the_previous_rules_and_sets(host, blocklist):
    previous_v4 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:operator-chain - [0:0]
-A INPUT -j operator-chain
-A INPUT -m set --match-set hl-block-v4 src -j REJECT --reject-with icmp-port-unreachable
-A operator-chain -s 192.0.2.7/32 -p udp -m udp --dport 53 -j ACCEPT
COMMIT
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -s 192.0.2.99/32 -j DROP
COMMIT
"""
    previous_v6 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -s 2001:db8:7::/48 -p tcp -m tcp --dport 8080 -j DROP
COMMIT
"""
    previous_sets = "create hl-block-v4 hash:net family inet hashsize 1024 maxelem 65536\nadd hl-block-v4 198.51.100.0/24\n"
    load_rules(host, previous_v4, previous_v6, previous_sets)
    before = (host.save("v4"), host.save("v6"), host.ipsets())
    directory, _release_hash = blocklist

    assert apply(host, directory, timeout=30).returncode == 0
    assert host.save("v4") != before[0]
    rolled_back = host.hlfw("rollback")

    assert rolled_back.returncode == 0, rolled_back.stderr
    assert (host.save("v4"), host.save("v6"), host.ipsets()) == before
    assert host.status()["state"] == "rolled-back"


def long_blocklist_ipsets(count: int, shift: int = 0) -> str:
    """BLOCKLIST_IPSETS with `count` IPv6 /64s in hl-block-v6 (the `shift`-th on), sized as the
    renderer sizes a long list's set."""
    members = "".join(f"add hl-block-v6 2001:db8:{i >> 16:x}:{i & 0xffff:x}::/64\n" for i in range(shift, shift + count))
    return BLOCKLIST_IPSETS.replace(
        "create hl-block-v6 hash:net family inet6 hashsize 1024 maxelem 65536\n",
        "create hl-block-v6 hash:net family inet6 hashsize 131072 maxelem 131072\n" + members)


def test_rollback_restores_a_100k_member_set_exactly(host, tmp_path):
    # Apply fills the new members under a temporary name while it snapshots the live set; the
    # rollback must put back exactly the confirmed 100,000, not the release's.
    confirmed = tmp_path / "confirmed"
    apply_and_confirm(host, (confirmed, make_release(confirmed, BLOCKLIST_V4, BLOCKLIST_V6,
                                                     long_blocklist_ipsets(100_000))))
    before = (host.save("v4"), host.save("v6"), host.ipsets())
    assert before[2].count("add hl-block-v6 ") == 100_001  # and the fixture's own
    changed = tmp_path / "changed"
    make_release(changed, BLOCKLIST_V4, BLOCKLIST_V6, long_blocklist_ipsets(100_000, shift=1))

    assert apply(host, changed).returncode == 0
    live = host.ipsets()
    assert "add hl-block-v6 2001:db8:1:86a0::/64" in live and "add hl-block-v6 2001:db8::/64" not in live
    rolled_back = host.hlfw("rollback")

    assert rolled_back.returncode == 0, rolled_back.stderr
    assert (host.save("v4"), host.save("v6"), host.ipsets()) == before


def test_release_failing_the_test_load_while_its_sets_fill_changes_nothing(host, keeps_ssh, tmp_path):
    # The scratch namespace's test of the rules runs while the sets fill: when it fails, the
    # build still running is stopped and its temporary sets destroyed.
    apply_and_confirm(host, keeps_ssh)
    before = (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state())
    directory = tmp_path / "broken"
    make_release(directory, BLOCKLIST_V4.replace("--dport 80", "--dport 80 -m nosuchmatch"), BLOCKLIST_V6,
                 long_blocklist_ipsets(100_000))

    result = apply(host, directory)

    assert result.returncode == 1
    assert "does not load, nothing was changed" in result.stderr and "rules.v4" in result.stderr
    assert (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state()) == before
    assert "hlfw-tmp-" not in host.ipsets()
    left = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout.split()
    assert left == [], f"processes left in the sandbox: {left}"


def test_apply_over_a_pending_release_whose_rollback_restores_sets_loads_its_own_sets(host, tmp_path):
    # Superseding a pending release rolls it back first, which rebuilds the sets it replaced
    # under temporary names too: the new release must still swap in its own sets, whatever
    # order its file creates them in.
    confirmed = tmp_path / "confirmed"
    apply_and_confirm(host, (confirmed, make_release(
        confirmed, KEEPS_SSH_V4, KEEPS_SSH_V6,
        "create hl-block-v4 hash:net family inet hashsize 1024 maxelem 65536\nadd hl-block-v4 198.51.100.0/24\n")))
    pending = tmp_path / "pending"
    make_release(pending, BLOCKLIST_V4, BLOCKLIST_V6, BLOCKLIST_IPSETS)
    assert apply(host, pending).returncode == 0
    newest = tmp_path / "newest"
    v4_set, v6_set = BLOCKLIST_IPSETS.split("create hl-block-v6")
    make_release(newest, BLOCKLIST_V4, BLOCKLIST_V6,
                 ("create hl-block-v6" + v6_set + v4_set).replace("2001:db8:bad::/48", "2001:db8:beef::/48"))

    result = apply(host, newest)

    assert result.returncode == 0, result.stderr
    live = host.ipsets()
    assert "add hl-block-v6 2001:db8:beef::/48" in live and "2001:db8:bad::" not in live
    assert "add hl-block-v4 203.0.113.0/24" in live and "198.51.100.0/24" not in live
    assert "family inet6" in next(line for line in live.splitlines() if line.startswith("create hl-block-v6"))
    assert "hlfw-tmp-" not in live
    assert host.state()["state"] == "pending"


def test_release_whose_set_members_do_not_match_the_manifest_is_refused(host, keeps_ssh, blocklist):
    # The members are checked for the temporary sets while their checksums are computed: a set
    # file that is well formed but not the one the manifest vouches for is still refused.
    apply_and_confirm(host, keeps_ssh)
    before = (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state())
    directory, _release_hash = blocklist
    (directory / "ipsets").write_text(BLOCKLIST_IPSETS.replace("203.0.113.0/24", "198.51.100.0/24"))

    result = apply(host, directory)

    assert result.returncode == 2
    assert "is corrupt" in result.stderr and "ipsets: FAILED" in result.stderr
    assert (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state()) == before


def test_release_missing_a_listed_file_is_refused(host, blocklist):
    directory, _release_hash = blocklist
    (directory / "ipsets").unlink()

    result = apply(host, directory)

    assert result.returncode == 2
    assert "is corrupt" in result.stderr and "ipsets: FAILED open or read" in result.stderr
    assert host.netns_run(["iptables-save"]).stdout == ""


def test_rollback_of_a_first_apply_restores_empty_tables_with_accept_policies(host, blocklist):
    assert host.netns_run(["iptables-save"]).stdout == ""  # a fresh host: no tables at all
    directory, _release_hash = blocklist

    assert apply(host, directory, timeout=3).returncode == 0
    host.wait_for_state("rolled-back", 3 + 5)

    assert host.rules("v4") == EMPTY_POLICIES
    assert host.rules("v6") == EMPTY_POLICIES
    assert host.netns_run(["iptables", "-t", "raw", "-S"]).stdout.splitlines() == [
        "-P PREROUTING ACCEPT", "-P OUTPUT ACCEPT"]
    assert host.ipsets() == "\n"  # the sets the release created are gone
    assert "mode=owned" in (host.state_dir / "rollback" / "meta").read_text()


def test_rollback_forgets_bans_made_under_the_rolled_back_rules(host, keeps_ssh, tmp_path):
    apply_and_confirm(host, keeps_ssh)
    trap = KEEPS_SSH_V4.replace(
        "-A HL-INPUT -i lo -j ACCEPT\n",
        "-A HL-INPUT -i lo -j ACCEPT\n-A HL-INPUT -m recent --name hl-banned-v4 --update --seconds 3600 -j DROP\n")
    directory = tmp_path / "trap"
    make_release(directory, trap, KEEPS_SSH_V6)
    assert apply(host, directory).returncode == 0
    # What the unconfirmed rules did meanwhile: they banned the admin they locked out.
    host.netns_run(["sh", "-c", f"echo +{ADMIN_V4} > /proc/net/xt_recent/hl-banned-v4"])

    assert host.hlfw("rollback").returncode == 0

    remaining = host.netns_run(["sh", "-c", "cat /proc/net/xt_recent/hl-banned-v4 2>/dev/null || true"])
    assert ADMIN_V4 not in remaining.stdout


def test_rollback_if_pending_ignores_other_releases(host, keeps_ssh):
    _directory, release_hash = keeps_ssh
    apply_and_confirm(host, keeps_ssh)
    live = host.save("v4")

    result = host.hlfw("rollback", "--if-pending", release_hash)

    assert result.returncode == 0
    assert "nothing to roll back" in result.stdout
    assert host.save("v4") == live
    assert host.status()["state"] == "active"


def test_systemd_path_arms_a_transient_timer_and_confirm_stops_it(host, keeps_ssh):
    # No systemd here: shims record what hlfw asks of systemd-run and systemctl.
    calls = host.root / "systemd-calls"
    host.write_shim("systemd-run", f'echo "systemd-run $*" >>{calls}\n')
    host.write_shim("systemctl", f'echo "systemctl $*" >>{calls}\n')
    directory, release_hash = keeps_ssh
    env = {"HLFW_ROLLBACK_METHOD": "systemd"}

    applied = apply(host, directory, timeout=45, env=env)
    confirmed = confirm(host, release_hash, env=env)

    assert applied.returncode == 0 and confirmed.returncode == 0, applied.stderr + confirmed.stderr
    unit = f"hlfw-rollback-{release_hash}"
    runs = [line for line in calls.read_text().splitlines() if line.startswith("systemd-run")]
    assert runs == [
        f"systemd-run --quiet --collect --unit {unit} --description hardened-lightsail: roll back "
        f"firewall release {release_hash} unless confirmed --on-active=45s --timer-property=AccuracySec=1s "
        f"--timer-property=RemainAfterElapse=no --setenv=HLFW_STATE_DIR=/var/lib/hardened-lightsail "
        f"--setenv=HLFW_SYSLOG=0 /bin/sh /var/lib/hardened-lightsail/releases/{release_hash}/hlfw "
        f"rollback --if-pending {release_hash}"]
    assert f"systemctl stop {unit}.timer" in calls.read_text().splitlines()
    assert host.status()["state"] == "active"


def test_confirm_keeps_only_the_newest_release_copies(host, keeps_ssh):
    releases = host.state_dir / "releases"
    releases.mkdir(parents=True)
    for number in range(12):
        old = releases / f"{number:016x}"
        old.mkdir()
        os.utime(old, (1_000_000 + number, 1_000_000 + number))

    apply_and_confirm(host, keeps_ssh)

    kept = sorted(p.name for p in releases.iterdir())
    assert len(kept) == 10 and keeps_ssh[1] in kept
    assert f"{0:016x}" not in kept and f"{11:016x}" in kept


def test_confirm_of_unknown_release_fails_clearly(host):
    result = confirm(host, "0123456789abcdef")
    assert result.returncode == 2
    assert "release 0123456789abcdef was never applied on this host" in result.stderr


# ---------------------------------------------------------------- reboot

def test_reboot_loads_the_last_confirmed_rules_never_unconfirmed_ones(host, blocklist, locks_out):
    apply_and_confirm(host, blocklist)
    confirmed_rules = (host.save("v4"), host.save("v6"), host.ipsets())
    directory, _unconfirmed_hash = locks_out
    assert apply(host, directory, timeout=60).returncode == 0
    assert host.rules("v4") != confirmed_rules[0]

    host.kill_sleeper()
    host.flush_everything()
    booted = host.hlfw("boot-load")

    assert booted.returncode == 0, booted.stderr
    assert (host.save("v4"), host.save("v6"), host.ipsets()) == confirmed_rules
    verified = host.hlfw("verify", "--release", blocklist[1])
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_confirm_after_a_reboot_refuses_the_lost_release(host, keeps_ssh, locks_out):
    apply_and_confirm(host, keeps_ssh)
    directory, unconfirmed_hash = locks_out
    assert apply(host, directory, timeout=60).returncode == 0
    host.kill_sleeper()
    state_file = host.state_dir / "state"
    state_file.write_text(state_file.read_text().replace("boot_id=", "boot_id=before-reboot-"))

    confirmed = confirm(host, unconfirmed_hash)

    assert confirmed.returncode == 3
    assert "rebooted before it was confirmed" in confirmed.stderr
    assert (host.etc_iptables / "rules.v4").read_text() == KEEPS_SSH_V4


# ---------------------------------------------------------------- lock

@pytest.mark.parametrize("lock_method", ["flock", "mkdir"])
def test_two_concurrent_applies_are_serialised(host, keeps_ssh, blocklist, lock_method):
    # A slow iptables-restore keeps the first apply inside the lock for a while.
    host.write_shim("iptables-restore", "sleep 2\nexec /usr/sbin/iptables-restore \"$@\"\n")
    env = {"HLFW_LOCK_METHOD": lock_method}
    first = host.popen_hlfw("apply", "--release", str(keeps_ssh[0]), "--timeout", "60", env=env)
    time.sleep(0.7)
    second = host.popen_hlfw("apply", "--release", str(blocklist[0]), "--timeout", "60", env=env)

    _first_out, first_err = first.communicate(timeout=60)
    second_out, second_err = second.communicate(timeout=60)

    assert first.returncode == 0, first_err
    assert second.returncode == 0, second_err
    assert "another hlfw run holds the lock" in second_err
    assert f"rolling back unconfirmed release {keeps_ssh[1]}" in second_out
    events = [line.split(" apply: ", 1)[1] for line in
              (host.state_dir / "log").read_text().splitlines() if " apply: " in line]
    first_live = next(i for i, e in enumerate(events) if e.startswith(f"release {keeps_ssh[1]} live"))
    second_start = next(i for i, e in enumerate(events) if e.startswith(f"apply {blocklist[1]}"))
    assert first_live < second_start, events
    # Both end consistent: the second release is live and pending, the rollback target
    # is still the state before either (empty tables), and it confirms cleanly.
    assert host.status()["release"] == blocklist[1]
    assert host.hlfw("verify", "--release", blocklist[1]).stdout.count("=same") == 3
    assert host.hlfw("rollback").returncode == 0
    assert host.rules("v4") == EMPTY_POLICIES


def test_apply_takes_over_a_stale_mkdir_lock(host, keeps_ssh):
    (host.state_dir / "lock.d").mkdir()
    (host.state_dir / "lock.d" / "pid").write_text("999999\n")

    result = apply(host, keeps_ssh[0], env={"HLFW_LOCK_METHOD": "mkdir"})

    assert result.returncode == 0, result.stderr
    assert "removing stale lock" in result.stderr
    assert not (host.state_dir / "lock.d").exists()


def test_apply_gives_up_clearly_when_the_lock_stays_taken(host, keeps_ssh):
    holder = host.popen(["flock", "/var/lib/hardened-lightsail/lock", "sleep", "30"])
    time.sleep(0.5)

    result = apply(host, keeps_ssh[0], env={"HLFW_LOCK_WAIT": "2"})

    assert result.returncode == 4
    assert "still holds" in result.stderr and "nothing was changed" in result.stderr
    assert host.netns_run(["iptables-save"]).stdout == ""
    holder.kill()


# ---------------------------------------------------------------- refusing bad input

def test_corrupt_manifest_is_refused_before_anything_is_touched(host, keeps_ssh, blocklist):
    apply_and_confirm(host, keeps_ssh)
    before = (host.save("v4"), host.save("v6"), sorted(os.listdir(host.state_dir / "releases")),
              (host.state_dir / "state").read_text())
    directory, _release_hash = blocklist
    (directory / "rules.v4").write_text(BLOCKLIST_V4.replace("192.0.2.66", "0.0.0.0/0"))

    result = apply(host, directory)

    assert result.returncode == 2
    assert "is corrupt" in result.stderr and "rules.v4: FAILED" in result.stderr
    after = (host.save("v4"), host.save("v6"), sorted(os.listdir(host.state_dir / "releases")),
             (host.state_dir / "state").read_text())
    assert after == before


def test_file_missing_from_manifest_is_refused(host, keeps_ssh):
    directory, _release_hash = keeps_ssh
    (directory / "extra.sh").write_text("echo surprise\n")
    result = apply(host, directory)
    assert result.returncode == 2
    assert "extra.sh is not listed in manifest.sha256" in result.stderr


def test_release_that_fails_the_test_load_changes_nothing(host, keeps_ssh, tmp_path):
    apply_and_confirm(host, keeps_ssh)
    before = (host.save("v4"), host.save("v6"))
    directory = tmp_path / "broken"
    make_release(directory, KEEPS_SSH_V4.replace("--dport 80", "--dport 80 -m nosuchmatch"), KEEPS_SSH_V6)

    result = apply(host, directory)

    assert result.returncode == 1
    assert "does not load, nothing was changed" in result.stderr and "rules.v4" in result.stderr
    assert (host.save("v4"), host.save("v6")) == before
    assert host.status()["state"] == "active"


def test_bad_set_member_is_refused_before_the_rollback_is_armed(host, blocklist, tmp_path):
    # The scratch test loads the sets empty; the members are first loaded into temporary sets
    # in the live namespace, before anything is armed: a bad one must change nothing.
    apply_and_confirm(host, blocklist)
    before = (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state())
    directory = tmp_path / "bad-member"
    make_release(directory, BLOCKLIST_V4, BLOCKLIST_V6,
                 BLOCKLIST_IPSETS.replace("add hl-block-v4 192.0.2.128/25", "add hl-block-v4 2001:db8::/64"))

    result = apply(host, directory)

    assert result.returncode == 1
    assert "does not load, nothing was changed: ipsets:" in result.stderr
    assert (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state()) == before
    assert "hlfw-tmp-" not in host.ipsets()


def wait_until_locked(lock_file, timeout=30.0):
    """Returns once another process holds an flock on lock_file (the sandbox's lock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock_file.exists():
            with open(lock_file) as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return
                fcntl.flock(handle, fcntl.LOCK_UN)
        time.sleep(0.05)
    raise AssertionError(f"nobody took {lock_file} within {timeout} s")


def test_release_swapped_while_apply_waits_for_the_lock_is_refused(host, keeps_ssh, blocklist):
    # Apply reads the hash and checks the release before the lock, and reads only the copy it
    # stores under the lock after that: a release replaced meanwhile (here by another valid
    # one) must be refused, never stored or loaded under the hash read before.
    apply_and_confirm(host, keeps_ssh)
    before = (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state(),
              sorted(os.listdir(host.state_dir / "releases")))
    holder = host.popen(["flock", "/var/lib/hardened-lightsail/lock", "sleep", "30"])
    wait_until_locked(host.state_dir / "lock")
    directory = keeps_ssh[0].parent / "swapped"
    shutil.copytree(keeps_ssh[0], directory)
    waiting = host.popen_hlfw("apply", "--release", str(directory), "--timeout", "30")
    assert "another hlfw run holds the lock" in waiting.stderr.readline()
    for path in blocklist[0].iterdir():
        shutil.copyfile(path, directory / path.name)
    holder.kill()

    _out, err = waiting.communicate(timeout=60)

    assert waiting.returncode == 2, err
    assert "changed while this apply waited for the lock" in err and "nothing was changed" in err
    assert (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state(),
            sorted(os.listdir(host.state_dir / "releases"))) == before


def test_temporary_sets_a_killed_apply_left_behind_are_destroyed(host, blocklist):
    # A run killed while it filled its temporaries leaves hlfw-tmp-* sets nothing refers to.
    host.netns_run(["ipset", "create", "hlfw-tmp-7", "hash:net", "family", "inet"])
    host.netns_run(["ipset", "add", "hlfw-tmp-7", "192.0.2.77"])

    result = apply(host, blocklist[0])

    assert result.returncode == 0, result.stderr
    assert "hlfw-tmp-" not in host.ipsets()
    assert "add hl-block-v4 203.0.113.0/24" in host.ipsets()


def test_sets_whose_input_was_cut_short_are_not_swapped_in(host, keeps_ssh, blocklist):
    # The renamed set lines go to files that `ipset restore` loads, which cannot tell a whole
    # file from one cut short: unless the rename read all of it, the apply must stop with
    # nothing changed.
    apply_and_confirm(host, keeps_ssh)
    before = (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state())
    # An awk that dies after the first lines of its first chunk (as when it is killed).
    host.write_shim("awk", 'case " $* " in *" chunk1="*)\n'
                           '    for arg; do case $arg in chunk1=*) chunk=${arg#chunk1=} ;; esac; done\n'
                           '    printf "create hlfw-tmp-1 hash:net family inet\\nadd hlfw-tmp-1 203.0.113.0/24\\n" >"$chunk"; exit 1 ;;\n'
                           'esac\nexec /usr/bin/awk "$@"\n')

    result = apply(host, blocklist[0])

    assert result.returncode == 1
    assert "does not load, nothing was changed: ipsets:" in result.stderr
    assert (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state()) == before
    assert "hlfw-tmp-" not in host.ipsets()


@pytest.mark.parametrize("bad_index", [10_000, 10_001])  # an add of the first chunk, one of the second
def test_bad_member_in_either_parallel_chunk_leaves_nothing_and_names_its_line(host, keeps_ssh, tmp_path, bad_index):
    # The members load in two `ipset restore`s side by side (every other add line each): one
    # failing must stop the apply with nothing changed, no temporary set and no process left,
    # and the message must name the line of the release's own file, not of a chunk.
    apply_and_confirm(host, keeps_ssh)
    before = (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state())
    lines = long_blocklist_ipsets(20_000).splitlines(keepends=True)
    adds = [number for number, line in enumerate(lines) if line.startswith("add hl-block-v6 ")]
    bad_line = adds[bad_index]
    lines[bad_line] = "add hl-block-v6 2001:db8:ffff::/129\n"
    directory = tmp_path / "bad-member"
    make_release(directory, BLOCKLIST_V4, BLOCKLIST_V6, "".join(lines))

    result = apply(host, directory)

    assert result.returncode == 1
    assert "does not load, nothing was changed: ipsets:" in result.stderr
    assert f"Error in line {bad_line + 1}:" in result.stderr and "out of range" in result.stderr
    assert (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state()) == before
    assert "hlfw-tmp-" not in host.ipsets()
    left = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout.split()
    assert left == [], f"processes left in the sandbox: {left}"


def test_members_a_killed_apply_left_in_a_temporary_of_the_same_name_are_not_swapped_in(host, blocklist):
    # Both chunks create every temporary with -exist, which would take a set left from a killed
    # run with its old members: those sets are destroyed before the build starts.
    host.netns_run(["ipset", "create", "hlfw-tmp-1", "hash:net", "family", "inet", "hashsize", "1024",
                    "maxelem", "65536"])
    host.netns_run(["ipset", "add", "hlfw-tmp-1", "192.0.2.77"])

    result = apply(host, blocklist[0])

    assert result.returncode == 0, result.stderr
    live = host.ipsets()
    assert "add hl-block-v4 203.0.113.0/24" in live and "192.0.2.77" not in live
    assert "hlfw-tmp-" not in live


@pytest.mark.parametrize("foreign", [
    "flush hl-block-v4",
    "destroy hl-block-v4",
    "swap hl-block-v4 hl-block-v6",
    "add sshguard-v4 198.51.100.10",            # a set this file does not create: maybe another tool's
    "create hlfw-tmp-1 hash:net family inet",  # the apply's own temporary
    "-exist",
])
def test_set_file_with_a_foreign_line_is_refused_before_anything_changes(host, keeps_ssh, tmp_path, foreign):
    # Only "create" of the release's own sets and "add" to a set created above may reach the
    # kernel, whichever chunk the line would have gone to.
    apply_and_confirm(host, keeps_ssh)
    host.netns_run(["ipset", "create", "sshguard-v4", "hash:ip"])
    before = (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state())
    directory = tmp_path / "foreign"
    make_release(directory, BLOCKLIST_V4, BLOCKLIST_V6, long_blocklist_ipsets(10).replace(
        "create hl-block-v6", f"{foreign}\ncreate hl-block-v6"))

    result = apply(host, directory)

    assert result.returncode == 2
    assert "unsupported line 4: " + foreign in result.stderr
    assert (host.all_rules("v4"), host.all_rules("v6"), host.ipsets(), host.state()) == before


def test_member_listed_twice_loads_and_verifies_as_at_boot(host, tmp_path):
    # The boot-time loaders read the set file with -exist, and so do apply's parallel build and
    # verify's scratch load: a member listed twice is one member everywhere.
    directory = tmp_path / "twice"
    release_hash = make_release(directory, BLOCKLIST_V4, BLOCKLIST_V6,
                                BLOCKLIST_IPSETS + "add hl-block-v4 203.0.113.0/24\n")
    apply_and_confirm(host, (directory, release_hash))

    assert host.ipsets().count("add hl-block-v4 203.0.113.0/24") == 1
    verified = host.hlfw("verify", "--release", release_hash)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_v6_restore_failure_rolls_everything_back_and_leaves_v4_as_before(host, keeps_ssh, tmp_path):
    apply_and_confirm(host, keeps_ssh)
    before = (host.all_rules("v4"), host.all_rules("v6"), host.ipsets())
    # This host's ip6tables-restore loads the new release in the scratch namespace (no name) but
    # fails the live load of it (in the sandbox's named namespace).
    host.write_shim("ip6tables-restore", """input=$(cat)
if [ -n "$(ip netns identify)" ]; then
    case $input in *HLFW-TEST-FAIL*) echo "ip6tables-restore: line 9 failed (simulated kernel refusal)" >&2; exit 1 ;; esac
fi
printf '%s\\n' "$input" | exec /usr/sbin/ip6tables-restore "$@"
""")
    directory = tmp_path / "v6-fails"
    failing_v6 = BLOCKLIST_V6.replace("-A INPUT -j HL-INPUT\n", "-A HL-INPUT -m comment --comment HLFW-TEST-FAIL\n-A INPUT -j HL-INPUT\n")
    release_hash = make_release(directory, BLOCKLIST_V4, failing_v6, BLOCKLIST_IPSETS)

    result = apply(host, directory)

    assert result.returncode == 1
    assert f"applying release {release_hash} failed at rules.v6" in result.stderr
    assert "simulated kernel refusal" in result.stderr
    assert "the previous rules (ipsets, v4, v6) are back" in result.stderr
    # The raw table the release added is back to empty (ACCEPT policies, no rules).
    assert (host.all_rules("v4"), host.all_rules("v6"), host.ipsets()) == before
    status = host.status()
    assert status["state"] == "rolled-back" and status["reason"] == "applying rules.v6 failed"
    confirmed = confirm(host, release_hash)
    assert confirmed.returncode == 3
    assert confirmed.stderr == "rules were rolled back: applying rules.v6 failed\n"


def test_release_file_that_does_not_match_the_manifest_is_refused(host, keeps_ssh):
    directory, _release_hash = keeps_ssh
    (directory / "RELEASE").write_text("0123456789abcdef\n")
    result = apply(host, directory)
    assert result.returncode == 2
    assert "RELEASE says 0123456789abcdef but manifest.sha256 hashes to" in result.stderr


def test_usage_errors_exit_2(host):
    assert host.hlfw("apply", "--release", "/nonexistent", "--timeout", "5").returncode == 2
    assert host.hlfw("apply", "--release", "/tmp", "--timeout", "soon").returncode == 2
    assert host.hlfw("confirm").returncode == 2
    assert host.hlfw("frobnicate").returncode == 2


def test_non_root_without_sudo_gets_a_clear_error(tmp_path):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed")
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             "env", "PATH=/usr/bin:/bin", "sh", str(PAYLOAD), "status"],
                            capture_output=True, text=True, timeout=30, cwd="/")
    assert result.returncode == 1
    assert "must run as root" in result.stderr


# ---------------------------------------------------------------- verify

def test_verify_reports_listeners_and_fails_with_a_diff_on_drift(host, keeps_ssh):
    _directory, release_hash = keeps_ssh
    apply_and_confirm(host, keeps_ssh)
    listener = host.popen([sys.executable, "-c", "import socket, time\n"
                           "s = socket.socket(socket.AF_INET6); s.bind(('::', 8443)); s.listen()\n"
                           "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1', 5353))\n"
                           "time.sleep(60)"])
    deadline = time.monotonic() + 10
    while "8443" not in host.netns_run(["ss", "-ltn"]).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    clean = host.hlfw("verify", "--release", release_hash)

    assert clean.returncode == 0, clean.stderr
    listening = clean.stdout.split("listening:\n", 1)[1].splitlines()
    # "*" is how ss shows a dual-stack socket bound to every address.
    assert "tcp * 8443" in listening and "udp 127.0.0.1 5353" in listening
    assert "live_v4=same" in clean.stdout and "persisted_rules.v6=same" in clean.stdout

    host.netns_run(["iptables", "-I", "HL-INPUT", "-p", "tcp", "--dport", "5432", "-j", "ACCEPT"])
    (host.etc_iptables / "rules.v6").write_text(KEEPS_SSH_V6 + "# edited by hand\n")
    drifted = host.hlfw("verify", "--release", release_hash)

    assert drifted.returncode == 1
    assert "live_v4=different" in drifted.stdout and "live_v6=same" in drifted.stdout
    assert "persisted_rules.v6=different" in drifted.stdout
    assert "+-A HL-INPUT -p tcp -m tcp --dport 5432 -j ACCEPT" in drifted.stderr
    assert "+# edited by hand" in drifted.stderr
    listener.kill()


def test_verify_ignores_members_of_timeout_sets(host, tmp_path):
    v4 = KEEPS_SSH_V4.replace("-A HL-INPUT -i lo -j ACCEPT\n",
                              "-A HL-INPUT -i lo -j ACCEPT\n-A HL-INPUT -m set --match-set hl-scanners src -j DROP\n")
    sets = "create hl-scanners hash:ip family inet hashsize 1024 maxelem 65536 timeout 600\n"
    directory = tmp_path / "dynamic"
    release_hash = make_release(directory, v4, KEEPS_SSH_V6, sets)
    apply_and_confirm(host, (directory, release_hash))
    # The kernel (e.g. -j SET --add-set) fills such sets at run time.
    host.netns_run(["ipset", "add", "hl-scanners", "192.0.2.200"])

    result = host.hlfw("verify", "--release", release_hash)

    assert result.returncode == 0, result.stderr
    assert "live_ipsets=same" in result.stdout


# ---------------------------------------------------------------- install-deps

def _fake_package_tools(host, installed: str) -> None:
    """Shims for dpkg-query/apt-*: record calls, never install anything."""
    calls = host.root / "package-calls"
    host.write_shim("dpkg-query", f"""pkg=$(eval echo \\${{$#}})
case " {installed} " in *" $pkg "*) printf 'install ok installed' ;; *) exit 1 ;; esac
""")
    host.write_shim("apt-cache", "printf '%s:\\n  Installed: (none)\\n  Candidate: 1.0\\n' \"$2\"\n")
    host.write_shim("apt-get", f"echo \"apt-get $*\" >>{calls}\n")
    host.write_shim("debconf-set-selections", f"sed 's/^/debconf /' >>{calls}\n")


def test_install_deps_installs_nothing_when_everything_is_present(host):
    _fake_package_tools(host, "iptables ipset netfilter-persistent iptables-persistent ipset-persistent")
    assert host.netns_run(["true"]).returncode == 0
    result = host.hlfw("install-deps")
    assert result.returncode == 0, result.stderr
    assert "nothing to install" in result.stdout
    assert not (host.root / "package-calls").exists()


def test_install_deps_preseeds_autosave_off_then_installs_what_is_missing(host):
    _fake_package_tools(host, "iptables ipset")
    result = host.hlfw("install-deps")
    assert result.returncode == 0, result.stderr
    calls = (host.root / "package-calls").read_text().splitlines()
    assert calls[:2] == ["debconf iptables-persistent iptables-persistent/autosave_v4 boolean false",
                         "debconf iptables-persistent iptables-persistent/autosave_v6 boolean false"]
    assert calls[2] == "apt-get -q update"
    assert calls[3].endswith("install netfilter-persistent iptables-persistent ipset-persistent")
    assert "-y" in calls[3].split()


# ---------------------------------------------------------------- the real renderer

def test_a_real_rendered_release_applies_confirms_verifies_and_boots(host, tmp_path):
    directory, release_hash = render_lab_release(tmp_path, "rendered", [f"{ADMIN_V4}/32", f"{ADMIN_V6}/128"])
    assert (directory / "ipsets").exists() and (directory / "policy.json").exists()

    apply_and_confirm(host, (directory, release_hash))

    verified = host.hlfw("verify", "--release", release_hash)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "live_v4=same\nlive_v6=same\nlive_ipsets=same\n" in verified.stdout
    for name in ("rules.v4", "rules.v6", "ipsets"):
        assert (host.etc_iptables / name).read_bytes() == (directory / name).read_bytes()
    live = (host.save("v4"), host.save("v6"), host.ipsets())
    assert apply(host, directory).stdout.splitlines()[-1] == f"hlfw-apply: active release={release_hash}"
    host.flush_everything()
    assert host.hlfw("boot-load").returncode == 0
    assert (host.save("v4"), host.save("v6"), host.ipsets()) == live


# ---------------------------------------------------------------- over real SSH (the lab)
# The lab's server runs a real sshd in its own network namespace; its sessions see lab-owned
# /etc/iptables and /var/lib/hardened-lightsail. Every command is a fresh ssh process from the
# admin namespace, i.e. a new TCP connection, exactly like the deployer's steps.

def test_ssh_first_apply_then_confirm_over_a_new_connection(lab_server, tmp_path):
    lab = lab_server
    directory, release_hash = lab_good_release(lab, tmp_path)

    applied = lab_ssh(lab, f"sh {directory}/hlfw apply --release {directory} --timeout 30")
    assert applied.returncode == 0, applied.stderr
    confirmed = lab_ssh(lab, f"sh {directory}/hlfw confirm --release {release_hash}")
    assert confirmed.returncode == 0, confirmed.stderr
    verified = lab_ssh(lab, f"sh {directory}/hlfw verify --release {release_hash}")

    assert verified.returncode == 0, verified.stdout + verified.stderr
    listening = verified.stdout.split("listening:\n", 1)[1].splitlines()
    assert any(line.startswith("tcp ") and line.endswith(" 22") for line in listening)
    assert lab_state(lab)["state"] == "active"
    persisted = lab.layout.server_fs("/etc/iptables")
    assert (persisted / "rules.v4").read_bytes() == (directory / "rules.v4").read_bytes()


def test_ssh_reapply_is_a_no_op_and_an_established_session_survives(lab_server, tmp_path):
    lab = lab_server
    directory, release_hash = lab_good_release(lab, tmp_path)
    assert lab_ssh(lab, f"sh {directory}/hlfw apply --release {directory} --timeout 30").returncode == 0
    assert lab_ssh(lab, f"sh {directory}/hlfw confirm --release {release_hash}").returncode == 0
    held = subprocess.Popen(lab.ssh_argv("admin", ['while read line; do echo "got $line"; done']),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        held.stdin.write("before\n")
        held.stdin.flush()
        assert held.stdout.readline() == "got before\n"
        rules_before = lab_rules(lab)

        again = lab_ssh(lab, f"sh {directory}/hlfw apply --release {directory} --timeout 30")

        assert again.returncode == 0, again.stderr
        assert again.stdout == f"release {release_hash} already active; nothing to do\nhlfw-apply: active release={release_hash}\n"
        assert lab_rules(lab) == rules_before
        held.stdin.write("after\n")
        held.stdin.flush()
        assert held.stdout.readline() == "got after\n"
    finally:
        held.kill()
        held.wait(timeout=10)


def test_ssh_forced_lockout_is_rolled_back_and_new_connections_work_again(lab_server, tmp_path):
    lab = lab_server
    good_dir, good_hash = lab_good_release(lab, tmp_path)
    assert lab_ssh(lab, f"sh {good_dir}/hlfw apply --release {good_dir} --timeout 30").returncode == 0
    assert lab_ssh(lab, f"sh {good_dir}/hlfw confirm --release {good_hash}").returncode == 0
    # SSH only from the untrusted internet host: the admin is locked out (allowLockout drill).
    bad_dir, bad_hash = render_lab_release(
        tmp_path, "lab-lockout", [f"{lab.address('internet', 4)}/32", f"{lab.address('internet', 6)}/128"],
        allow_lockout=True)
    timeout = 5

    applied = lab_ssh(lab, f"sh {bad_dir}/hlfw apply --release {bad_dir} --timeout {timeout}")
    applied_at = time.monotonic()

    assert applied.returncode == 0, applied.stderr  # conntrack kept the applying session alive
    # Keep trying new connections like the deployer's confirm step does. Each attempt also
    # counts as a port-scan hit under the bad rules, so the admin ends up in their ban list.
    attempts = 0
    while lab_state(lab).get("state") == "pending":
        # Each attempt is bounded by connect_timeout; the loop by the rollback deadline + slack.
        assert time.monotonic() - applied_at < timeout + 10, f"still pending {timeout + 10} s after apply"
        started = time.monotonic() - applied_at
        if lab_ssh(lab, "true", connect_timeout=1).returncode != 255:
            # Only the rollback lets a new connection in, and not before its deadline: the state
            # read above can say "pending" a moment before the host's timer fires. (The host armed
            # it during the apply, before `applied_at`: a second of slack.)
            assert started >= timeout - 1, f"got through the lock-out rules {started:.1f} s after apply"
            break
        attempts += 1
    assert attempts >= 2
    wait_for_lab_state(lab, "rolled-back", timeout + 5)
    print(f"rolled back {time.monotonic() - applied_at:.1f} s after apply (timeout {timeout} s)")
    confirmed = lab_ssh(lab, f"sh {bad_dir}/hlfw confirm --release {bad_hash}")
    assert confirmed.returncode == 3, confirmed.stderr
    assert TOO_LATE.format(timeout) in confirmed.stderr
    verified = lab_ssh(lab, f"sh {good_dir}/hlfw verify --release {good_hash}")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_ssh_session_killed_mid_apply_still_ends_in_rollback(lab_server, tmp_path):
    lab = lab_server
    directory, _release_hash = lab_good_release(lab, tmp_path)
    timeout = 4
    session = subprocess.Popen(
        lab.ssh_argv("admin", [f"sh {directory}/hlfw apply --release {directory} --timeout {timeout}; sleep 60"]),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_lab_state(lab, "pending", 30)
        went_live = time.monotonic()
        os.killpg(session.pid, signal.SIGKILL)  # the deployer's terminal drops
    finally:
        if session.poll() is None:
            os.killpg(session.pid, signal.SIGKILL)
        session.wait(timeout=10)

    wait_for_lab_state(lab, "rolled-back", timeout + 5)
    print(f"rolled back {time.monotonic() - went_live:.1f} s after the session died (timeout {timeout} s)")
    status = lab_ssh(lab, f"sh {directory}/hlfw status")
    assert status.returncode == 0 and "state=rolled-back" in status.stdout
    assert lab.run("server", ["iptables", "-S", "INPUT"]).stdout.splitlines() == ["-P INPUT ACCEPT"]
