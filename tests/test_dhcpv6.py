"""DHCPv6 through the rendered host rules (issue 11): a real exchange between Kea's DHCPv6 server
and ISC dhclient across two namespaces this test makes. The host under test runs the rendered
rules.v6 (with the port-scan trap) and dhclient; the server's replies come from its link-local
address to port 546 and match no conntrack entry, so only the DHCPv6 rule lets them in.

The control run loads the same rules without that one rule: the lease never comes and the
server's address is counted by the scan trap, which is what the rule is there to prevent."""
from __future__ import annotations

import ipaddress
import re
import secrets
import shutil
import time

import pytest

from hardened_lightsail.host_layer import ban_list, hits_list
from lab.dhcpv6 import Dhcpv6Exchange, LeaseTimers
from lab.netns import add_namespace, delete_namespace, in_namespace, ip, namespace_pids
from lab.processes import stop_pids

from lab_helpers import render

pytestmark = [
    pytest.mark.netfilter,
    pytest.mark.skipif(any(shutil.which(tool) is None for tool in ("kea-dhcp6", "dhclient")),
                       reason="kea-dhcp6-server and isc-dhcp-client are not installed (scripts/setup)"),
]

SUBNET = "2001:db8:dc::/64"
HOST_IF, SERVER_IF = "dh-host", "dh-server"
TIMERS = LeaseTimers(renew=3, rebind=5, preferred=8, valid=10)
SCAN_THRESHOLD = 3
DHCPV6_RULE = "DHCPv6 server replies to this host"


@pytest.fixture
def link(tmp_path):
    """(host namespace, server namespace) joined by one veth, link-local addresses ready."""
    tag = secrets.token_hex(3)
    host, server = f"hl-dh{tag}-host", f"hl-dh{tag}-srv"
    try:
        for namespace in (host, server):
            add_namespace(namespace)
        ip(host, "link", "add", HOST_IF, "type", "veth", "peer", "name", SERVER_IF, "netns", server)
        ip(server, "-6", "address", "add", "2001:db8:dc::1/64", "dev", SERVER_IF)
        for namespace, device in ((host, HOST_IF), (server, SERVER_IF)):
            ip(namespace, "link", "set", device, "up")
        for namespace, device in ((host, HOST_IF), (server, SERVER_IF)):
            wait_for_link_local(namespace, device)
        yield host, server
    finally:
        for namespace in (host, server):
            stop_pids(namespace_pids(namespace))
            delete_namespace(namespace)


def wait_for_link_local(namespace: str, device: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = ip(namespace, "-6", "address", "show", "dev", device, "scope", "link").stdout
        found = re.search(r"inet6 (fe80::[0-9a-f:]+)/64", shown)
        if found and "tentative" not in shown:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"{device} in {namespace} has no usable link-local address after {timeout} s")


def load_host_rules(namespace: str, without_dhcpv6_rule: bool = False) -> None:
    _, release = render({"adminCidrs": ["2001:db8:ad::/64"],
                         "services": [{"name": "http", "protocol": "tcp", "ports": "80"}],
                         "portScan": {"enabled": True, "threshold": SCAN_THRESHOLD, "banSeconds": 60}})
    rules_v6 = release.files["rules.v6"].decode()
    assert DHCPV6_RULE in rules_v6
    if without_dhcpv6_rule:
        rules_v6 = "\n".join(line for line in rules_v6.splitlines() if DHCPV6_RULE not in line) + "\n"
    if "ipsets" in release.files:
        in_namespace(namespace, ["ipset", "restore"], input=release.files["ipsets"].decode())
    in_namespace(namespace, ["iptables-restore"], input=release.files["rules.v4"].decode())
    in_namespace(namespace, ["ip6tables-restore"], input=rules_v6)


def recent(namespace: str, name: str) -> set:
    listing = in_namespace(namespace, ["sh", "-c", f"cat /proc/net/xt_recent/{name} 2>/dev/null || true"]).stdout
    return {ipaddress.ip_address(source) for source in re.findall(r"src=(\S+)", listing)}


def leased_addresses(namespace: str) -> dict:
    """{address: valid seconds left} of the global addresses on the host's interface."""
    shown = ip(namespace, "-6", "address", "show", "dev", HOST_IF, "scope", "global").stdout
    return {address: int(valid) for address, valid in
            re.findall(r"inet6 ([0-9a-f:]+)/\d+ .*?\n\s+valid_lft (\d+)sec", shown)}


def dhcpv6_rule_packets(namespace: str) -> int:
    for line in in_namespace(namespace, ["ip6tables-save", "-c"]).stdout.splitlines():
        if DHCPV6_RULE in line:
            return int(re.match(r"\[(\d+):", line).group(1))
    raise AssertionError("no DHCPv6 rule loaded")


def test_a_dhcpv6_lease_and_its_renewals_pass_the_rules_and_the_server_is_never_counted(link, tmp_path):
    host, server = link
    server_link_local = ipaddress.ip_address(wait_for_link_local(server, SERVER_IF))
    load_host_rules(host)
    exchange = Dhcpv6Exchange(tmp_path, server, SERVER_IF, host, HOST_IF, SUBNET, TIMERS)
    try:
        exchange.start_server()
        exchange.start_client()

        bound = exchange.wait_for_event("BOUND6", timeout=15)
        assert bound is not None, f"no lease within 15 s: {exchange.client_events()}"
        leased = bound[1]
        assert ipaddress.ip_address(leased) in ipaddress.ip_network(SUBNET)
        bound_at, events_at_bound = time.monotonic(), len(exchange.client_events())
        renewed = exchange.wait_for_event("RENEW6", timeout=TIMERS.renew + 10, after=events_at_bound)
        assert renewed == ("RENEW6", leased), exchange.client_events()
        # Past the first lease's whole valid lifetime the address is still there: renewed, not lost.
        time.sleep(max(0.0, bound_at + TIMERS.valid + 2 - time.monotonic()))
        assert leased in leased_addresses(host), leased_addresses(host)
        assert [reason for reason, _ in exchange.client_events()].count("RENEW6") >= 2
    finally:
        exchange.stop()
    assert dhcpv6_rule_packets(host) >= 4  # advertise, reply, and the renewals' replies
    counted = recent(host, hits_list(6)) | recent(host, ban_list(6))
    assert server_link_local not in counted, f"the DHCPv6 server was counted as a scanner: {counted}"


def test_without_the_dhcpv6_rule_no_lease_comes_and_the_server_is_counted_as_a_scanner(link, tmp_path):
    host, server = link
    server_link_local = ipaddress.ip_address(wait_for_link_local(server, SERVER_IF))
    load_host_rules(host, without_dhcpv6_rule=True)
    exchange = Dhcpv6Exchange(tmp_path, server, SERVER_IF, host, HOST_IF, SUBNET, TIMERS)
    try:
        exchange.start_server()
        exchange.start_client()
        assert exchange.wait_for_event("BOUND6", timeout=8) is None, "a lease came although replies are dropped"
    finally:
        exchange.stop()
    assert server_link_local in recent(host, hits_list(6)) | recent(host, ban_list(6))
