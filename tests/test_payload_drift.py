"""`hlfw drift --release HASH` and `hlfw verify`: every kind of drift from a confirmed release is
seen, on IPv4 and IPv6, in ipset members, in the boot-time files and in the confirm state, with
one short readable reason per difference (the deployer's refresh shows these lines).

A real rendered release (HL-* chains, blocklist sets of both families) is applied and confirmed
in a sandbox, then changed by hand the way an operator or another tool would."""

from __future__ import annotations

import re

import pytest

from payload_fixtures import (  # noqa: F401 (fixtures)
    ADMIN_V4,
    ADMIN_V6,
    apply,
    apply_and_confirm,
    host,
    keeps_ssh,
    machine_is_untouched,
    render_lab_release,
)
from payload_helpers import PAYLOAD_MARKS, SSHD_T_KEYS_ONLY

pytestmark = PAYLOAD_MARKS


@pytest.fixture
def confirmed(host, tmp_path):
    """(directory, hash) of a rendered release, applied and confirmed in the sandbox."""
    release = render_lab_release(tmp_path, "rendered", [f"{ADMIN_V4}/32", f"{ADMIN_V6}/128"])
    apply_and_confirm(host, release)
    return release


def drift(host, release_hash, warnings=None):
    """(exit code, {key: value} of the header lines, [drift reasons]); the warning lines go into
    the list `warnings` when given, and must be absent otherwise."""
    result = host.hlfw("drift", "--release", release_hash)
    assert result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    header = dict(line.split("=", 1) for line in lines if not line.startswith(("drift: ", "warning: ")))
    found = [line[len("warning: "):] for line in lines if line.startswith("warning: ")]
    if warnings is None:
        assert found == [], found
    else:
        warnings.extend(found)
    return result.returncode, header, [line[len("drift: "):] for line in lines if line.startswith("drift: ")]


def verify_says(host, release_hash) -> dict:
    result = host.hlfw("verify", "--release", release_hash)
    return dict(line.split("=", 1) for line in result.stdout.split("listening:")[0].splitlines())


def input_rules(directory, family: int) -> int:
    return sum(line.startswith("-A HL-INPUT ") for line in (directory / f"rules.v{family}").read_text().splitlines())


def test_a_confirmed_release_is_in_sync(host, confirmed):
    _, release_hash = confirmed

    result = host.hlfw("drift", "--release", release_hash)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"state=active\nrelease={release_hash}\nin_sync=yes\n"


def test_a_v4_rule_added_by_hand_to_the_project_chain_is_named(host, confirmed):
    _, release_hash = confirmed
    host.netns_run(["iptables", "-I", "HL-INPUT", "1", "-p", "tcp", "--dport", "80", "-j", "DROP"])

    code, header, reasons = drift(host, release_hash)

    assert (code, header["in_sync"]) == (1, "no")
    assert reasons == [f"live v4 rules differ from release {release_hash}: +1 rule not in the release "
                       "(-A HL-INPUT -p tcp -m tcp --dport 80 -j DROP)"]
    assert verify_says(host, release_hash)["live_v4"] == "different"


def test_other_tools_rules_are_not_drift_but_one_before_the_jump_that_decides_is_a_warning(host, confirmed):
    _, release_hash = confirmed
    # Before the project's jump: an ACCEPT lets traffic past the policy, a DROP may shadow it.
    host.netns_run(["iptables", "-I", "INPUT", "1", "-p", "tcp", "--dport", "5432", "-j", "ACCEPT"])
    host.netns_run(["ip6tables", "-I", "INPUT", "1", "-p", "tcp", "--dport", "80", "-j", "DROP"])
    # Not judged: a jump to another tool's chain before ours, anything after ours, other chains.
    host.netns_run(["iptables", "-N", "f2b-sshd"])
    host.netns_run(["iptables", "-A", "f2b-sshd", "-j", "RETURN"])
    host.netns_run(["iptables", "-I", "INPUT", "1", "-p", "tcp", "--dport", "22", "-j", "f2b-sshd"])
    host.netns_run(["iptables", "-A", "INPUT", "-j", "ACCEPT"])
    host.netns_run(["iptables", "-A", "FORWARD", "-j", "ACCEPT"])
    warnings = []

    code, header, reasons = drift(host, release_hash, warnings)

    assert (code, header["in_sync"], reasons) == (0, "yes", [])
    assert warnings == [
        "v4: a rule before the project's jump in INPUT lets traffic past the policy: "
        "-A INPUT -p tcp -m tcp --dport 5432 -j ACCEPT",
        "v6: a rule before the project's jump in INPUT may cut off what the policy allows: "
        "-A INPUT -p tcp -m tcp --dport 80 -j DROP"]
    verified = host.hlfw("verify", "--release", release_hash)
    assert verified.returncode == 0, verified.stderr
    assert [line for line in verified.stderr.splitlines() if line.startswith("hlfw: warning: ")] == \
        [f"hlfw: warning: {warning}" for warning in warnings]


def test_a_live_v6_rule_added_by_hand_is_named_and_verify_fails_on_it(host, confirmed):
    _, release_hash = confirmed
    host.netns_run(["ip6tables", "-A", "HL-SSH", "-s", "2001:db8:1::/48", "-j", "ACCEPT"])

    code, _, reasons = drift(host, release_hash)

    assert code == 1
    assert reasons == [f"live v6 rules differ from release {release_hash}: +1 rule not in the release "
                       "(-A HL-SSH -s 2001:db8:1::/48 -j ACCEPT)"]
    said = verify_says(host, release_hash)
    assert (said["live_v4"], said["live_v6"], said["live_ipsets"]) == ("same", "different", "same")
    assert host.hlfw("verify", "--release", release_hash).returncode == 1


def test_ipset_members_added_and_removed_are_named_and_verify_fails_on_them(host, confirmed):
    _, release_hash = confirmed
    host.netns_run(["ipset", "add", "hl-blocklist-v4", "192.0.2.99"])
    host.netns_run(["ipset", "del", "hl-blocklist-v6", "2001:db8:bad::/48"])

    code, _, reasons = drift(host, release_hash)

    assert code == 1
    assert reasons == ["ipset hl-blocklist-v4 differs: +1 member not in the release (192.0.2.99)",
                       "ipset hl-blocklist-v6 differs: -1 member of the release missing (2001:db8:bad::/48)"]
    said = verify_says(host, release_hash)
    assert (said["live_v4"], said["live_v6"], said["live_ipsets"]) == ("same", "same", "different")


def test_only_a_v6_set_member_removed_still_fails_verify(host, confirmed):
    _, release_hash = confirmed
    host.netns_run(["ipset", "del", "hl-blocklist-v6", "2001:db8:bad::/48"])

    assert verify_says(host, release_hash)["live_ipsets"] == "different"
    assert host.hlfw("verify", "--release", release_hash).returncode == 1


def test_a_flushed_input_chain_is_named_and_other_policies_are_not_drift(host, confirmed):
    directory, release_hash = confirmed
    host.netns_run(["ip6tables", "-F", "INPUT"])
    host.netns_run(["ip6tables", "-P", "FORWARD", "DROP"])  # not the project's: no drift

    code, _, reasons = drift(host, release_hash)

    assert code == 1
    # Only the project's jump was in INPUT: that is what went missing (HL-INPUT is intact).
    assert reasons == [f"live v6 rules differ from release {release_hash}: -1 rule of the release missing "
                       "(chain INPUT flushed?)"]
    host.netns_run(["ip6tables", "-F", "HL-INPUT"])
    _, _, reasons = drift(host, release_hash)
    assert reasons[0].endswith(f"-{input_rules(directory, 6) + 1} rules of the release missing "
                               "(chain HL-INPUT, INPUT flushed?)")


def test_a_missing_rule_is_shown_with_its_comment(host, confirmed):
    _, release_hash = confirmed
    host.netns_run(["iptables", "-D", "HL-INPUT", "1"])  # the loopback accept

    _, _, reasons = drift(host, release_hash)

    assert reasons == [f"live v4 rules differ from release {release_hash}: -1 rule of the release missing "
                       '(-A HL-INPUT -i lo -j ACCEPT  # "loopback: local programs talk to each other")']


def test_edited_and_missing_boot_files_are_named(host, confirmed):
    _, release_hash = confirmed
    with open(host.etc_iptables / "rules.v4", "a") as persisted:
        persisted.write("# edited by hand\n")
    (host.etc_iptables / "ipsets").unlink()

    code, _, reasons = drift(host, release_hash)

    assert code == 1
    assert reasons == [f"persisted /etc/iptables/rules.v4 differs from release {release_hash}",
                       f"persisted /etc/iptables/ipsets is missing (release {release_hash} has ipsets)"]


def test_a_pending_release_is_not_in_sync_until_confirmed(host, tmp_path):
    directory, release_hash = render_lab_release(tmp_path, "pending", [f"{ADMIN_V4}/32"])
    assert apply(host, directory).returncode == 0

    code, header, reasons = drift(host, release_hash)

    assert (code, header["state"], header["release"]) == (1, "pending", release_hash)
    deadline = host.state()["deadline"]
    assert reasons == [f"state is pending: release {release_hash} is live but not confirmed (it rolls back at {deadline})",
                       f"persisted /etc/iptables/rules.v4 is missing (release {release_hash} has rules.v4)",
                       f"persisted /etc/iptables/rules.v6 is missing (release {release_hash} has rules.v6)",
                       f"persisted /etc/iptables/ipsets is missing (release {release_hash} has ipsets)"]


def test_a_rolled_back_release_says_why_and_what_differs(host, confirmed, keeps_ssh):
    _, release_hash = confirmed
    other_directory, other_hash = keeps_ssh
    assert apply(host, other_directory, timeout=1).returncode == 0
    host.wait_for_state("rolled-back", 1 + 5)

    code, header, reasons = drift(host, other_hash)

    assert (code, header["state"], header["release"]) == (1, "rolled-back", other_hash)
    assert reasons[0] == f"state is rolled-back (reason=deadline): release {other_hash} is not what the host runs"
    assert reasons[1].startswith(f"live v4 rules differ from release {other_hash}: ")
    # The release that is live again is in sync, but the state still names the rolled-back one.
    _, _, back = drift(host, release_hash)
    assert back == [f"state is rolled-back (reason=deadline): release {release_hash} is not what the host runs"]


def test_an_unknown_release_and_a_host_without_state(host):
    code, header, reasons = drift(host, "0123456789abcdef")

    assert (code, header) == (1, {"state": "none", "release": "", "in_sync": "no"})
    assert reasons == ["state is none: release 0123456789abcdef was never confirmed on this host",
                       "release 0123456789abcdef is not on this host"]


def test_drift_changes_nothing(host, confirmed):
    _, release_hash = confirmed
    host.netns_run(["iptables", "-I", "HL-INPUT", "1", "-j", "ACCEPT"])
    before = (host.save("v4"), host.save("v6"), host.ipsets(), (host.state_dir / "state").read_text(),
              sorted(p.name for p in host.state_dir.iterdir()))

    assert drift(host, release_hash)[0] == 1

    after = (host.save("v4"), host.save("v6"), host.ipsets(), (host.state_dir / "state").read_text(),
             sorted(p.name for p in host.state_dir.iterdir()))
    assert after == before


def test_drift_usage_errors_exit_2(host):
    assert host.hlfw("drift").returncode == 2
    assert host.hlfw("drift", "--release", "../etc").returncode == 2


def test_a_set_whose_hash_table_grew_otherwise_is_not_drift(host, confirmed):
    # The kernel grows a hash set's hashsize while members go in: a long blocklist loaded live
    # and the same list loaded in the scratch namespace can end up sized differently.
    _, release_hash = confirmed
    members = [line.split()[2] for line in host.netns_run(["ipset", "save", "hl-blocklist-v4"]).stdout.splitlines()
               if line.startswith("add ")]
    host.netns_run(["ipset", "create", "hl-regrown", "hash:net", "family", "inet", "hashsize", "4096",
                    "maxelem", "65536"])
    for member in members:
        host.netns_run(["ipset", "add", "hl-regrown", member])
    host.netns_run(["ipset", "swap", "hl-regrown", "hl-blocklist-v4"])
    host.netns_run(["ipset", "destroy", "hl-regrown"])
    assert "hashsize 4096" in host.netns_run(["ipset", "save", "hl-blocklist-v4"]).stdout

    assert drift(host, release_hash)[::2] == (0, [])
    assert verify_says(host, release_hash)["live_ipsets"] == "same"


def test_verify_warns_about_an_sshd_that_takes_passwords_and_still_passes(host, confirmed):
    _, release_hash = confirmed
    host.write_shim("sshd", SSHD_T_KEYS_ONLY.replace("passwordauthentication no", "passwordauthentication yes")
                    .replace("without-password", "yes"))
    verified = host.hlfw("verify", "--release", release_hash)
    assert verified.returncode == 0, verified.stderr
    assert "sshd: config=/etc/ssh/sshd_config passwordauthentication=yes kbdinteractiveauthentication=no " \
           "permitrootlogin=yes authenticationmethods=any" in verified.stdout.splitlines()
    warnings = [line for line in verified.stderr.splitlines() if line.startswith("hlfw: warning: sshd")]
    assert [re.split(r"[:;]", w.split(") ", 1)[1])[0] for w in warnings] == [
        "allows password logins (PasswordAuthentication yes)", "lets root log in with a password (PermitRootLogin yes)"]
    host.write_shim("sshd", "echo 'sshd: no hostkeys available -- exiting.' >&2; exit 1\n")
    unreadable = host.hlfw("verify", "--release", release_hash)
    assert unreadable.returncode == 0, unreadable.stderr
    assert "hlfw: warning: sshd: cannot read the effective settings of /etc/ssh/sshd_config (sshd -T: sshd: no " \
           "hostkeys available -- exiting.): password and root logins are unchecked" in unreadable.stderr
