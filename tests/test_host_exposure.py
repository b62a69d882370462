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
import json
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hardened_lightsail.config import settings_from_values
from hardened_lightsail.exposure import ANYONE_ELSE, exposure_table
from hardened_lightsail.host_layer import ban_list, hits_list
from hardened_lightsail.release import Release, render_release
from lab import ADMIN_CIDRS
from lab.probe import nmap_scan, probe
from lab.topology import (ADMIN, EDGE, HIDDEN_TCP_PORTS, HIDDEN_UDP_PORTS, HTTP_PORT, HTTPS_PORT,
                          INTERNET, INTERNET2, SERVER, SSH_PORT)

pytestmark = pytest.mark.netfilter

BAN_SECONDS, SCAN_THRESHOLD = 20, 3
# Nobody listens here: a bare host answers RST ("closed"), which tells a scanner it exists.
UNUSED_PORT = 81
APP_PORT = 8080  # one of the hidden listeners, opened by the policy for internet2 only
TCP_PORTS = (SSH_PORT, *HIDDEN_TCP_PORTS, HTTP_PORT, HTTPS_PORT, UNUSED_PORT)
UDP_PORTS = HIDDEN_UDP_PORTS
CLIENTS = (ADMIN, INTERNET, INTERNET2)
FAMILIES = (4, 6)
# Below Linux's 1 s initial SYN retransmission timeout: one probe is one SYN, so one trap hit.
PROBE_TIMEOUT = 0.9
CLOSED_PROBES_PER_ROUND = SCAN_THRESHOLD - 1  # per client and family, between trap resets
NMAP_PORTS = TCP_PORTS
# The edge passes everything: the host layer alone decides (a server with no cloud firewall).
OPEN_EDGE = [{"protocol": "all", "fromPort": 0, "toPort": 65535, "cidrs": ["0.0.0.0/0"],
              "ipv6Cidrs": ["::/0"], "cidrListAliases": []}]
EMPTY_FILTER = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"

needs_nmap = pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")


def firewall_values(lab, **overrides) -> dict:
    """The policy under test: web for everyone, the app port for internet2 only, SSH for the
    admin CIDRs, ping, and a port-scan trap with a ban short enough to watch it lift."""
    app_sources = [f"{lab.address(INTERNET2, 4)}/32", f"{lab.address(INTERNET2, 6)}/128"]
    return {
        "adminCidrs": list(ADMIN_CIDRS),
        "services": [
            {"name": "http", "protocol": "tcp", "ports": str(HTTP_PORT)},
            {"name": "https", "protocol": "tcp", "ports": str(HTTPS_PORT)},
            {"name": "app", "protocol": "tcp", "ports": str(APP_PORT), "sources": app_sources},
        ],
        "ping": True,
        "portScan": {"enabled": True, "threshold": SCAN_THRESHOLD, "banSeconds": BAN_SECONDS},
        **overrides,
    }


def render(values: dict):
    policy = settings_from_values({"target": "lab", "firewall": values}).firewall
    return policy, render_release(policy)


class Layers:
    """Puts rules live: the cloud layer on the edge, the host layer in the server namespace."""

    def __init__(self, lab, directory):
        self.lab, self.cloud_file = lab, directory / "cloud-ports.json"

    def use(self, cloud: list[dict], host: Release | None) -> None:
        self.cloud_file.write_text(json.dumps(cloud))
        self.lab.load_cloud_layer(self.cloud_file)
        if host is None:
            for restore in ("iptables-restore", "ip6tables-restore"):
                self.lab.run(SERVER, [restore], input=EMPTY_FILTER)
            self.lab.run(SERVER, ["ipset", "destroy"])  # after the rules that referenced the sets
        else:
            if "ipsets" in host.files:  # into a namespace without them: a second load fails loudly
                self.lab.run(SERVER, ["ipset", "restore"], input=host.files["ipsets"].decode())
            self.lab.run(SERVER, ["iptables-restore"], input=host.files["rules.v4"].decode())
            self.lab.run(SERVER, ["ip6tables-restore"], input=host.files["rules.v6"].decode())
        self.forget_scanners()

    def forget_scanners(self) -> None:
        """Empty the trap's hit and ban lists (in the server namespace; absent lists are skipped)."""
        names = [name for family in FAMILIES for name in (hits_list(family), ban_list(family))]
        self.lab.run(SERVER, ["sh", "-c", 'for name in "$@"; do list=/proc/net/xt_recent/$name; '
                                          '[ ! -e "$list" ] || echo / > "$list"; done', "forget", *names])

    def banned(self, family: int) -> set:
        """Addresses in the ban list (the kernel writes IPv6 ones in full: 2001:0db8:000b:...)."""
        listing = self.lab.run(SERVER, ["cat", f"/proc/net/xt_recent/{ban_list(family)}"]).stdout
        return {ipaddress.ip_address(source) for source in re.findall(r"src=(\S+)", listing)}


@pytest.fixture(scope="module")
def shipped(lab):
    """(policy, release) of the policy under test, for this lab's addresses."""
    return render(firewall_values(lab))


@pytest.fixture(scope="module")
def layers(lab, tmp_path_factory):
    wait_until_every_client_reaches_the_web(lab)
    return Layers(lab, tmp_path_factory.mktemp("layers"))


def wait_until_every_client_reaches_the_web(lab) -> None:
    """A fresh lab loses the first IPv6 packets from the internet clients for up to ~1 s after
    lab_up returns (the edge's bridge is not answering neighbour solicitations yet): connect
    once from every client, long enough for a SYN retransmission, before measuring anything."""
    targets = [(lab.address(SERVER, family), "tcp", HTTP_PORT) for family in FAMILIES]
    with ThreadPoolExecutor(max_workers=len(CLIENTS)) as pool:
        seen = dict(zip(CLIENTS, pool.map(lambda client: probe(lab.namespace(client), targets, timeout=5),
                                          CLIENTS)))
    broken = {client: [(r.address, r.state) for r in results if r.state != "open"]
              for client, results in seen.items()}
    assert not any(broken.values()), f"the lab's web server is unreachable before any rule is loaded: {broken}"


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


def ssh(lab, client, family, connect_timeout=5):
    return subprocess.run(lab.ssh_argv(client, ["true"], family=family, connect_timeout=connect_timeout),
                          capture_output=True, text=True, timeout=30)


def pings(lab, client, family, count, interval) -> int:
    """Echo replies received out of `count` requests sent every `interval` seconds."""
    # No -w deadline: with one, ping keeps sending until `count` replies arrive, which would
    # hide a rate limit (it once counted 40 of 376 sent as "40 of 40").
    result = lab.run(client, ["ping", f"-{family}", "-n", "-q", "-c", str(count), "-i", str(interval),
                              "-W", "1", lab.address(SERVER, family)], check=False, timeout=30)
    found = re.search(r"(\d+) (?:packets )?received", result.stdout)
    assert found, result.stdout + result.stderr
    return int(found.group(1))


def nmap_scans(lab, client, scans, ports=NMAP_PORTS) -> dict:
    """{(scan, family): {port: state}}, all scans at once (each family has its own trap lists,
    and only SYN scans of closed ports feed the trap)."""
    jobs = [(scan, family) for scan in scans for family in FAMILIES]

    def run(job):
        scan, family = job
        return job, nmap_scan(lab.namespace(client), lab.address(SERVER, family), ports, scan=scan)
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return dict(pool.map(run, jobs))


def every(scans, state, ports=NMAP_PORTS) -> dict:
    return {(scan, family): {port: state for port in ports} for scan in scans for family in FAMILIES}


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
    server = [(lab.address(SERVER, f), "tcp", port) for f in FAMILIES for port in (HTTP_PORT, HTTPS_PORT)]

    def web_from(client):
        return sorted({r.state for r in probe(lab.namespace(client), server, timeout=PROBE_TIMEOUT)})

    assert web_from(INTERNET) == ["open"]
    closed_ports = [SSH_PORT, *HIDDEN_TCP_PORTS, UNUSED_PORT]  # closed for INTERNET
    assert len(closed_ports) >= SCAN_THRESHOLD
    assert nmap_scans(lab, INTERNET, ("sS",), closed_ports) == every(("sS",), "filtered", closed_ports)
    for family in FAMILIES:
        assert layers.banned(family) == {ipaddress.ip_address(lab.address(INTERNET, family))}

    assert web_from(INTERNET) == ["filtered"]  # the scanner lost the web site too, v4 and v6
    last_packet = time.monotonic()  # every dropped packet renews the ban (--update)
    assert web_from(INTERNET2) == ["open"]  # bans are per source
    for family in FAMILIES:
        admin = ssh(lab, ADMIN, family)
        assert admin.returncode == 0, f"IPv{family}: admin lost SSH during a ban: {admin.stderr}"

    time.sleep(max(0.0, last_packet + BAN_SECONDS + 2 - time.monotonic()))
    assert web_from(INTERNET) == ["open"], f"the ban did not lift after {BAN_SECONDS} s"
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
