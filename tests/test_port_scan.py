"""nmap as the full outside check runs it: bounded arguments, and its XML read back into one state
per scanned port (the folded <extraports> groups included). No network: the lab tests scan for real
(tests/test_steps.py)."""
from __future__ import annotations

import pytest

from hardened_lightsail.policy import ALL_TCP_PORTS
from hardened_lightsail.port_scan import ScanError, nmap_arguments, parse_scan

XML = """<?xml version="1.0"?><nmaprun><host><status state="up"/><address addr="203.0.113.10"/><ports>
<extraports state="filtered" count="65532">
<extrareasons reason="no-response" count="65532" proto="tcp" ports="1-21,23-79,81-442,444-65535"/>
</extraports>
<extraports state="open|filtered" count="1"><extrareasons reason="no-response" count="1" proto="udp" ports="53"/></extraports>
<port protocol="tcp" portid="22"><state state="open" reason="syn-ack"/></port>
<port protocol="tcp" portid="80"><state state="open" reason="syn-ack"/></port>
<port protocol="tcp" portid="443"><state state="closed" reason="reset"/></port>
<port protocol="udp" portid="123"><state state="closed" reason="port-unreach"/></port>
</ports></host></nmaprun>"""


def test_nmap_arguments_are_bounded_and_short_for_the_whole_port_space():
    assert nmap_arguments("2001:db8:c::10", ALL_TCP_PORTS, [53, 123]) == [
        "-n", "-Pn", "--max-retries", "1", "--min-rate", "20000", "--max-rate", "30000", "--host-timeout", "60s",
        "-sU", "-p", "T:1-65535,U:53,123", "-oX", "-", "-6", "2001:db8:c::10"]
    # Asked again slowly: nmap's own pace, more retries, the same caps.
    assert nmap_arguments("203.0.113.10", [8080, 22, 23, 24], [], slow=True) == [
        "-n", "-Pn", "--max-retries", "3", "--max-rate", "30000", "--host-timeout", "60s",
        "-p", "T:22-24,8080", "-oX", "-", "203.0.113.10"]


def test_every_scanned_port_gets_a_state_folded_ones_included():
    states = parse_scan(XML, "203.0.113.10", ALL_TCP_PORTS, [53, 123])
    assert len(states) == 65535 + 2
    assert (states[("tcp", 22)], states[("tcp", 80)], states[("tcp", 443)]) == ("open", "open", "closed")
    assert states[("tcp", 1)] == states[("tcp", 65535)] == states[("tcp", 8080)] == "filtered"
    assert states[("udp", 53)] == "filtered"  # no answer: a quiet service or a drop
    assert states[("udp", 123)] == "closed"  # port unreachable: packets got through


def test_an_older_nmap_that_does_not_name_folded_ports_is_read_when_one_group_is_folded():
    old = XML.replace(' ports="1-21,23-79,81-442,444-65535"', "").replace(
        '<extraports state="open|filtered" count="1"><extrareasons reason="no-response" count="1" proto="udp" '
        'ports="53"/></extraports>', "")
    states = parse_scan(old, "203.0.113.10", ALL_TCP_PORTS, [53, 123])
    assert states[("tcp", 8080)] == states[("udp", 53)] == "filtered" and states[("tcp", 22)] == "open"


def test_two_unnamed_folded_groups_are_refused_rather_than_guessed():
    two = XML.replace(' ports="1-21,23-79,81-442,444-65535"', "").replace(' ports="53"', "").replace(
        'state="open|filtered" count="1"', 'state="closed" count="1"')
    with pytest.raises(ScanError, match="nmap left 65533 port"):
        parse_scan(two, "203.0.113.10", ALL_TCP_PORTS, [53, 123])


@pytest.mark.parametrize("xml, message", [
    ("<nmaprun></nmaprun>", "nmap did not finish scanning 203.0.113.10 within 60 s"),
    ("<nmaprun><host><status state=\"up\"/></host></nmaprun>", "nmap did not finish scanning"),
    ("Starting Nmap", "nmap's output for 203.0.113.10 is not XML"),
])
def test_a_scan_that_did_not_finish_is_an_error_not_a_quiet_pass(xml, message):
    with pytest.raises(ScanError, match=message):
        parse_scan(xml, "203.0.113.10", ALL_TCP_PORTS, [])
