"""The deployer-side outside verification of HostFirewall: reading the host's report, and the
probes measured for real against a lab (TCP and UDP, IPv4 and IPv6): the quick sample from this
deployer, the full TCP port space (nmap) from this deployer and from a vantage outside the admin
CIDRs (the lab's internet namespace, or a host over SSH with its pinned key)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardened_lightsail import port_scan
from hardened_lightsail.host_keys import PublicHostKey, generate_host_key
from hardened_lightsail.outside_verification import (
    FULL,
    QUICK,
    THIS_DEPLOYER,
    View,
    agrees_with_policy,
    parse_host_report,
    verify_outside,
)
from hardened_lightsail.port_scan import Vantage
from hardened_lightsail.reachability import CLOSED, FILTERED, OPEN
from hardened_lightsail.scan_share import ScanShare
from lab.topology import ADMIN, INTERNET, INTERNET2, ROOT, SERVER

from lab_helpers import APP_PORT, firewall_values, layers, render, shipped  # noqa: F401 (fixtures)

PROJECT_DIR = Path(__file__).resolve().parent.parent
HIDDEN_HIGH_PORT = 47123  # not in the quick sample: only a full scan looks there

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


LAB_REPORT = HOST_REPORT.replace("tcp * 22", "tcp * 22\ntcp * 23\ntcp * 5432\ntcp * 8080")


def _verify(lab, policy, release, views=(View(THIS_DEPLOYER, QUICK),), share=None) -> tuple[int, str]:
    report = f"client: {lab.address(ROOT, 4)}\n" + LAB_REPORT
    result = verify_outside(release, policy, [lab.address(SERVER, 4), lab.address(SERVER, 6)],
                            parse_host_report(report), list(views), policy.admin_cidrs, share)
    return (1 if result.mismatches else 0), result.table


def _internet(lab) -> View:
    return View(Vantage("the internet namespace", namespace=lab.namespace(INTERNET)), FULL, outsider=True)


def _section(output: str, title_start: str) -> list[str]:
    """The rows of one vantage's section of the table."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title_start))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("from ", "verified:"))), len(lines))
    return lines[start:end]


def _row(section: list[str], address: str, port: str) -> list[str]:
    return next(line.split() for line in section if line.split()[:2] == [address, port])


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


@pytest.mark.netfilter
def test_full_scans_from_this_deployer_and_the_internet_measure_the_admin_and_anyone_else(lab, layers, shipped):
    policy, release = shipped
    layers.use(release.port_infos, release)
    code, output = _verify(lab, policy, release, [View(THIS_DEPLOYER, FULL), _internet(lab)])
    print("\n" + "\n".join(line for line in output.splitlines() if " scan from " in line))  # seconds per address
    assert code == 0, output
    v4, v6 = lab.address(SERVER, 4), lab.address(SERVER, 6)
    deployer = _section(output, "from this deployer")
    internet = _section(output, "from the internet namespace")
    assert deployer[0] == f"from this deployer ({lab.address(ROOT, 4)}, {lab.address(ROOT, 6)}), full scan:"
    assert internet[0] == (f"from the internet namespace ({lab.address(INTERNET, 4)}, {lab.address(INTERNET, 6)}), "
                           "full scan:")
    for address in (v4, v6):
        # SSH: open to the admin, and measured closed to anyone else (not assumed).
        assert _row(deployer, address, "tcp/22")[2:] == ["yes", "allowed", "open", "ok"]
        assert _row(internet, address, "tcp/22")[2:] == ["yes", "denied", "filtered", "ok"]
        assert _row(internet, address, "tcp/80")[2:] == ["yes", "allowed", "open", "ok"]
        assert _row(internet, address, f"tcp/{APP_PORT}")[2:] == ["yes", "denied", "filtered", "ok"]
        # Every other TCP port was scanned and is silent from the internet.
        rest = next(line for line in internet if line.startswith(address) and "more" in line)
        scanned = int(re.search(r"tcp: (\d+) more", rest).group(1))
        listed = sum(1 for line in internet[2:] if line.split()[:1] == [address] and line.split()[1].startswith("tcp/"))
        assert scanned + listed == 65535 and f"{scanned} filtered" in rest, rest
    times = re.findall(r"(\S+): 65535 tcp \+ \d+ udp port\(s\) in ([\d.]+) s", output)
    assert sorted(address for address, _ in times) == sorted([v4, v6] * 2), output
    assert re.search(r"^verified: \d+ probes on 2 address\(es\) match the policy$", output, re.M)


@pytest.mark.netfilter
def test_nmap_started_without_its_service_names_measures_the_same_states(lab, layers, shipped, monkeypatch):
    _policy, release = shipped
    layers.use(release.port_infos, release)
    vantage = _internet(lab).vantage
    tcp, udp = [22, 23, 80, 443, APP_PORT, 5432, 8080], [53, 123, 5353]
    assert (Path(port_scan.quiet_data_dir()) / "nmap-services").read_text().startswith("#")  # what nmap reads
    started, real_run = [], Vantage.run

    def recorded(self, command, timeout):
        started.append(command)
        return real_run(self, command, timeout)
    monkeypatch.setattr(Vantage, "run", recorded)
    def both_ways(address):
        quiet = vantage.scan(address, tcp, udp).states
        with monkeypatch.context() as own_names:
            own_names.setattr(port_scan, "quiet_data_dir", lambda: None)
            return quiet, vantage.scan(address, tcp, udp).states

    for address in (lab.address(SERVER, 4), lab.address(SERVER, 6)):
        quiet, own = both_ways(address)
        if quiet != own:  # once more after a pause: the kernel rate-limits the ICMP errors a UDP scan reads
            time.sleep(2)
            quiet, own = both_ways(address)
        assert own == quiet  # UDP payloads and all: the same answers
        assert quiet[("tcp", 80)] == OPEN and quiet[("tcp", 22)] == FILTERED, quiet
    scans = [" --datadir " in command for command in started if "exec nmap" in command]
    assert scans[:2] == [True, False] and len(scans) in (4, 6, 8), scans


@pytest.mark.netfilter
def test_full_scan_finds_a_high_port_hole_the_quick_sample_misses(lab, layers, shipped):
    policy, release = shipped
    hole = {"protocol": "tcp", "fromPort": HIDDEN_HIGH_PORT, "toPort": HIDDEN_HIGH_PORT, "cidrs": ["0.0.0.0/0"],
            "ipv6Cidrs": ["::/0"], "cidrListAliases": []}
    layers.use([*release.port_infos, hole], release)  # the cloud layer opened by hand...
    for tool in ("iptables", "ip6tables"):  # ... and the host layer too, in front of the policy
        lab.run(SERVER, [tool, "-I", "HL-INPUT", "1", "-p", "tcp", "--dport", str(HIDDEN_HIGH_PORT), "-j", "ACCEPT"])
    listener = subprocess.Popen(["ip", "netns", "exec", lab.namespace(SERVER), sys.executable, "-c",
                                 "import socket, time\n"
                                 f"s = socket.create_server(('::', {HIDDEN_HIGH_PORT}), family=socket.AF_INET6, dualstack_ipv6=True)\n"
                                 "time.sleep(120)"])
    try:
        time.sleep(1)
        code, output = _verify(lab, policy, release)
        assert code == 0 and f"tcp/{HIDDEN_HIGH_PORT}" not in output, output  # the sample never looked there
        code, output = _verify(lab, policy, release, [_internet(lab)])
        assert code == 1, output
        for address in (lab.address(SERVER, 4), lab.address(SERVER, 6)):
            assert _row(output.splitlines(), address, f"tcp/{HIDDEN_HIGH_PORT}")[2:] == [
                "no", "denied", "open", "MISMATCH"], output
        assert "verified:" not in output
        # A fleet of 4 splits its full scans: the server whose block holds the port finds the
        # hole; another one measures its own block (and every rule edge) and sees nothing there.
        finder = next(ScanShare(i, 4) for i in range(4) if HIDDEN_HIGH_PORT in ScanShare(i, 4).ports)
        code, output = _verify(lab, policy, release, [_internet(lab)], finder)
        assert code == 1 and _row(output.splitlines(), lab.address(SERVER, 6), f"tcp/{HIDDEN_HIGH_PORT}")[-1] == \
            "MISMATCH", output
        other = ScanShare((finder.index + 1) % 4, 4)
        code, output = _verify(lab, policy, release, [_internet(lab)], other)
        block = other.ports
        assert code == 0 and f"tcp/{HIDDEN_HIGH_PORT}" not in output, output
        assert f" tcp (share {other.index + 1} of 4: ports {block.start}-{block.stop - 1} and every rule edge) + " \
            in output, output
    finally:
        os.kill(listener.pid, signal.SIGTERM)
        listener.wait(timeout=10)
        layers.use(release.port_infos, release)


@pytest.mark.netfilter
def test_a_vantage_inside_the_admin_cidrs_is_refused_as_an_outside_view(lab, layers, shipped):
    policy, release = shipped
    layers.use(release.port_infos, release)
    admin = View(Vantage("the admin namespace", namespace=lab.namespace(ADMIN)), FULL, outsider=True)
    code, output = _verify(lab, policy, release, [admin])
    assert code == 1
    assert output.startswith(f"from the admin namespace: the admin namespace reaches {lab.address(SERVER, 4)} from "
                             f"{lab.address(ADMIN, 4)}, inside firewall.adminCidrs: it sees what an admin sees, "
                             "not what anyone else does; use a host outside them"), output


class VantageSshd:
    """An SSH-reachable host outside the admin CIDRs: sshd in the lab's internet2 namespace, with
    a host key of its own and one authorized deployer key, its config in a test directory."""

    def __init__(self, lab, directory: Path):
        self.lab, self.directory = lab, directory
        private, public = generate_host_key("vantage")
        self.host_key = PublicHostKey.parse(public)
        (directory / "host_key").write_text(private)
        (directory / "host_key").chmod(0o600)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vantage-login", "-f",
                        str(directory / "login")], check=True)
        self.private_key = (directory / "login").read_text()
        (directory / "login").unlink()  # only the environment holds it from here on
        self.pid_file = directory / "sshd.pid"
        (directory / "sshd_config").write_text(
            f"Port 22\nListenAddress 0.0.0.0\nHostKey {directory / 'host_key'}\nPidFile {self.pid_file}\n"
            f"AuthorizedKeysFile {directory / 'login.pub'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n")

    def __enter__(self) -> "VantageSshd":
        subprocess.run(["ip", "netns", "exec", self.lab.namespace(INTERNET2), "/usr/sbin/sshd", "-f",
                        str(self.directory / "sshd_config"), "-E", str(self.directory / "sshd.log")],
                       check=True, timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        if self.pid_file.exists():
            os.kill(int(self.pid_file.read_text()), signal.SIGTERM)

    def environment(self, host_key: str) -> dict:
        vantage = {"host": self.lab.address(INTERNET2, 4), "port": 22, "user": "root", "hostKey": host_key,
                   "scan": "full"}
        return {"HL_VERIFY_VANTAGE": json.dumps(vantage), "HL_VERIFY_VANTAGE_KEY": self.private_key}


@pytest.mark.netfilter
def test_deploy_step_also_measures_from_an_ssh_vantage_with_its_pinned_key(lab, layers, shipped, tmp_path):
    """The real deploy step, run by an admin (the lab's admin namespace: this machine's own uplink
    can't reach the internet side), probes from a vantage host over SSH; another key at the
    vantage's address stops the step before it runs anything there."""
    _policy, release = shipped
    layers.use(release.port_infos, None)  # the host layer is the deploy step's to load
    release_dir = release.write(tmp_path / "release")
    server_key = Path(str(lab.layout.host_key) + ".pub").read_text().strip()
    env = {**os.environ, "HL_SSH_HOST": lab.address(SERVER, 4), "HL_SSH_PORT": "22", "HL_SSH_USER": "root",
           "HL_SSH_KEY": lab.layout.client_key.read_text(), "HL_SSH_HOST_KEY": server_key,
           "HL_REMOTE_DIR": str(tmp_path / "home" / f".hardened-lightsail-{release.hash}"),
           "HL_RELEASE": release.hash, "HL_RELEASE_DIR": str(release_dir), "HL_CONFIRM_TIMEOUT": "30",
           "HL_ADDRESSES": f'["{lab.address(SERVER, 4)}", "{lab.address(SERVER, 6)}"]', "HL_VERIFY_SCAN": QUICK}
    step = ["ip", "netns", "exec", lab.namespace(ADMIN), str(PROJECT_DIR / "scripts" / "hl-step"), "deploy"]
    # An earlier release's copy in the login home: gone once this one is confirmed and verified.
    earlier = tmp_path / "home" / f".hardened-lightsail-{'f' * len(release.hash)}"
    earlier.mkdir(parents=True)
    (earlier / "RELEASE").write_text("f" * len(release.hash) + "\n")
    directory = tmp_path / "vantage"
    directory.mkdir()
    with VantageSshd(lab, directory) as vantage:
        result = subprocess.run(step, cwd=PROJECT_DIR, env={**env, **vantage.environment(vantage.host_key.line)},
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr
        inet2 = lab.address(INTERNET2, 4)
        section = _section(result.stdout, f"from vantage {inet2}:22")
        assert section[0] == f"from vantage {inet2}:22 ({inet2}, {lab.address(INTERNET2, 6)}), full scan:", section
        for address in (lab.address(SERVER, 4), lab.address(SERVER, 6)):
            assert _row(section, address, "tcp/22")[2:] == ["yes", "denied", "filtered", "ok"]
            # The app port is internet2's alone: measured open from there (and closed from the internet).
            assert _row(section, address, f"tcp/{APP_PORT}")[2:] == ["yes", "allowed", "open", "ok"]
        assert "verify from outside: quick scan from this deployer; full scan from vantage" in result.stdout
        assert sorted(path.name for path in (tmp_path / "home").iterdir()) == [f".hardened-lightsail-{release.hash}"]
        # Another key at the vantage's address: refused before anything runs there.
        impostor = PublicHostKey.parse(generate_host_key("someone else")[1])
        refused = subprocess.run(step, cwd=PROJECT_DIR, env={**env, **vantage.environment(impostor.line)},
                                 capture_output=True, text=True, timeout=600)
        assert refused.returncode == 1
        assert refused.stderr.startswith(f"verify from outside: host key mismatch at {inet2}:22: expected ED25519 "
                                         f"{impostor.fingerprint} "), refused.stderr
        assert "Accepted publickey" in (directory / "sshd.log").read_text()
    layers.use(release.port_infos, release)
