"""The checks run on every render before anything is touched: lock-out, shadowed rules, layers
that disagree, SSH open to the world, and the exposure table they are built on."""
from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
import yaml

from hardened_lightsail.analysis import (
    ERROR,
    WARNING,
    Finding,
    analyse,
    layer_findings,
    shadow_findings,
    shadowed_rules,
    world_ssh_findings,
)
from hardened_lightsail.config import settings_from_values
from hardened_lightsail.evaluate import host_allows
from hardened_lightsail.exposure import ANYONE_ELSE, ExposureRow, exposure_map, exposure_table, format_table
from hardened_lightsail.iptables_rules import Rule, Ruleset
from hardened_lightsail.networks import parse_cidr
from hardened_lightsail.policy import PortRange
from hardened_lightsail.release import render_release

from golden_cases import case_names, load_case

FW = Path(__file__).resolve().parent.parent / "scripts" / "fw"
ADMIN = "203.0.113.7/32"
REFUSE = ("Refusing to ship it: fix firewall.adminCidrs/blocklist, or set firewall.allowLockout: true "
          "for a rollback drill")


def policy_of(**firewall):
    return settings_from_values({"firewall": {"adminCidrs": [ADMIN], **firewall}}).firewall


def checked(**firewall) -> list[str]:
    policy = policy_of(**firewall)
    return [str(finding) for finding in analyse(policy, render_release(policy))]


# --- lock-out

def test_blocklist_over_an_admin_cidr_is_a_lockout_error_naming_both():
    assert checked(blocklist=["198.51.100.0/24", "203.0.113.0/24"]) == [
        f"error: lock-out: firewall.blocklist[1] 203.0.113.0/24 blocks (part of) admin CIDR {ADMIN}. {REFUSE}",
        f"error: lock-out: host rules (rules.v4) refuse SSH (tcp/22) from admin CIDR {ADMIN}. {REFUSE}",
    ]


def test_blocklist_over_part_of_an_ipv6_admin_cidr_is_a_lockout_error():
    assert checked(adminCidrs=[ADMIN, "2001:db8:a::/48"], blocklist=["2001:db8:a:ff::/64"]) == [
        f"error: lock-out: firewall.blocklist[0] 2001:db8:a:ff::/64 blocks (part of) admin CIDR 2001:db8:a::/48. "
        f"{REFUSE}",
    ]


def test_deployer_address_outside_admin_cidrs_is_a_lockout_error():
    assert checked(deployerAddresses=["198.51.100.9/32"]) == [
        f"error: lock-out: the deployer's address 198.51.100.9/32 is not in firewall.adminCidrs ({ADMIN}): "
        f"this update would cut it off SSH. {REFUSE}",
    ]


def test_blocklisted_deployer_is_a_lockout_error():
    assert checked(adminCidrs=["203.0.113.0/24"], deployerAddresses=[ADMIN], blocklist=["203.0.113.0/28"]) == [
        f"error: lock-out: firewall.blocklist[0] 203.0.113.0/28 blocks (part of) admin CIDR 203.0.113.0/24. {REFUSE}",
        f"error: lock-out: firewall.blocklist[0] 203.0.113.0/28 blocks the deployer's address {ADMIN}. {REFUSE}",
    ]


def test_deployer_inside_admin_cidrs_passes():
    assert checked(adminCidrs=["203.0.113.0/24"], deployerAddresses=[ADMIN]) == []


def test_allow_lockout_turns_lockout_errors_into_loud_warnings():
    allowed = "warning: LOCK-OUT ALLOWED (firewall.allowLockout: true): "
    rollback = "; the host will roll back by itself 30 s after apply"
    assert checked(blocklist=["203.0.113.0/24"], deployerAddresses=["198.51.100.9/32"], allowLockout=True,
                   confirmTimeoutSeconds=30) == [
        f"{allowed}firewall.blocklist[0] 203.0.113.0/24 blocks (part of) admin CIDR {ADMIN}{rollback}",
        f"{allowed}host rules (rules.v4) refuse SSH (tcp/22) from admin CIDR {ADMIN}{rollback}",
        f"{allowed}the deployer's address 198.51.100.9/32 is not in firewall.adminCidrs ({ADMIN}): "
        f"this update would cut it off SSH{rollback}",
    ]


def run_fw_check(tmp_path: Path, **firewall) -> subprocess.CompletedProcess:
    stack_file = tmp_path / "Pulumi.drill.yaml"
    stack_file.write_text(yaml.safe_dump(
        {"config": {"hardened-lightsail:firewall": {"adminCidrs": [ADMIN], **firewall}}}))
    return subprocess.run([str(FW), "check", "--config", str(stack_file)], capture_output=True, text=True,
                          timeout=60)


def test_fw_check_refuses_a_lockout_and_lets_a_declared_drill_through(tmp_path):
    refused = run_fw_check(tmp_path, deployerAddresses=["198.51.100.9/32"])
    assert refused.returncode == 2, refused.stderr
    assert "error: lock-out: the deployer's address 198.51.100.9/32" in refused.stdout
    assert "Traceback" not in refused.stderr
    drill = run_fw_check(tmp_path, deployerAddresses=["198.51.100.9/32"], allowLockout=True)
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert "warning: LOCK-OUT ALLOWED (firewall.allowLockout: true)" in drill.stdout


# --- shadowed rules

def article_ruleset() -> Ruleset:
    """The article's bug: a general SSH accept, then a "trusted IP only" one that can never match."""
    rs = Ruleset(family=4, policies={"INPUT": "DROP", "FORWARD": "DROP", "OUTPUT": "ACCEPT"})
    rs.add(Rule("INPUT", "ACCEPT", "ssh", protocol="tcp", dports=PortRange(22, 22)))
    rs.add(Rule("INPUT", "ACCEPT", "ssh from the trusted IP only", protocol="tcp", dports=PortRange(22, 22),
                source=parse_cidr("203.0.113.5/32")))
    return rs


def test_trusted_ip_rule_after_a_general_accept_is_reported_as_never_matching():
    rs = article_ruleset()
    general, trusted = rs.rules
    assert shadowed_rules(rs) == [(general, trusted)]
    assert [str(f) for f in shadow_findings([rs])] == [
        'warning: rules.v4: `-A INPUT -s 203.0.113.5/32 -p tcp --dport 22 -m comment --comment '
        '"ssh from the trusted IP only" -j ACCEPT` can never match: `-A INPUT -p tcp --dport 22 -m comment '
        '--comment "ssh" -j ACCEPT` above it already accepts every packet it would']
    # ...which is why the untrusted host in the article still got in.
    assert host_allows(rs, "tcp", 22, parse_cidr("198.51.100.66/32"))


def test_drop_after_a_wider_accept_is_an_error():
    rs = article_ruleset()
    rs.rules[1] = Rule("INPUT", "DROP", "keep the scanners out", protocol="tcp", dports=PortRange(20, 30),
                       source=parse_cidr("198.51.100.0/24"))
    assert shadowed_rules(rs) == []  # the accept covers only port 22, not 20-30
    rs.rules[1] = dataclasses.replace(rs.rules[1], dports=PortRange(22, 22))
    [finding] = shadow_findings([rs])
    assert finding.level == ERROR
    assert finding.message.startswith("rules.v4: `-A INPUT -s 198.51.100.0/24 -p tcp --dport 22 ")
    assert finding.message.endswith("above it already accepts every packet it would")


@pytest.mark.parametrize("earlier", [
    Rule("INPUT", "ACCEPT", "trusted first", protocol="tcp", dports=PortRange(22, 22), source=parse_cidr("203.0.113.5/32")),
    Rule("INPUT", "ACCEPT", "rate-limited", protocol="tcp", dports=PortRange(22, 22),
         matches=("-m", "limit", "--limit", "5/min")),
    Rule("INPUT", "ACCEPT", "loopback only", in_interface="lo"),
    Rule("INPUT", "ACCEPT", "udp only", protocol="udp", dports=PortRange(22, 22)),
    Rule("INPUT", "HL-SSH", "a jump decides nothing by itself", protocol="tcp", dports=PortRange(22, 22)),
], ids=["narrower-source", "conditional", "other-interface", "other-protocol", "jump"])
def test_a_rule_that_does_not_cover_the_later_one_shadows_nothing(earlier):
    later = Rule("INPUT", "ACCEPT", "ssh for the office", protocol="tcp", dports=PortRange(22, 22),
                 source=parse_cidr("198.51.100.0/24"))
    rs = Ruleset(family=4, policies={"INPUT": "DROP"}, rules=[earlier, later])
    assert shadowed_rules(rs) == []


@pytest.mark.parametrize("case", case_names())
def test_no_golden_policy_has_a_shadowed_rule_or_any_finding(case):
    settings, release = load_case(case)
    assert [shadowed_rules(rs) for rs in release.rulesets] == [[], []]
    assert analyse(settings.firewall, release) == []


# --- layers that disagree

def test_port_opened_in_the_cloud_only_is_a_layer_error():
    settings, release = load_case("minimal-web")
    tampered = dataclasses.replace(release, port_infos=release.port_infos + [{
        "protocol": "tcp", "fromPort": 8080, "toPort": 8080, "cidrs": ["0.0.0.0/0"], "ipv6Cidrs": ["::/0"],
        "cidrListAliases": []}])
    assert layer_findings(settings.firewall, tampered) == [
        Finding(ERROR, "layers disagree: tcp/8080 IPv4 from anyone else is open in the cloud layer but closed "
                       "in the host layer"),
        Finding(ERROR, "layers disagree: tcp/8080 IPv6 from anyone else is open in the cloud layer but closed "
                       "in the host layer"),
    ]
    assert [f.level for f in analyse(settings.firewall, tampered)] == [ERROR, ERROR]


def test_ssh_opened_to_everyone_in_the_cloud_only_is_a_layer_error():
    settings, release = load_case("minimal-web")
    infos = [dict(info, ipv6Cidrs=["::/0"]) if info["fromPort"] == 22 else info for info in release.port_infos]
    assert [str(f) for f in layer_findings(settings.firewall, dataclasses.replace(release, port_infos=infos))] == [
        "error: layers disagree: tcp/22 IPv6 from anyone else is open in the cloud layer but closed in the host layer"]


def test_port_opened_in_the_host_only_is_a_layer_error():
    settings, release = load_case("minimal-web")
    v4, v6 = release.rulesets
    extra = Rule("INPUT", "ACCEPT", "hand-added", protocol="tcp", dports=PortRange(8080, 8080))
    tampered_v6 = dataclasses.replace(v6, rules=[extra, *v6.rules])
    tampered = dataclasses.replace(release, rulesets=(v4, tampered_v6))
    assert [str(f) for f in layer_findings(settings.firewall, tampered)] == [
        "error: layers disagree: tcp/8080 IPv6 from anyone else is open in the host layer but closed in the cloud layer"]


def test_service_missing_from_the_host_is_a_layer_error():
    settings, release = load_case("minimal-web")
    v4, v6 = release.rulesets
    tampered_v4 = dataclasses.replace(v4, rules=[r for r in v4.rules if "service https" not in r.why])
    tampered = dataclasses.replace(release, rulesets=(tampered_v4, v6))
    assert [str(f) for f in layer_findings(settings.firewall, tampered)] == [
        "error: layers disagree: tcp/443 IPv4 from anyone else is open in the cloud layer but closed in the host layer"]


def test_host_only_blocklist_is_not_a_layer_disagreement():
    # Lightsail has no deny rules, so a blocked service source stays open in the cloud by design.
    assert checked(services=[{"name": "postgres", "protocol": "tcp", "ports": "5432",
                              "sources": ["198.51.100.0/24"]}], blocklist=["198.51.100.0/24"]) == []


# --- SSH open to the world

@pytest.mark.parametrize("admin", ["0.0.0.0/0", "::/0", "0.0.0.0/1", "2001::/16"])
def test_ssh_open_to_the_world_is_a_warning(admin):
    policy = policy_of(adminCidrs=[admin])
    assert world_ssh_findings(policy) == [Finding(WARNING, (
        f"SSH is open to {admin} (firewall.adminCidrs): that is most of the internet; "
        "list the addresses you really administer from"))]
    assert [f.level for f in analyse(policy, render_release(policy))] == [WARNING]


@pytest.mark.parametrize("admin", [ADMIN, "198.51.0.0/16", "2001:db8::/32"])
def test_ssh_for_a_real_admin_network_is_not_a_warning(admin):
    assert world_ssh_findings(policy_of(adminCidrs=[admin])) == []


# --- exposure table

def rows(case: str, port: str) -> list[tuple]:
    settings, release = load_case(case)
    return [(r.family, r.source, r.cloud, r.host) for r in exposure_table(settings.firewall, release) if r.port == port]


def test_service_restricted_to_one_cidr_per_family_is_open_only_to_it():
    assert rows("dual-stack-restricted", "tcp/5432") == [
        (4, "198.51.100.0/24", True, True),
        (4, ANYONE_ELSE, False, False),
        (6, "2001:db8:100::/56", True, True),
        (6, ANYONE_ELSE, False, False),
    ]


def test_ipv4_only_service_is_closed_to_everyone_over_ipv6():
    assert rows("dual-stack-restricted", "tcp/9100") == [
        (4, "198.51.100.7/32", True, True),
        (4, ANYONE_ELSE, False, False),
        (6, ANYONE_ELSE, False, False),
    ]


def test_udp_range_is_open_to_everyone_in_both_families():
    assert rows("dual-stack-restricted", "udp/27000-27015") == [(4, ANYONE_ELSE, True, True), (6, ANYONE_ELSE, True, True)]


def test_exposure_table_of_the_minimal_web_server():
    settings, release = load_case("minimal-web")
    table = exposure_table(settings.firewall, release)
    assert table == [
        ExposureRow("tcp/22", 4, ADMIN, True, True),
        ExposureRow("tcp/22", 4, ANYONE_ELSE, False, False),
        ExposureRow("tcp/22", 6, ANYONE_ELSE, False, False),
        ExposureRow("tcp/80", 4, ANYONE_ELSE, True, True),
        ExposureRow("tcp/80", 6, ANYONE_ELSE, True, True),
        ExposureRow("tcp/443", 4, ANYONE_ELSE, True, True),
        ExposureRow("tcp/443", 6, ANYONE_ELSE, True, True),
        ExposureRow("ping", 4, ANYONE_ELSE, True, True),
        ExposureRow("ping", 6, ANYONE_ELSE, True, True),
        # The ports nobody names, asked of the rules like the others (port 1 stands for them).
        ExposureRow("tcp (other ports)", 4, ADMIN, False, False),
        ExposureRow("tcp (other ports)", 4, ANYONE_ELSE, False, False),
        ExposureRow("tcp (other ports)", 6, ANYONE_ELSE, False, False),
        ExposureRow("udp (other ports)", 4, ADMIN, False, False),
        ExposureRow("udp (other ports)", 4, ANYONE_ELSE, False, False),
        ExposureRow("udp (other ports)", 6, ANYONE_ELSE, False, False),
    ]
    assert format_table(table).splitlines() == [
        "port            family  source          cloud   host    reachable",
        "tcp/22          IPv4    203.0.113.7/32  open    open    YES",
        "tcp/22          IPv4    anyone else     closed  closed  no",
        "tcp/22          IPv6    anyone else     closed  closed  no",
        "tcp/80          IPv4    anyone else     open    open    YES",
        "tcp/80          IPv6    anyone else     open    open    YES",
        "tcp/443         IPv4    anyone else     open    open    YES",
        "tcp/443         IPv6    anyone else     open    open    YES",
        "ping            IPv4    anyone else     open    open    YES",
        "ping            IPv6    anyone else     open    open    YES",
        "any other port  both    anyone          closed  closed  no",
    ]


def _with_host_rule(release, family: int, rule: Rule):
    rulesets = list(release.rulesets)
    rulesets[family == 6] = dataclasses.replace(rulesets[family == 6], rules=[rule, *rulesets[family == 6].rules])
    return dataclasses.replace(release, rulesets=tuple(rulesets))


def test_any_other_port_row_comes_from_the_rules_not_a_fixed_string():
    settings, release = load_case("minimal-web")
    # Hand-edited: every TCP port from the admin, every UDP port over IPv6 from anyone.
    admin_all = Rule("INPUT", "ACCEPT", "hand-added", protocol="tcp", source=parse_cidr(ADMIN))
    tampered = _with_host_rule(release, 4, admin_all)
    tampered = _with_host_rule(tampered, 6, Rule("INPUT", "ACCEPT", "hand-added", protocol="udp"))
    table = exposure_table(settings.firewall, tampered)
    lines = format_table(table).splitlines()
    assert not any(line.startswith("any other port") for line in lines), lines
    assert [line.split() for line in lines if "(other ports)" in line] == [
        ["tcp", "(other", "ports)", "IPv4", ADMIN, "closed", "open", "no"],
        ["tcp", "(other", "ports)", "IPv4", "anyone", "else", "closed", "closed", "no"],
        ["tcp", "(other", "ports)", "IPv6", "anyone", "else", "closed", "closed", "no"],
        ["udp", "(other", "ports)", "IPv4", ADMIN, "closed", "closed", "no"],
        ["udp", "(other", "ports)", "IPv4", "anyone", "else", "closed", "closed", "no"],
        ["udp", "(other", "ports)", "IPv6", "anyone", "else", "closed", "open", "no"],
    ]
    summary = exposure_map(table)
    assert "any other port" not in summary
    assert summary["tcp (other ports) IPv4 from 203.0.113.7/32"] == "closed (cloud closed, host open)"
    assert summary["udp (other ports) IPv6 from anyone else"] == "closed (cloud closed, host open)"
    # Both layers are asked: the host opening what the cloud closes is a layer disagreement.
    assert "error: layers disagree: udp (other ports) IPv6 from anyone else is open in the host layer but " \
           "closed in the cloud layer" in [str(f) for f in layer_findings(settings.firewall, tampered)]


def test_other_ports_are_probed_at_a_port_no_rule_or_cloud_rule_names():
    settings, release = load_case("minimal-web")
    # Port 1 opened in both layers is a row of its own; "other ports" moves on to port 2.
    opened = _with_host_rule(release, 4, Rule("INPUT", "ACCEPT", "hand-added", protocol="tcp",
                                              dports=PortRange(1, 1)))
    opened = dataclasses.replace(opened, port_infos=opened.port_infos + [{
        "protocol": "tcp", "fromPort": 1, "toPort": 1, "cidrs": ["0.0.0.0/0"], "ipv6Cidrs": [], "cidrListAliases": []}])
    table = exposure_table(settings.firewall, opened)
    assert ExposureRow("tcp/1", 4, ANYONE_ELSE, True, True) in table
    assert exposure_map(table)["any other port"] == "closed"


def test_ping_off_is_closed_in_both_layers():
    assert rows("blocklist-quiet", "ping") == [(4, ANYONE_ELSE, False, False), (6, ANYONE_ELSE, False, False)]


def test_moved_ssh_port_is_what_the_table_probes():
    assert rows("custom-ssh-and-log", "tcp/2222") == [
        (4, ADMIN, True, True), (4, ANYONE_ELSE, False, False),
        (6, "2001:db8:a::/48", True, True), (6, ANYONE_ELSE, False, False)]
    assert rows("custom-ssh-and-log", "tcp/22") == []
