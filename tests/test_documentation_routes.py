"""A documentation address is only ever reached through a route of its own: with a lab down, only
the default route would lead there (out of this machine), and the deployer's SSH, its socket
probes and nmap (outside verification, readiness, the lab's probes) refuse first.

The check runs in a network namespace this test creates (a default route over a link of its own,
then a lab-like route) and deletes; nothing is sent out of it: the link's other end is in it too,
and a capture there tells what the probes sent."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hardened_lightsail.documentation_routes import unrouted_documentation_address

REPO = Path(__file__).resolve().parent.parent
NAMESPACE_PREFIX = "hlt-docroute-"

pytestmark = [
    pytest.mark.netfilter,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]

# In the namespace: the verdict for each address, and what run_remote does with the first one.
# The test's namespace stands in for this machine's own (where the default route leads off the
# machine) unless the first argument is "as-a-lab-namespace".
PROBE = """
import json, sys
from hardened_lightsail import documentation_routes
from hardened_lightsail.documentation_routes import unrouted_documentation_address
from hardened_lightsail.ssh_session import SshEndpoint, run_remote
addresses = sys.argv[1:]
if addresses[0] == "as-a-lab-namespace":
    addresses = addresses[1:]
else:
    documentation_routes.namespace_name = lambda: ""
result = run_remote(SshEndpoint(addresses[0], 22, "admin", "unused", "ssh-ed25519 AAAA"), "true")
print(json.dumps({"verdicts": [unrouted_documentation_address(a) for a in addresses],
                  "ssh": [result.args, result.returncode, result.stderr]}))
"""


# In the namespace: every outward probe at a lab's two addresses (argv: "own" or
# "as-a-lab-namespace", the IPv4 and IPv6 address; stubs of nmap and ssh on PATH record their runs).
# Prints what each probe did and how many frames towards either address the link's far end saw,
# then after a control send that bypasses every guard (proof that the capture sees a leak).
PROBES = """
import json, os, socket, sys, time
from hardened_lightsail import documentation_routes
from hardened_lightsail.live_host import SshTarget, run_script
from hardened_lightsail.networks import parse_cidr
from hardened_lightsail.outside_verification import FULL, THIS_DEPLOYER, HostReport, View, verify_outside
from hardened_lightsail.policy import FirewallPolicy
from hardened_lightsail.reachability import measure, tcp_probe, udp_probe
from hardened_lightsail.release import render_release
from hardened_lightsail.server_readiness import wait_until_ready
from hardened_lightsail.ssh_session import SshEndpoint
from lab.probe import nmap_scan, probe

mode, v4, v6 = sys.argv[1:4]
if mode == "own":
    documentation_routes.namespace_name = lambda: ""
capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # every frame out0 sends
capture.bind(("out1", 0))
wanted = [socket.inet_pton(socket.AF_INET, v4), socket.inet_pton(socket.AF_INET6, v6)]  # in ARP/NS or IP

def frames_towards_the_lab():
    time.sleep(0.1)
    capture.setblocking(False)
    seen = 0
    try:
        while True:
            frame = capture.recv(65535)
            seen += any(address in frame for address in wanted)
    except BlockingIOError:
        return seen

def attempt(call, shown=lambda value: repr(value)[:300]):
    try:
        return ["ran", shown(call())]
    except Exception as error:
        return [type(error).__name__, str(error)]

policy = FirewallPolicy(admin_cidrs=(parse_cidr("192.0.2.0/24"),))
no_listeners = HostReport(None, {"tcp": set(), "udp": set()})
outside = lambda: verify_outside(render_release(policy), policy, [v4, v6], no_listeners, [View(THIS_DEPLOYER, FULL)])
endpoint = SshEndpoint(v4, 22, "admin", "unused", "ssh-ed25519 AAAA")
done = {
    "tcp_probe": attempt(lambda: tcp_probe(v4, 22, 0.3)),
    "udp_probe": attempt(lambda: udp_probe(v6, 53, 0.3)),
    "measure": attempt(lambda: measure("tcp", [(v4, 22), (v6, 22)], timeout=0.3)),
    "verify_outside": attempt(outside, lambda result: [result.failure, result.table]),
    "ready": attempt(lambda: wait_until_ready(endpoint, 0.3, None, lambda line: None)),
    "lab_probe": attempt(lambda: probe(None, [(v4, "tcp", 22), (v6, "udp", 53)], timeout=0.3)),
    "lab_nmap": attempt(lambda: nmap_scan(None, v6, [22])),
    "read_host": attempt(lambda: run_script(SshTarget.parse(f"admin@[{v6}]"), "")),  # fw check --host
}
seen = frames_towards_the_lab()
for family, address in ((socket.AF_INET, v4), (socket.AF_INET6, v6)):  # the control: no guard at all
    with socket.socket(family, socket.SOCK_DGRAM) as control:
        control.connect((address, 9))
        control.send(b"control")
print(json.dumps({"done": done, "frames": seen, "frames_after_control": frames_towards_the_lab()}))
"""
TOOL_STUB = """#!/bin/sh
# Stands in for nmap and the user's ssh: records that it was started (and with what), sends nothing.
printf '%s %s\\n' "$(basename "$0")" "$*" >> "$HL_TEST_TOOL_RECORD"
echo "$(basename "$0") stub: started, sent nothing" >&2
exit 1
"""


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespace(request):
    """A namespace whose only way out is a default route over a link of its own (a veth pair with
    both ends inside: nothing leaves it), v4 and v6."""
    name = f"{NAMESPACE_PREFIX}{secrets.token_hex(4)}"
    ip("netns", "add", name)

    def delete():  # even when the test failed
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)
        assert not os.path.exists(f"/run/netns/{name}"), f"namespace {name} outlived its test"
    request.addfinalizer(delete)
    for argv in (("link", "add", "out0", "type", "veth", "peer", "name", "out1"), ("link", "set", "out1", "up"),
                 ("link", "set", "out0", "up"),
                 ("route", "add", "default", "dev", "out0"), ("-6", "route", "add", "default", "dev", "out0")):
        ip("-n", name, *argv)
    return name


def verdicts(namespace: str, *addresses: str) -> dict:
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", PROBE, *addresses],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_lab_address_behind_only_the_default_route_is_refused_before_anything_is_sent(namespace):
    found = verdicts(namespace, "203.0.113.10", "2001:db8:c::10")
    assert all("no route of its own leads there" in verdict for verdict in found["verdicts"]), found
    argv, code, stderr = found["ssh"]
    assert argv == ["ssh", "203.0.113.10"] and code == 255, found  # ssh never ran: no packet left
    assert "its lab is not up. Nothing was sent" in stderr


def test_a_route_of_its_own_lets_it_through(namespace):
    ip("-n", namespace, "route", "add", "203.0.113.0/28", "dev", "out0")
    ip("-n", namespace, "-6", "route", "add", "2001:db8:c::/64", "dev", "out0")
    assert verdicts(namespace, "203.0.113.10", "2001:db8:c::10")["verdicts"] == [None, None]


def test_addresses_that_are_not_documentation_ones_are_not_judged():
    # No route lookup at all: a real server's address, or a host name, is the user's to reach.
    assert unrouted_documentation_address("fd00::10") is None
    assert unrouted_documentation_address("server.example.com") is None


def test_in_a_lab_namespace_the_default_route_is_the_labs_own(namespace):
    # An admin client's or a vantage's namespace reaches the lab's servers through its default
    # route (into the lab's edge): nothing is refused there.
    found = verdicts(namespace, "as-a-lab-namespace", "203.0.113.10", "2001:db8:c::10")
    assert found["verdicts"] == [None, None], found
    assert found["ssh"][0][0] == "ssh" and len(found["ssh"][0]) > 2  # ssh itself ran (and failed: no server)


def probes(namespace: str, mode: str, tmp_path: Path) -> tuple[dict, list[str]]:
    """What every outward probe did in `namespace` towards a lab's two addresses, and the nmap
    and ssh runs the stubs on PATH recorded."""
    # out0 gets an address of each family, so that a packet sent there really goes out (to out1).
    ip("-n", namespace, "address", "add", "192.0.2.250/32", "dev", "out0")
    ip("-n", namespace, "address", "add", "2001:db8:ff::250/128", "dev", "out0", "nodad")
    (tmp_path / "bin").mkdir()
    for tool in ("nmap", "ssh"):
        stub = tmp_path / "bin" / tool
        stub.write_text(TOOL_STUB)
        stub.chmod(0o755)
    record = tmp_path / "tool-runs"
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", PROBES, mode, "203.0.113.10",
                           "2001:db8:c::10"], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{stub.parent}:{os.environ['PATH']}",
                               "HL_TEST_TOOL_RECORD": str(record)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), (record.read_text().splitlines() if record.exists() else [])


def test_no_probe_sends_to_a_lab_address_behind_only_the_default_route(namespace, tmp_path):
    found, tool_runs = probes(namespace, "own", tmp_path)
    done = found["done"]
    for name in ("tcp_probe", "udp_probe", "measure", "ready"):
        assert done[name][0] == "UnroutedDocumentationAddress", (name, done[name])
        assert "its lab is not up. Nothing was sent" in done[name][1]
    # The outside verification fails, saying why; nothing of it reads "verified".
    failure, table = done["verify_outside"][1]
    assert failure == "1 vantage(s) measured nothing" and "verified" not in table, table
    assert table.startswith("from this deployer: 203.0.113.10 is a documentation address and no route of its own")
    for name in ("lab_probe", "lab_nmap"):
        assert done[name][0] == "LabError" and "its lab is not up. Nothing was sent" in done[name][1], done[name]
    assert done["read_host"][0] == "HostError" and "its lab is not up. Nothing was sent" in done["read_host"][1]
    assert tool_runs == []  # neither nmap nor ssh started, for either address
    assert found["frames"] == 0, found  # and nothing went out of the link the default route uses
    assert found["frames_after_control"] > 0, found  # which a packet sent past the guards would have


@pytest.mark.parametrize("lab_like", ["a route of its own", "a lab namespace"])
def test_probes_go_through_a_route_of_their_own_and_from_a_lab_namespace(namespace, tmp_path, lab_like):
    if lab_like == "a route of its own":
        ip("-n", namespace, "route", "add", "203.0.113.0/28", "dev", "out0")
        ip("-n", namespace, "-6", "route", "add", "2001:db8:c::/64", "dev", "out0")
    found, tool_runs = probes(namespace, "own" if lab_like == "a route of its own" else "as-a-lab-namespace",
                              tmp_path)
    done = found["done"]
    assert done["tcp_probe"] == ["ran", "('filtered', 'no answer')"], done  # nothing answers on the link
    assert done["udp_probe"][0] == done["measure"][0] == done["lab_probe"][0] == "ran", done
    assert done["ready"][0] == "NotReady", done  # it waited (briefly) for an sshd
    assert done["lab_nmap"][0] == "LabError" and "nmap stub: started" in done["lab_nmap"][1], done
    assert "nmap stub: started" in done["verify_outside"][1][1], done
    assert done["read_host"][0] == "HostError" and "ssh stub: started" in done["read_host"][1], done
    started = sorted((run.split()[0], run.split()[-1] if run.startswith("nmap") else run.split()[-3])
                     for run in tool_runs)
    assert started == [("nmap", "2001:db8:c::10"), ("nmap", "2001:db8:c::10"), ("nmap", "203.0.113.10"),
                       ("ssh", "admin@2001:db8:c::10")], tool_runs
    assert found["frames"] > 0, found  # the probes really went out towards the lab
