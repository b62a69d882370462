"""What the lab tests that load a rendered release share (test_host_exposure.py,
test_lab_abuse.py): the policy under test, putting the two layers live (`Layers`), the trap's
lists, and SSH logins, pings and nmap scans from a lab client.

The host layer is only ever loaded into the lab's server namespace and the cloud layer into
its edge; the `shipped` and `layers` fixtures are module-scoped (import them into the module)."""
from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from hardened_lightsail.config import settings_from_values
from hardened_lightsail.host_layer import ban_list, hits_list
from hardened_lightsail.release import Release, render_release
from lab import ADMIN_CIDRS
from lab.probe import nmap_scan, probe
from lab.topology import (
    ADMIN,
    HIDDEN_TCP_PORTS,
    HIDDEN_UDP_PORTS,
    HTTP_PORT,
    HTTPS_PORT,
    INTERNET,
    INTERNET2,
    SERVER,
    SSH_PORT,
)

BAN_SECONDS, SCAN_THRESHOLD = 20, 3
# Nobody listens here: a bare host answers RST ("closed"), which tells a scanner it exists.
UNUSED_PORT = 81
APP_PORT = 8080  # one of the hidden listeners, opened by the policy for internet2 only
TCP_PORTS = (SSH_PORT, *HIDDEN_TCP_PORTS, HTTP_PORT, HTTPS_PORT, UNUSED_PORT)
UDP_PORTS = HIDDEN_UDP_PORTS
CLIENTS = (ADMIN, INTERNET, INTERNET2)
FAMILIES = (4, 6)
NMAP_PORTS = TCP_PORTS
# Below Linux's 1 s initial SYN retransmission timeout: one probe is one SYN, so one trap hit.
PROBE_TIMEOUT = 0.9
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
    """(policy, release) of firewall `values` for a lab stack."""
    policy = settings_from_values({"target": "lab", "firewall": values}).firewall
    return policy, render_release(policy)


class Layers:
    """Puts rules live: the cloud layer on the edge, the host layer in the server namespace."""

    def __init__(self, lab, directory):
        self.lab, self.cloud_file = lab, directory / "cloud-ports.json"

    def use(self, cloud: list[dict], host: Release | None) -> None:
        self.cloud_file.write_text(json.dumps(cloud))
        self.lab.load_cloud_layer(self.cloud_file)
        if host is None or "ipsets" in host.files:
            # Sets are made fresh (a restore into existing sets fails loudly), so the rules that
            # reference them go first; a release without sets loads over the old rules instead.
            for restore in ("iptables-restore", "ip6tables-restore"):
                self.lab.run(SERVER, [restore], input=EMPTY_FILTER)
            self.lab.run(SERVER, ["ipset", "destroy"])
        if host is not None:
            if "ipsets" in host.files:
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
        """Addresses in the ban list."""
        return recent_list(self.lab, ban_list(family))


def recent_list(lab, name: str) -> set:
    """Sources in the server namespace's xt_recent list `name` (the kernel writes IPv6 addresses
    in full, 2001:0db8:000b:..., hence the parsing)."""
    listing = lab.run(SERVER, ["cat", f"/proc/net/xt_recent/{name}"]).stdout
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
    """The control for every "filtered" a test measures: with no rule loaded yet, every client
    reaches the web server over both families."""
    targets = [(lab.address(SERVER, family), "tcp", HTTP_PORT) for family in FAMILIES]
    with ThreadPoolExecutor(max_workers=len(CLIENTS)) as pool:
        seen = dict(zip(CLIENTS, pool.map(lambda client: probe(lab.namespace(client), targets, timeout=5),
                                          CLIENTS), strict=True))
    broken = {client: [(r.address, r.state) for r in results if r.state != "open"]
              for client, results in seen.items()}
    assert not any(broken.values()), f"the lab's web server is unreachable before any rule is loaded: {broken}"


def web_from(lab, client) -> list[str]:
    """The distinct states of HTTP and HTTPS on the server, over both families, from `client`."""
    web = [(lab.address(SERVER, f), "tcp", port) for f in FAMILIES for port in (HTTP_PORT, HTTPS_PORT)]
    return sorted({r.state for r in probe(lab.namespace(client), web, timeout=PROBE_TIMEOUT)})


def ssh(lab, client, family, connect_timeout=5, timeout=30):
    """One SSH login (`true`) from `client` over a fresh connection: the CompletedProcess."""
    return subprocess.run(lab.ssh_argv(client, ["true"], family=family, connect_timeout=connect_timeout),
                          capture_output=True, text=True, timeout=timeout)


def pings(lab, client, family, count, interval) -> int:
    """Echo replies received out of `count` requests sent every `interval` seconds."""
    # No -w deadline: with one, ping keeps sending until `count` replies arrive, which would
    # hide a rate limit (it once counted 40 of 376 sent as "40 of 40").
    result = lab.run(client, ["ping", f"-{family}", "-n", "-q", "-c", str(count), "-i", str(interval),
                              "-W", "1", lab.address(SERVER, family)], check=False, timeout=30)
    found = re.search(r"(\d+) (?:packets )?received", result.stdout)
    assert found, result.stdout + result.stderr
    return int(found.group(1))


def nmap_scans(lab, client, scans, ports=NMAP_PORTS, extra_args=()) -> dict:
    """{(scan, family): {port: state}}, all scans at once (each family has its own trap lists,
    and only SYN scans of closed ports feed the trap)."""
    jobs = [(scan, family) for scan in scans for family in FAMILIES]

    def run(job):
        scan, family = job
        return job, nmap_scan(lab.namespace(client), lab.address(SERVER, family), ports, scan=scan,
                              extra_args=extra_args)
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return dict(pool.map(run, jobs))


def every(scans, state, ports=NMAP_PORTS) -> dict:
    """The nmap_scans result in which every port of every scan and family is in `state`."""
    return {(scan, family): {port: state for port in ports} for scan in scans for family in FAMILIES}
