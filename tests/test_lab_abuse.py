"""Abuse, in the lab, bounded in time: an SSH brute-force burst, nmap scans and a SYN flood from
the untrusted internet client, against the real rendered release (host layer in the server
namespace, cloud layer on the edge, as in test_host_exposure.py).

Two tests use the host layer alone (the edge passes everything), because the cloud layer drops
a scanner's closed-port probes before they reach the host, so the port-scan trap never sees
them (test_nmap_through_both_layers_... shows exactly that). Every flood and scan stops by itself
(count and `timeout`), targets only the lab server's documentation address, and the only kernel
settings touched are inside the lab's namespaces."""
from __future__ import annotations

import ipaddress
import re
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hardened_lightsail.host_layer import hits_list
from lab.docnet import require_documentation_address
from lab.probe import probe
from lab.topology import ADMIN, EDGE, HIDDEN_TCP_PORTS, HTTP_PORT, HTTPS_PORT, INTERNET, INTERNET2, SERVER, SSH_PORT

from lab_helpers import (  # noqa: F401
    FAMILIES,
    OPEN_EDGE,
    PROBE_TIMEOUT,
    SCAN_THRESHOLD,
    UNUSED_PORT,
    every,
    firewall_values,
    layers,
    needs_nmap,
    nmap_scans,
    recent_list,
    render,
    shipped,
    ssh,
    web_from,
)

pytestmark = pytest.mark.netfilter

ATTEMPTS = 30  # SSH connection attempts in one brute-force burst, per family
# Every privileged port plus the hidden listeners: what a scanner's first sweep covers.
SWEEP_PORTS = sorted({*range(1, 1025), *HIDDEN_TCP_PORTS})
SHORT_BAN_SECONDS = 5
CLOSED_FOR_EVERYONE_BUT_INTERNET2 = [*HIDDEN_TCP_PORTS, UNUSED_PORT]  # 8080 is internet2's app port
# The SYN flood: v4 only (hping3 has no IPv6), stopped by `timeout` and by its packet count.
# At most 10,000 SYN/s, until the clients are done (stopped then), at most 20 s / 200,000 SYNs:
# a slow or busy machine gets a longer flood, never clients that outlast it.
FLOOD_SECONDS, FLOOD_MAX_PACKETS, FLOOD_INTERVAL = 20, 200_000, "u100"
SYNCOOKIES = "1"  # Ubuntu's default (and a new namespace's); the mutation check sets "0"
LOGINS, PAGES, PAUSE_SECONDS = 5, 10, 0.2
LOGIN_WITHIN_SECONDS, PAGE_WITHIN_SECONDS = 3, 2

needs_hping3 = pytest.mark.skipif(shutil.which("hping3") is None, reason="hping3 is not installed")


def attempts(lab, client, family, count, workers) -> list[str]:
    """States of `count` TCP connection attempts to the server's SSH port from `client`."""
    target = [(lab.address(SERVER, family), "tcp", SSH_PORT)]
    return [r.state for r in probe(lab.namespace(client), target * count, timeout=PROBE_TIMEOUT, workers=workers)]


# --- SSH brute force ------------------------------------------------------------------------

def test_an_ssh_brute_force_burst_from_the_internet_never_connects(lab, layers, shipped):
    layers.use(shipped[1].port_infos, shipped[1])
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(FAMILIES)) as pool:
        # Ten at a time: 30 attempts per family in three waves, about 3 s.
        seen = dict(zip(FAMILIES, pool.map(lambda f: attempts(lab, INTERNET, f, ATTEMPTS, workers=10), FAMILIES), strict=True))
    elapsed = time.monotonic() - started
    for family in FAMILIES:
        # Not one handshake, and not one RST either: the port does not even admit it exists.
        assert seen[family] == ["filtered"] * ATTEMPTS, f"IPv{family}: {seen[family]}"
    assert elapsed < 10, f"the burst took {elapsed:.1f} s"
    for family in FAMILIES:
        admin = ssh(lab, ADMIN, family)
        assert admin.returncode == 0, f"IPv{family}: the admin lost SSH after the burst: {admin.stderr}"


def test_with_public_ssh_a_burst_gets_only_the_per_source_allowance(lab, layers):
    policy, release = render(firewall_values(lab, adminCidrs=["0.0.0.0/0", "::/0"]))
    layers.use(release.port_infos, release)  # both layers open SSH to everyone
    burst = policy.ssh_rate_limit.burst
    assert burst < ATTEMPTS
    for family in FAMILIES:
        seen = attempts(lab, INTERNET, family, ATTEMPTS, workers=ATTEMPTS)  # all at once
        opened = seen.count("open")
        # The burst, plus at most one token refilled (20/min) while the attempts run.
        assert burst <= opened <= burst + 1, f"IPv{family}: {opened} of {ATTEMPTS} connections opened"
        assert set(seen) == {"open", "filtered"}, f"IPv{family}: {seen}"  # over the limit: dropped, no RST
        other = attempts(lab, INTERNET2, family, 3, workers=3)
        assert other == ["open"] * 3, f"IPv{family}: another source was limited too: {other}"


# --- scans ------------------------------------------------------------------------------------

@needs_nmap
def test_nmap_through_both_layers_sees_only_the_web_and_the_host_bans_nobody(lab, layers, shipped):
    layers.use(shipped[1].port_infos, shipped[1])
    seen = nmap_scans(lab, INTERNET, ("sS",), SWEEP_PORTS)
    web = {port: "open" if port in (HTTP_PORT, HTTPS_PORT) else "filtered" for port in SWEEP_PORTS}
    assert seen == {("sS", 4): web, ("sS", 6): web}
    # The edge dropped every closed-port probe: the host's trap never saw the scanner.
    assert not layers.banned(4) and not layers.banned(6)


@needs_nmap
def test_a_scanner_whose_probes_reach_the_host_is_banned_for_ban_seconds(lab, layers):
    _, release = render(firewall_values(lab, portScan={"enabled": True, "threshold": SCAN_THRESHOLD,
                                                       "banSeconds": SHORT_BAN_SECONDS}))
    layers.use(OPEN_EDGE, release)  # host layer alone: the closed-port probes reach the trap
    assert web_from(lab, INTERNET) == ["open"]
    closed = CLOSED_FOR_EVERYONE_BUT_INTERNET2
    assert len(closed) >= SCAN_THRESHOLD
    assert nmap_scans(lab, INTERNET, ("sS",), closed) == every(("sS",), "filtered", closed)
    for family in FAMILIES:
        assert layers.banned(family) == {ipaddress.ip_address(lab.address(INTERNET, family))}

    renewed = time.monotonic()  # every dropped packet renews the ban (--update): from here on
    assert web_from(lab, INTERNET) == ["filtered"], "the scanner kept the web site"
    assert web_from(lab, INTERNET2) == ["open"], "a ban hit another source"
    time.sleep(max(0.0, renewed + SHORT_BAN_SECONDS - 1.5 - time.monotonic()))
    assert web_from(lab, INTERNET) == ["filtered"], f"the ban lifted before {SHORT_BAN_SECONDS} s"
    time.sleep(SHORT_BAN_SECONDS + 1)  # after the last dropped packet (that probe's)
    assert web_from(lab, INTERNET) == ["open"], f"the ban outlived {SHORT_BAN_SECONDS} s"
    layers.forget_scanners()


@needs_nmap
def test_the_admin_is_never_banned_even_after_scanning_closed_ports_itself(lab, layers, shipped):
    layers.use(OPEN_EDGE, shipped[1])  # host layer alone, so the admin's probes reach the trap
    closed = CLOSED_FOR_EVERYONE_BUT_INTERNET2
    assert len(closed) >= SCAN_THRESHOLD
    assert nmap_scans(lab, ADMIN, ("sS",), closed) == every(("sS",), "filtered", closed)
    for family in FAMILIES:
        admin = ipaddress.ip_address(lab.address(ADMIN, family))
        assert admin not in layers.banned(family), f"IPv{family}: the admin is in the ban list"
        assert admin not in recent_list(lab, hits_list(family)), f"IPv{family}: the admin's hits were counted"
    assert web_from(lab, ADMIN) == ["open"]
    for family in FAMILIES:
        login = ssh(lab, ADMIN, family)
        assert login.returncode == 0, f"IPv{family}: the admin lost SSH after its own scan: {login.stderr}"
    # The control: the very same scan from a stranger is a ban.
    nmap_scans(lab, INTERNET, ("sS",), closed)
    assert layers.banned(4) == {ipaddress.ip_address(lab.address(INTERNET, 4))}
    layers.forget_scanners()


# --- SYN flood --------------------------------------------------------------------------------

@pytest.fixture
def half_open_attacker(lab):
    """The internet client drops its own RSTs to the server, so the half-open connections of a
    flood stay half-open (a real flood spoofs its sources instead, with the same effect: nobody
    answers the server's SYN-ACKs). Afterwards the rule goes, and the flood's conntrack entries
    in the server and the edge are flushed so later tests start clean."""
    rule = ["OUTPUT", "-d", lab.server_ipv4, "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP"]
    lab.run(INTERNET, ["iptables", "-I", *rule])
    yield
    lab.run(INTERNET, ["iptables", "-D", *rule], check=False)
    for where in (SERVER, EDGE):
        lab.run(where, ["conntrack", "-F"], check=False)


@pytest.fixture
def syn_flood(lab):
    """start(port) -> the running hping3 process (stopped and reaped at teardown whatever happens)."""
    floods = []

    def start(port: int) -> subprocess.Popen:
        # SIGINT makes hping3 print its statistics; -k: SIGKILL 2 s later if it ignores that.
        argv = ["timeout", "-s", "INT", "-k", "2", str(FLOOD_SECONDS), "hping3", "-q", "-S", "-p", str(port),
                "-i", FLOOD_INTERVAL, "-c", str(FLOOD_MAX_PACKETS), require_documentation_address(lab.server_ipv4)]
        floods.append(subprocess.Popen(lab.exec_argv(INTERNET, argv), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True))
        return floods[-1]
    yield start
    for flood in floods:
        if flood.poll() is None:
            flood.kill()  # `timeout` itself; hping3 gets its SIGKILL from `timeout -k`, or from lab down
        flood.communicate(timeout=FLOOD_SECONDS + 5)


def syn_queue_full(lab) -> int:
    """SYNs that found a listener's SYN queue full so far, in the server namespace: answered with a
    SYN cookie (TcpExtSyncookiesSent) or, with cookies off, dropped (TcpExtTCPReqQFullDrop)."""
    output = lab.run(SERVER, ["nstat", "-az", "TcpExtSyncookiesSent", "TcpExtTCPReqQFullDrop"]).stdout
    return sum(int(count) for count in re.findall(r"^TcpExt\w+\s+(\d+)", output, re.MULTILINE))


def http_status(lab, client) -> str:
    result = lab.run(client, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                              str(PAGE_WITHIN_SECONDS), f"http://{lab.server_ipv4}/"], check=False)
    return result.stdout.strip() or f"curl exit {result.returncode}"


def paced(count: int, attempt, flood: subprocess.Popen) -> list[tuple]:
    """[(result, seconds, flood still running afterwards)] of `count` attempts, PAUSE_SECONDS apart."""
    done = []
    for _ in range(count):
        started = time.monotonic()
        result = attempt()
        done.append((result, round(time.monotonic() - started, 2), flood.poll() is None))
        time.sleep(PAUSE_SECONDS)
    return done


@needs_hping3
def test_during_a_syn_flood_the_admin_logs_in_and_others_get_the_web_site(lab, layers, shipped,
                                                                        half_open_attacker, syn_flood):
    """Mutation check (by hand, once): with SYNCOOKIES = "0" the flood fills nginx's SYN queue
    and internet2's requests time out; without the attacker's RST drop the queue never fills and
    the test says the flood proved nothing."""
    layers.use(shipped[1].port_infos, shipped[1])
    lab.run(SERVER, ["sysctl", "-q", "-w", f"net.ipv4.tcp_syncookies={SYNCOOKIES}"])
    full_before = syn_queue_full(lab)
    flood = syn_flood(HTTP_PORT)
    time.sleep(1)  # at up to 10,000 SYN/s, nginx's SYN queue (511) is long full
    with ThreadPoolExecutor(max_workers=2) as pool:
        logins = pool.submit(paced, LOGINS, lambda: ssh(lab, ADMIN, 4, connect_timeout=LOGIN_WITHIN_SECONDS,
                                                        timeout=LOGIN_WITHIN_SECONDS + 5).returncode, flood)
        pages = pool.submit(paced, PAGES, lambda: http_status(lab, INTERNET2), flood)
        logins, pages = logins.result(), pages.result()
    flood.send_signal(signal.SIGINT)  # `timeout` passes it on: hping3 prints its statistics and stops
    statistics = flood.communicate(timeout=FLOOD_SECONDS + 5)[0]
    queue_full = syn_queue_full(lab) - full_before

    sent = re.search(r"(\d+) packets transmitted", statistics)
    assert sent and int(sent.group(1)) >= 5000, f"hping3 did not flood: {statistics[-300:]}"
    # Proof that it was a flood that could have worked: nginx's SYN queue overflowed.
    assert queue_full >= 1000, f"only {queue_full} SYNs found the SYN queue full: the flood proved nothing"
    assert [(code, seconds < LOGIN_WITHIN_SECONDS) for code, seconds, _ in logins] == [(0, True)] * LOGINS, logins
    assert [(status, seconds < PAGE_WITHIN_SECONDS) for status, seconds, _ in pages] == [("200", True)] * PAGES, pages
    assert all(running for *_, running in logins + pages), \
        f"the flood ended before the clients were done (a slow machine?): {logins} {pages}"
