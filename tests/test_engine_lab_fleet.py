"""A lab stack of three servers through the real Pulumi engine: one lab, three servers each
verified from outside, a `servers` output with an entry per server, an unchanged `up` that does
nothing, one server removed in place, and a destroy that leaves nothing behind."""
import ipaddress
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from test_engine_lab import _from_internet

from lab.identity import stack_lab

from engine import PROJECT_DIR, engine_missing_reason, pulumi, remove_lab_stack

STACK = "labfleet"
LAB = stack_lab(PROJECT_DIR, STACK)
UP = ["--yes", "--skip-preview", "--non-interactive"]
FIREWALL = {"adminCidrs": ["192.0.2.0/24", "2001:db8:a::/48"], "confirmTimeoutSeconds": 20,
            "services": [{"name": "http", "protocol": "tcp", "ports": "80"}]}
pytestmark = [pytest.mark.engine, pytest.mark.netfilter,
              pytest.mark.skipif(engine_missing_reason() is not None, reason=engine_missing_reason() or ""),
              pytest.mark.skipif(os.geteuid() != 0, reason="the lab makes network namespaces: needs root")]



def _is_address(word: str) -> bool:
    """A table row's first column (an address), not a header or a summary line."""
    try:
        ipaddress.ip_address(word)
    except ValueError:
        return False
    return True

def _write_stack(count: int) -> None:
    config = {"config": {"hardened-lightsail:target": "lab", "hardened-lightsail:server": {"count": count},
                         "hardened-lightsail:firewall": FIREWALL}}
    (PROJECT_DIR / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def fleet_stack(tmp_path):
    backend = tmp_path / "backend"
    backend.mkdir()
    _write_stack(3)
    pulumi(["stack", "init", STACK], backend)
    yield backend
    remove_lab_stack(STACK, backend)


def _outputs(backend) -> dict:
    return json.loads(pulumi(["stack", "output", "-s", STACK, "--json"], backend).stdout)


def _as_top_level(server: dict, outputs: dict) -> dict:
    """A `servers` entry in the shape _from_internet reads (the clients are the lab's own)."""
    return {**outputs, "publicIp": server["publicIp"], "ipv6Addresses": server["ipv6Addresses"]}


def test_three_lab_servers_each_verified_from_outside_and_destroyed_without_a_trace(fleet_stack):
    backend = fleet_stack
    pulumi(["up", "-s", STACK, *UP], backend)
    outputs = _outputs(backend)
    servers = outputs["servers"]
    assert [s["name"] for s in servers] == ["lab", "lab-1", "lab-2"]
    addresses = [a for s in servers for a in (s["publicIp"], *s["ipv6Addresses"])]
    assert len(addresses) == 6 and len(set(addresses)) == 6, servers
    assert len({s["labServerNamespace"] for s in servers}) == 3
    for server in servers:
        exposure = server["verifiedExposure"]
        assert "MISMATCH" not in exposure, exposure
        assert re.search(r"^verified: \d+ probes on 2 address\(es\) match the policy$", exposure, re.M), exposure
        probed = {word for line in exposure.splitlines() for word in line.split()[:1] if _is_address(word)}
        assert probed == {server["publicIp"], *server["ipv6Addresses"]}  # its own addresses, no one else's
        seen = _as_top_level(server, outputs)
        for family in (4, 6):
            assert _from_internet(seen, 80, family) == "open"
            assert _from_internet(seen, 22, family) == "filtered"
            assert _from_internet(seen, 22, family, client="labAdminNamespace") == "open"
    # The fleet's full scans are split: each server scans its block of the TCP ports (and every
    # rule edge), from both vantages and on both addresses; the blocks cover every port once.
    blocks = set()
    for server in servers:
        shares = re.findall(r": \d+ tcp \(share (\d) of 3: ports (\d+)-(\d+) and every rule edge\)",
                            server["verifiedExposure"])
        assert len(shares) == 4 and len(set(shares)) == 1, server["verifiedExposure"]  # 2 vantages x 2 addresses
        blocks.add(range(int(shares[0][1]), int(shares[0][2]) + 1))
    assert sorted(port for block in blocks for port in block) == list(range(1, 65536))
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert len(re.findall(rf"^hl-{LAB.name}-srv\d*\b", namespaces, re.M)) == 3
    # Each server's sshCommand checks that server's own pinned host key (StrictHostKeyChecking=yes).
    fingerprints = set()
    for server in servers:
        login = subprocess.run([*server["sshCommand"].split(), "-o", "BatchMode=yes", "hostname -I"],
                               capture_output=True, text=True, timeout=30)
        assert login.returncode == 0 and server["publicIp"] in login.stdout, login.stderr
        known_hosts = re.search(r"UserKnownHostsFile=(\S+)", server["sshCommand"]).group(1)
        fingerprints.add(Path(known_hosts).read_text().split()[2])
    assert len(fingerprints) == 3, "every server has a host key of its own"

    again = pulumi(["up", "-s", STACK, *UP], backend)
    assert re.search(r"^Resources:\n +\d+ unchanged\n", again.stdout, re.M), again.stdout

    # One server fewer: the lab loses its third server in place; the others are not touched.
    _write_stack(2)
    fewer = pulumi(["up", "-s", STACK, *UP], backend)
    assert "lab-lab" in fewer.stdout and "lab-2-firewall" in fewer.stdout
    assert not re.search(r"lab-firewall-deploy|lab-1-firewall-deploy", fewer.stdout), fewer.stdout
    assert [s["name"] for s in _outputs(backend)["servers"]] == ["lab", "lab-1"]
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"hl-{LAB.name}-srv2" not in namespaces and f"hl-{LAB.name}-srv1" in namespaces

    pulumi(["destroy", "-s", STACK, *UP], backend)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"hl-{LAB.name}-" not in namespaces
    assert not LAB.state_dir.exists(), "destroy left the lab's files behind"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert re.search(rf"\bhl{outputs['labSlot']}up\b", links) is None, "destroy left the deployer uplink behind"
