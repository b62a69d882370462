"""The deployer-side outside verification of HostFirewall: reading the host's report, and the
probes measured for real against a lab (TCP and UDP, IPv4 and IPv6)."""
import pytest

from hardened_lightsail.outside_verification import agrees_with_policy, parse_host_report, verify_from_here
from hardened_lightsail.reachability import CLOSED, FILTERED, OPEN
from lab.topology import ROOT, SERVER

from lab_helpers import firewall_values, layers, render  # noqa: F401 (fixture)

HOST_REPORT = """release=0123456789abcdef
state=active
live_v4=ok
listening:
tcp * 22
tcp 0.0.0.0 80
tcp :: 443
tcp 127.0.0.1 631
tcp ::1 6010
udp * 5353
"""


def test_the_host_report_gives_the_client_and_public_listeners_per_protocol():
    report = parse_host_report("client: 192.0.2.74\n" + HOST_REPORT)
    assert report.client == "192.0.2.74"
    assert report.listening == {"tcp": {22, 80, 443}, "udp": {5353}}  # loopback-only sockets left out


@pytest.mark.parametrize("protocol,allowed,listening,state,ok", [
    ("tcp", False, True, FILTERED, True), ("tcp", False, True, CLOSED, False), ("tcp", False, True, OPEN, False),
    ("tcp", True, True, OPEN, True), ("tcp", True, True, FILTERED, False), ("tcp", True, False, CLOSED, True),
    ("udp", False, True, FILTERED, True), ("udp", False, False, CLOSED, False), ("udp", False, True, OPEN, False),
    ("udp", True, True, OPEN, True), ("udp", True, True, FILTERED, True), ("udp", True, True, CLOSED, False),
    ("udp", True, False, CLOSED, True),
])
def test_a_denied_port_must_be_silent_and_an_allowed_listener_must_not_be_refused(protocol, allowed, listening,
                                                                                   state, ok):
    assert agrees_with_policy(protocol, allowed, listening, state) is ok


def _verify(lab, policy, release) -> tuple[int, str]:
    report = f"client: {lab.address(ROOT, 4)}\n" + HOST_REPORT.replace("tcp * 22", "tcp * 22\ntcp * 23\ntcp * 5432\ntcp * 8080")
    result = verify_from_here(release, policy, [lab.address(SERVER, 4), lab.address(SERVER, 6)],
                              parse_host_report(report))
    return (1 if result.mismatches else 0), result.table


@pytest.mark.netfilter
def test_outside_verification_passes_when_exposure_matches_and_catches_a_hole(lab, layers, tmp_path):
    policy, release = render(firewall_values(lab))
    layers.use(release.port_infos, release)
    code, output = _verify(lab, policy, release)
    assert code == 0, output
    assert "udp/5353" in output and "tcp/5432" in output and "MISMATCH" not in output
    assert output.count("2001:db8:") >= 20  # IPv6 probed too
    # Both layers wide open (no host rules, an allow-all edge): the hidden listeners answer.
    everything = [{"protocol": "all", "fromPort": 0, "toPort": 65535, "cidrs": ["0.0.0.0/0"],
                   "ipv6Cidrs": ["::/0"], "cidrListAliases": []}]
    layers.use(everything, None)
    code, output = _verify(lab, policy, release)
    assert code == 1
    mismatches = [line.split()[1] for line in output.splitlines() if line.endswith("MISMATCH")]
    assert {"tcp/5432", "tcp/23", "udp/5353"} <= set(mismatches), output
    assert "verified:" not in output
