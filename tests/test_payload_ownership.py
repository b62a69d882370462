"""The project owns only its HL-* chains, its jumps into them, INPUT's policy and its sets
(issue 11): apply, rollback and boot replace exactly those, in one restore per family, and
leave every other chain, rule, policy, counter and set where it is.

The "other tools" here are rules loaded by hand in the shapes fail2ban and an operator leave
(fail2ban's jump first in INPUT, a chain of its own with a ban, a rule in OUTPUT, a NAT rule,
FORWARD's policy, a set of its own)."""

from __future__ import annotations

import pytest

from payload_fixtures import (  # noqa: F401 (fixtures)
    ADMIN_V4,
    KEEPS_SSH_V4,
    KEEPS_SSH_V6,
    apply,
    apply_and_confirm,
    blocklist,
    host,
    keeps_ssh,
    machine_is_untouched,
)
from payload_helpers import PAYLOAD_MARKS, make_release

pytestmark = PAYLOAD_MARKS

OTHER_TOOLS_V4 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:f2b-sshd - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A f2b-sshd -s 192.0.2.66/32 -j REJECT --reject-with icmp-port-unreachable
-A f2b-sshd -j RETURN
-A OUTPUT -d 192.0.2.53/32 -p udp -m udp --dport 53 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 198.51.100.0/24 -j MASQUERADE
COMMIT
"""
OTHER_TOOLS_V6 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:f2b-sshd - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A f2b-sshd -s 2001:db8:66::1/128 -j REJECT --reject-with icmp6-port-unreachable
-A f2b-sshd -j RETURN
COMMIT
"""
OTHER_TOOLS_SET = "create f2b-recidive hash:ip family inet hashsize 1024 maxelem 65536\nadd f2b-recidive 192.0.2.77\n"
JUMP = "-A INPUT -j HL-INPUT"


def load_other_tools(host) -> None:
    host.netns_run(["ipset", "restore"], input=OTHER_TOOLS_SET)
    host.netns_run(["iptables-restore"], input=OTHER_TOOLS_V4)
    host.netns_run(["ip6tables-restore"], input=OTHER_TOOLS_V6)


def others(host) -> tuple:
    """Everything that is not the project's: rules in order (with their chain), policies but
    INPUT's, every table, and the other sets."""
    def theirs(family):
        lines = []
        for table, rules in host.all_rules(family).items():
            lines += [f"{table}: {line}" for line in rules
                      if "HL-" not in line and not line.startswith("-P INPUT ")]
        return lines
    sets = [line for line in host.ipsets().splitlines() if "hl-" not in line]
    return theirs("v4"), theirs("v6"), sets


def without_empty_tables(save: str) -> str:
    """An iptables-save with the tables that hold no rule and only ACCEPT policies left out
    (a table the kernel made on first use is the same as no table)."""
    tables = save.split("COMMIT\n")
    return "COMMIT\n".join(table for table in tables
                           if any(line.startswith("-A ") or (line.startswith(":") and " ACCEPT" not in line)
                                  for line in table.splitlines()))


def test_apply_and_confirm_leave_other_tools_rules_in_place_and_append_the_jump(host, blocklist):
    load_other_tools(host)
    before = others(host)

    apply_and_confirm(host, blocklist)

    assert others(host) == before
    # fail2ban's jump stays first (its bans still decide first); the project's comes after it.
    assert host.rules("v4")[:6] == ["-P INPUT DROP", "-P FORWARD DROP", "-P OUTPUT ACCEPT", "-N HL-INPUT",
                                    "-N f2b-sshd", "-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd"]
    assert [line for line in host.rules("v4") if line.startswith("-A INPUT ")][-1] == JUMP
    assert host.rules("v6")[1] == "-P FORWARD ACCEPT"  # FORWARD's policy is not the project's


def test_rollback_restores_exactly_the_previous_project_chains_and_nothing_else(host, keeps_ssh, blocklist):
    load_other_tools(host)
    apply_and_confirm(host, keeps_ssh)
    confirmed = (without_empty_tables(host.save("v4")), without_empty_tables(host.save("v6")), host.ipsets())
    directory, _ = blocklist

    assert apply(host, directory).returncode == 0  # adds sets, a raw chain and its jump
    assert "-A PREROUTING -j HL-RAW" in host.all_rules("v4")["raw"]
    rolled_back = host.hlfw("rollback")

    assert rolled_back.returncode == 0, rolled_back.stderr
    assert (without_empty_tables(host.save("v4")), without_empty_tables(host.save("v6")), host.ipsets()) == confirmed


def test_rollback_of_the_first_apply_removes_only_the_project_and_restores_inputs_policy(host, blocklist):
    load_other_tools(host)
    before = (host.save("v4"), host.save("v6"), host.ipsets())
    directory, _ = blocklist

    assert apply(host, directory).returncode == 0
    assert host.hlfw("rollback").returncode == 0

    after = (host.save("v4"), host.save("v6"), host.ipsets())
    assert [without_empty_tables(save) for save in after[:2]] == [without_empty_tables(save) for save in before[:2]]
    assert after[2] == before[2]


def test_a_later_apply_replaces_the_chains_but_leaves_the_jump_where_it_is(host, keeps_ssh, blocklist):
    apply_and_confirm(host, keeps_ssh)
    # fail2ban starts after the first apply: it puts its jump in front of ours.
    host.netns_run(["iptables", "-N", "f2b-sshd"])
    host.netns_run(["iptables", "-A", "f2b-sshd", "-j", "RETURN"])
    host.netns_run(["iptables", "-I", "INPUT", "1", "-p", "tcp", "-m", "multiport", "--dports", "22",
                    "-j", "f2b-sshd"])
    order = [line for line in host.rules("v4") if line.startswith("-A INPUT ")]

    apply_and_confirm(host, blocklist)

    assert [line for line in host.rules("v4") if line.startswith("-A INPUT ")] == order
    assert "-A HL-INPUT -m set --match-set hl-block-v4 src -j DROP" in host.rules("v4")


def test_a_duplicated_jump_is_drift_and_the_next_apply_removes_it(host, keeps_ssh):
    directory, release_hash = keeps_ssh
    apply_and_confirm(host, keeps_ssh)
    # What a second boot-time load (say, `netfilter-persistent reload`) leaves: one more jump.
    host.netns_run(["iptables-restore", "--noflush"], input=KEEPS_SSH_V4)
    assert host.rules("v4").count(JUMP) == 2

    drifted = host.hlfw("drift", "--release", release_hash)
    assert drifted.returncode == 1
    assert f"drift: live v4 rules differ from release {release_hash}: +1 rule not in the release ({JUMP})" \
        in drifted.stdout.splitlines()
    assert apply(host, directory).returncode == 0

    assert host.rules("v4").count(JUMP) == 1


@pytest.mark.parametrize("line", [
    "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT",  # a rule in a chain that is not the project's
    "-I HL-INPUT 1 -j ACCEPT",  # any command but -A
    "-F FORWARD",
])
def test_a_release_that_would_touch_other_chains_is_refused_before_anything_is_touched(host, tmp_path, line):
    directory = tmp_path / "greedy"
    make_release(directory, KEEPS_SSH_V4.replace("COMMIT\n", f"{line}\nCOMMIT\n"), KEEPS_SSH_V6)

    result = apply(host, directory)

    assert result.returncode == 2
    assert "rules.v4: line 9: " in result.stderr and "may only fill its own HL-* chains" in result.stderr
    assert host.state() == {}


WHOLE_TABLE_V4 = f"""*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:HL-SSH - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j HL-SSH
-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT
-A HL-SSH -s {ADMIN_V4}/32 -j ACCEPT
COMMIT
"""


def test_the_first_apply_over_a_whole_table_release_removes_its_rules_and_rolls_back_to_them(host, keeps_ssh):
    # A host that runs a release from before the project owned only its chains: its rules sit
    # straight in INPUT, and the state names it as active.
    old = host.state_dir / "releases" / "0ld0ld0ld0ld0ld0"
    old.mkdir(parents=True)
    (old / "rules.v4").write_text(WHOLE_TABLE_V4)
    (host.state_dir / "state").write_text("state=active\nrelease=0ld0ld0ld0ld0ld0\nactive_release=0ld0ld0ld0ld0ld0\n")
    host.netns_run(["iptables-restore"], input=WHOLE_TABLE_V4)
    host.netns_run(["ip6tables-restore"], input=WHOLE_TABLE_V4.replace(f"{ADMIN_V4}/32", "2001:db8:100::10/128"))
    before = (host.save("v4"), host.save("v6"))
    directory, _ = keeps_ssh

    applied = apply(host, directory)

    assert applied.returncode == 0, applied.stderr
    assert "which replaced whole tables" in applied.stdout
    assert [line for line in host.rules("v4") if line.startswith("-A INPUT ")] == [JUMP]
    assert "mode=table" in (host.state_dir / "rollback" / "meta").read_text()
    assert host.hlfw("rollback").returncode == 0
    assert (host.save("v4"), host.save("v6")) == before
