"""One policy, rendered to both layers, proved in the kernel: the host rules are loaded into the
lab server's namespace only, the cloud rules into the edge, and exposure is measured from the
admin and internet namespaces with real connects, real SSH, ping and nmap, IPv4 and IPv6.

Each test sets the layers it needs (`layers.use`): both as shipped, the host layer alone (the
edge passes everything) or the cloud layer alone (the server's filter empty), so every column
of the exposure table (cloud, host, reachable) is measured on its own.

The port-scan trap counts closed-port hits per source and bans at `threshold`. Measurements
therefore send at most threshold - 1 closed-port packets per source between clearing the
trap's lists: a ban never hides an open port, and every result is deterministic."""
from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hardened_lightsail.exposure import ANYONE_ELSE, exposure_table
from lab.probe import nmap_scan, probe
from lab.topology import ADMIN, EDGE, HIDDEN_TCP_PORTS, HTTP_PORT, HTTPS_PORT, INTERNET, INTERNET2, SERVER, SSH_PORT

from lab_helpers import (  # noqa: F401 (fixtures)
    APP_PORT,
    BAN_SECONDS,
    CLIENTS,
    FAMILIES,
    NMAP_PORTS,
    OPEN_EDGE,
    PROBE_TIMEOUT,
    SCAN_THRESHOLD,
    TCP_PORTS,
    UDP_PORTS,
    UNUSED_PORT,
    Layers,
    every,
    firewall_values,
    layers,
    needs_nmap,
    nmap_scans,
    pings,
    render,
    shipped,
    ssh,
    web_from,
)

pytestmark = pytest.mark.netfilter

CLOSED_PROBES_PER_ROUND = SCAN_THRESHOLD - 1  # per client and family, between trap resets


# --- expectations and measurements --------------------------------------------------------

def expected_states(lab, policy, release, column: str) -> dict:
    """{(client, family, protocol, port): "open" | "filtered"} from the exposure table's `column`
    ("cloud", "host" or "reachable"). Never "closed": a RST would give the host away."""
    rows = exposure_table(policy, release)
    expected = {}
    for client in CLIENTS:
        for family in FAMILIES:
            address = ipaddress.ip_address(lab.address(client, family))
            for protocol, ports in (("tcp", TCP_PORTS), ("udp", UDP_PORTS)):
                for port in ports:
                    candidates = [r for r in rows if r.port == f"{protocol}/{port}" and r.family == family]
                    named = [r for r in candidates if r.source != ANYONE_ELSE
                             and address in ipaddress.ip_network(r.source)]
                    row = (max(named, key=lambda r: ipaddress.ip_network(r.source).prefixlen) if named
                           else next((r for r in candidates if r.source == ANYONE_ELSE), None))
                    allowed = row is not None and getattr(row, column)  # no row: "any other port"
                    expected[(client, family, protocol, port)] = "open" if allowed else "filtered"
    return expected


def _probe_round(lab, keys_by_client: dict) -> dict:
    """Probe each client's keys from its namespace, clients in parallel."""
    def run(client):
        keys = keys_by_client[client]
        address = {lab.address(SERVER, f): f for f in FAMILIES}
        found = probe(lab.namespace(client), [(lab.address(SERVER, f), proto, port) for _, f, proto, port in keys],
                      timeout=PROBE_TIMEOUT)
        return {(client, address[r.address], r.protocol, r.port): (r.state, r.detail) for r in found}
    measured = {}
    with ThreadPoolExecutor(max_workers=len(keys_by_client) or 1) as pool:
        for result in pool.map(run, [c for c in keys_by_client if keys_by_client[c]]):
            measured.update(result)
    return measured


def measure(lab, layers: Layers, expected: dict) -> dict:
    """{key: (state, detail)} for every key of `expected`: first all that should be open, then the
    rest in rounds of CLOSED_PROBES_PER_ROUND per client and family, the trap reset in between."""
    layers.forget_scanners()
    measured = _probe_round(lab, {c: [k for k in expected if k[0] == c and expected[k] == "open"]
                                  for c in CLIENTS})
    rest = {(c, f): [k for k in expected if k[:2] == (c, f) and expected[k] != "open"]
            for c in CLIENTS for f in FAMILIES}
    while any(rest.values()):
        batch = {c: [] for c in CLIENTS}
        for (client, _), keys in rest.items():
            batch[client] += keys[:CLOSED_PROBES_PER_ROUND]
            del keys[:CLOSED_PROBES_PER_ROUND]
        measured.update(_probe_round(lab, batch))
        layers.forget_scanners()
    return measured


def compare(expected: dict, measured: dict) -> str:
    """'' when equal, else a table of every probe with the mismatches marked."""
    if {k: s for k, (s, _) in measured.items()} == expected:
        return ""
    lines = []
    for key in sorted(expected):
        client, family, protocol, port = key
        state, detail = measured.get(key, ("missing", ""))
        mark = "  <-- expected " + expected[key] if state != expected[key] else ""
        lines.append(f"{client:<9} IPv{family} {protocol}/{port:<5} {state:<9} ({detail}){mark}")
    return "measured exposure differs from the exposure table:\n" + "\n".join(lines)


# --- the tests ----------------------------------------------------------------------------

def test_exposure_table_says_ssh_for_admins_web_for_all_and_the_app_for_internet2(lab, shipped):
    # The expectation every measurement below is compared with, spelled out once.
    expected = expected_states(lab, *shipped, "reachable")
    opened = sorted({(client, proto, port) for (client, _, proto, port), state in expected.items()
                     if state == "open"})
    assert opened == [(ADMIN, "tcp", SSH_PORT), (ADMIN, "tcp", HTTP_PORT), (ADMIN, "tcp", HTTPS_PORT),
                      (INTERNET, "tcp", HTTP_PORT), (INTERNET, "tcp", HTTPS_PORT),
                      (INTERNET2, "tcp", HTTP_PORT), (INTERNET2, "tcp", HTTPS_PORT),
                      (INTERNET2, "tcp", APP_PORT)]
    # Each layer on its own says the same: either one alone enforces the whole policy.
    assert expected_states(lab, *shipped, "cloud") == expected == expected_states(lab, *shipped, "host")


def test_host_layer_alone_opens_exactly_what_the_exposure_table_says(lab, layers, shipped):
    policy, release = shipped
    layers.use(OPEN_EDGE, release)
    expected = expected_states(lab, policy, release, "host")
    difference = compare(expected, measure(lab, layers, expected))
    assert not difference, difference


def test_cloud_layer_alone_opens_exactly_what_the_exposure_table_says(lab, layers, shipped):
    policy, release = shipped
    layers.use(release.port_infos, None)
    expected = expected_states(lab, policy, release, "cloud")
    difference = compare(expected, measure(lab, layers, expected))
    assert not difference, difference


def test_both_layers_open_exactly_what_the_exposure_table_says(lab, layers, shipped):
    policy, release = shipped
    layers.use(release.port_infos, release)
    expected = expected_states(lab, policy, release, "reachable")
    difference = compare(expected, measure(lab, layers, expected))
    assert not difference, difference


def test_host_layer_alone_lets_admins_log_in_and_times_out_ssh_from_the_internet(lab, layers, shipped):
    layers.use(OPEN_EDGE, shipped[1])
    for family in FAMILIES:
        admin = ssh(lab, ADMIN, family)
        assert admin.returncode == 0, f"IPv{family}: {admin.stderr}"
        stranger = ssh(lab, INTERNET, family, connect_timeout=2)
        # A timeout, not "Connection refused": the host does not even admit that port 22 exists.
        assert stranger.returncode == 255 and "timed out" in stranger.stderr, f"IPv{family}: {stranger.stderr}"
    layers.forget_scanners()


def test_ping_is_answered_over_ipv4_and_ipv6(lab, layers, shipped):
    policy, release = shipped
    layers.use(release.port_infos, release)
    assert {(r.family, r.reachable) for r in exposure_table(policy, release) if r.port == "ping"} == \
        {(4, True), (6, True)}
    for family in FAMILIES:
        assert pings(lab, INTERNET, family, count=3, interval=0.2) == 3, f"IPv{family}"


def test_a_ping_flood_is_rate_limited(lab, layers, shipped):
    policy, release = shipped
    layers.use(release.port_infos, release)
    burst = policy.ping_per_second * 2
    for family in FAMILIES:
        # 40 requests in 0.4 s: the burst gets through, plus a couple refilled meanwhile; not 40.
        flooded = pings(lab, INTERNET, family, count=40, interval=0.01)
        assert flooded <= burst + 6, f"IPv{family}: {flooded} of 40 echo requests answered"


@needs_nmap
def test_nmap_from_the_internet_finds_only_web_open_and_nothing_closed(lab, layers, shipped):
    layers.use(shipped[1].port_infos, shipped[1])
    seen = nmap_scans(lab, INTERNET, ("sS", "sN", "sF", "sX"))
    web = {port: "open" if port in (HTTP_PORT, HTTPS_PORT) else "filtered" for port in NMAP_PORTS}
    # NULL, FIN and Xmas scans never see "open"; "closed" would be a RST: silence says nothing.
    assert seen == {**every(("sN", "sF", "sX"), "open|filtered"), ("sS", 4): web, ("sS", 6): web}


@needs_nmap
def test_host_layer_alone_answers_null_fin_and_xmas_scans_with_silence(lab, layers, shipped):
    # Control: without host rules the unused port answers RST, so the scans can see a leak.
    layers.use(OPEN_EDGE, None)
    assert nmap_scan(lab.namespace(INTERNET), lab.server_ipv4, [UNUSED_PORT], scan="sN") == {UNUSED_PORT: "closed"}
    layers.use(OPEN_EDGE, shipped[1])
    assert nmap_scans(lab, INTERNET, ("sN", "sF", "sX")) == every(("sN", "sF", "sX"), "open|filtered")
    # Impossible flag combinations are dropped before the trap counts anything: no ban.
    assert not layers.banned(4) and not layers.banned(6)


@needs_nmap
def test_scanner_is_banned_while_admins_keep_ssh_and_the_ban_lifts_after_ban_seconds(lab, layers, shipped):
    layers.use(OPEN_EDGE, shipped[1])
    assert web_from(lab, INTERNET) == ["open"]
    closed_ports = [SSH_PORT, *HIDDEN_TCP_PORTS, UNUSED_PORT]  # closed for INTERNET
    assert len(closed_ports) >= SCAN_THRESHOLD
    assert nmap_scans(lab, INTERNET, ("sS",), closed_ports) == every(("sS",), "filtered", closed_ports)
    for family in FAMILIES:
        assert layers.banned(family) == {ipaddress.ip_address(lab.address(INTERNET, family))}

    assert web_from(lab, INTERNET) == ["filtered"]  # the scanner lost the web site too, v4 and v6
    last_packet = time.monotonic()  # every dropped packet renews the ban (--update)
    assert web_from(lab, INTERNET2) == ["open"]  # bans are per source
    for family in FAMILIES:
        admin = ssh(lab, ADMIN, family)
        assert admin.returncode == 0, f"IPv{family}: admin lost SSH during a ban: {admin.stderr}"

    time.sleep(max(0.0, last_packet + BAN_SECONDS + 2 - time.monotonic()))
    assert web_from(lab, INTERNET) == ["open"], f"the ban did not lift after {BAN_SECONDS} s"
    layers.forget_scanners()


def _ndp_counter(lab, message: str) -> int:
    """Packets the server's rule for this neighbour discovery message has accepted."""
    for line in lab.run(SERVER, ["ip6tables-save", "-c"]).stdout.splitlines():
        if f"neighbour discovery ({message})" in line:
            return int(re.match(r"\[(\d+):", line).group(1))
    raise AssertionError(f"no rule for {message} in the server's rules.v6")


def test_ipv6_neighbour_discovery_still_works_with_the_rules_loaded(lab, layers, shipped):
    layers.use(shipped[1].port_infos, shipped[1])
    server6, router6 = lab.server_ipv6, str(lab.segments["server"].edge.ipv6.ip)
    before = _ndp_counter(lab, "neighbour-solicitation")
    for where in (EDGE, SERVER):
        lab.run(where, ["ip", "-6", "neigh", "flush", "all"])
    assert lab.run(EDGE, ["ip", "-6", "neigh", "show", server6]).stdout.strip() == ""

    seen = probe(lab.namespace(INTERNET), [(server6, "tcp", HTTP_PORT)], timeout=3)
    assert seen[0].state == "open", seen
    admin = ssh(lab, ADMIN, 6)
    assert admin.returncode == 0, admin.stderr
    # Both sides learned each other again, by solicitation the server's rules let in.
    for where, neighbour in ((EDGE, server6), (SERVER, router6)):
        entry = lab.run(where, ["ip", "-6", "neigh", "show", neighbour]).stdout
        assert "lladdr" in entry and "FAILED" not in entry, f"{where}: {entry!r}"
    assert _ndp_counter(lab, "neighbour-solicitation") > before


def test_public_ssh_is_rate_limited_per_source(lab, layers):
    policy, release = render(firewall_values(lab, adminCidrs=["0.0.0.0/0", "::/0"]))
    layers.use(release.port_infos, release)
    burst, attempts = policy.ssh_rate_limit.burst, policy.ssh_rate_limit.burst + 10
    for family in FAMILIES:
        ssh_target = [(lab.address(SERVER, family), "tcp", SSH_PORT)]
        seen = probe(lab.namespace(INTERNET), ssh_target * attempts, timeout=PROBE_TIMEOUT, workers=attempts)
        opened = sum(r.state == "open" for r in seen)
        # The burst, plus at most one token refilled (20/min) while the attempts run.
        assert burst <= opened <= burst + 1, f"IPv{family}: {opened} of {attempts} connections opened"
        assert {r.state for r in seen} == {"open", "filtered"}  # over the limit: dropped, no RST
        other = probe(lab.namespace(INTERNET2), ssh_target, timeout=PROBE_TIMEOUT)
        assert other[0].state == "open", f"IPv{family}: another source was limited too"


def test_a_changed_ssh_rate_limit_takes_effect_at_the_next_load(lab, layers):
    layers.use(OPEN_EDGE, render(firewall_values(lab, adminCidrs=["0.0.0.0/0", "::/0"]))[1])
    stricter, release = render(firewall_values(lab, adminCidrs=["0.0.0.0/0", "::/0"],
                                               sshRateLimit={"perMinute": 6, "burst": 3}))
    layers.use(OPEN_EDGE, release)  # one atomic restore over the old rules, as hlfw applies
    ssh_target = [(lab.server_ipv4, "tcp", SSH_PORT)]
    seen = probe(lab.namespace(ADMIN), ssh_target * 10, timeout=PROBE_TIMEOUT, workers=10)
    opened = sum(r.state == "open" for r in seen)
    assert opened <= stricter.ssh_rate_limit.burst + 1, f"{opened} of 10 connections opened"


# One HTTP/1.1 keep-alive connection from a client namespace: a first request answered, then
# (after a line on stdin) a second one on the same connection, which must get no answer.
_KEPT_CONNECTION = """import http.client, socket, sys
connection = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=3)
connection.request("GET", "/"); connection.getresponse().read()
print("first answered", flush=True)
sys.stdin.readline()
try:
    connection.request("GET", "/"); connection.getresponse().read(); print("second answered", flush=True)
except (socket.timeout, OSError) as error:
    print(f"second unanswered ({type(error).__name__})", flush=True)
"""


def test_blocklisted_sources_get_nothing_while_unlisted_sources_get_the_web(lab, layers):
    # Exactly the internet client is listed, v4 and v6: it matches only where the rule looks at
    # the packet's source (our server's own address is not listed, so a destination match, or
    # a rule in the wrong place, lets it through and fails here).
    listed = [f"{lab.address(INTERNET, 4)}/32", f"{lab.address(INTERNET, 6)}/128"]
    _, release = render(firewall_values(lab, blocklist=listed))
    layers.use(OPEN_EDGE, release)

    assert web_from(lab, INTERNET) == ["filtered"], "a blocklisted source reached the web server"
    assert web_from(lab, INTERNET2) == ["open"], "an unlisted source lost the web server"
    for family in FAMILIES:
        assert pings(lab, INTERNET, family, count=3, interval=0.2) == 0, f"IPv{family}: ping answered"
        assert pings(lab, INTERNET2, family, count=3, interval=0.2) == 3, f"IPv{family}: ping lost"
    # Dropped before anything counts it: a blocklisted scanner is never banned (nor logged).
    assert not layers.banned(4) and not layers.banned(6)


def test_listing_a_source_cuts_its_open_connection(lab, layers):
    _, release = render(firewall_values(lab, blocklist=["203.0.113.250/32"]))  # not the client yet
    layers.use(OPEN_EDGE, release)
    client = subprocess.Popen(lab.exec_argv(INTERNET, [sys.executable, "-c", _KEPT_CONNECTION,
                                                       lab.server_ipv4, str(HTTP_PORT)]),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline() == "first answered\n", client.stderr.read()
        lab.run(SERVER, ["ipset", "add", "hl-blocklist-v4", lab.address(INTERNET, 4)])
        client.stdin.write("go\n")
        client.stdin.flush()
        assert client.stdout.readline().startswith("second unanswered"), "the listed source kept its connection"
    finally:
        client.kill()
        client.wait(timeout=10)
