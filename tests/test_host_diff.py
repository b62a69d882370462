"""`fw diff --from-host` without a server: a saved ruleset (what the host runs) against a stack's
policy, as markdown: the rows both sides name, changes ranked open > partly open > closed, the
output bounded like `fw diff`. (Over real SSH in the lab: tests/test_live_host.py.)"""
import argparse

from hardened_lightsail import server_commands
from hardened_lightsail.analysis import analyse
from hardened_lightsail.cli import _load
from hardened_lightsail.config import settings_from_values
from hardened_lightsail.host_diff import compare_with_host, host_diff_markdown
from hardened_lightsail.live_host import LiveRules, SshTarget
from hardened_lightsail.policy_diff import CLOSES, OPENS
from hardened_lightsail.release import render_release
from hardened_lightsail.saved_rules import parse_saved_ruleset

LIVE_V4 = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p udp -m udp --sport 53 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 3306 -j ACCEPT
COMMIT
"""


def compared(**firewall):
    policy = settings_from_values({"firewall": {"adminCidrs": ["203.0.113.7/32"], **firewall}}).firewall
    release = render_release(policy)
    live = (parse_saved_ruleset(LIVE_V4, 4, "live iptables-save"), parse_saved_ruleset("", 6, "live ip6tables-save"))
    return policy, release, compare_with_host(policy, release, live)


def row(changes, port, family, source="anyone else"):
    [change] = [c for c in changes if (c.after.port, c.after.family, c.after.source) == (port, family, source)]
    return change


def test_every_port_either_side_names_is_compared_with_what_runs_now():
    _, _, changes = compared(services=[{"name": "web", "protocol": "tcp", "ports": "443"}])
    assert row(changes, "tcp/22", 4).change == CLOSES  # open to anyone now, admins only after
    assert row(changes, "tcp/22", 4, "203.0.113.7/32").change == ""  # open both times
    assert row(changes, "tcp/3306", 4).change == CLOSES  # only the live rules name it
    assert row(changes, "tcp/443", 4).change == OPENS
    assert row(changes, "udp (other ports)", 4).now.host_state == "partly open"  # the DNS source-port hole
    assert row(changes, "udp (other ports)", 4).change == CLOSES
    assert row(changes, "tcp/443", 6).now.host_state == "open"  # no ip6tables rules: everything is open now
    assert row(changes, "tcp/443", 6).change == ""


def test_the_markdown_leads_with_the_changes_and_stays_within_max_chars():
    policy, release, changes = compared()
    markdown = host_diff_markdown("web", "ubuntu@203.0.113.10", release, changes, [], analyse(policy, release),
                                  max_chars=4_000)
    assert len(markdown) <= 4_000
    lines = markdown.splitlines()
    assert lines[0] == "### Firewall diff: `ubuntu@203.0.113.10` (live rules) → stack `web`"
    assert lines[4] == ("**1 opened, 7 closed** · live rules: 0 error(s), 0 warning(s) (`scripts/fw check --host "
                        "ubuntu@203.0.113.10` lists them)")
    assert lines[8] == "| 🔓 opens | ping | IPv4 | anyone else | closed | open | open | YES |"  # opens come first
    assert lines[6] == ("| change | port | family | source | host now | host after | cloud after | "
                        "reachable after |")
    assert "| 🔒 closes | udp (other ports) | IPv4 | anyone else | partly (line 7) | closed | closed | no |" in lines
    assert markdown.endswith("**Lint of the proposed policy**: no findings\n")


def test_from_host_diffs_the_release_pulumi_up_renders_for_a_lab_stack(tmp_path, monkeypatch, capsys):
    """A lab stack's release includes the lab's deployer addresses (effective_settings): the hash
    `fw diff --from-host` names is the one `fw check`, `fw diff --base` and `up` use, and the lint
    proves the deployer keeps SSH (here it would not: the admin CIDRs leave the lab's deployer out)."""
    stack_file = tmp_path / "Pulumi.mylab.yaml"
    stack_file.write_text("config:\n  hardened-lightsail:target: lab\n  hardened-lightsail:firewall:\n"
                          "    adminCidrs: [203.0.113.7/32]\n")
    target = SshTarget.parse("root@203.0.113.10")
    live = LiveRules(target, parse_saved_ruleset(LIVE_V4, 4, "live iptables-save"),
                     parse_saved_ruleset("", 6, "live ip6tables-save"), ipsets_read=True)
    monkeypatch.setattr(server_commands, "read_rules", lambda _target: live)
    args = argparse.Namespace(stack=None, config=str(stack_file), from_host="root@203.0.113.10", identity=None,
                              known_hosts=None, ssh_port=None,
                              max_chars=60_000)
    assert server_commands.cmd_diff_from_host(args, stack_file) == 0
    markdown = capsys.readouterr().out
    _, release = _load(args)  # what `fw check --config` renders
    assert f"(release `{release.hash}`)" in markdown
    assert "lock-out: the deployer's address 192.0.2.128/25 is not in firewall.adminCidrs" in markdown
