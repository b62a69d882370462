"""The whole life cycle of a lab stack through the real Pulumi engine: up, measure, change (a
compact preview), refuse a lock-out at preview, roll back a forced lock-out on the host (and the
edge with it), `fw check` agrees with `up`, destroy leaves nothing."""
import json
import os
import re
import subprocess
import time

import pytest
import yaml

from lab.identity import stack_lab

from engine import PROJECT_DIR, engine_missing_reason, pulumi, remove_lab_stack

STACK = "labtest"
LAB = stack_lab(PROJECT_DIR, STACK)  # its own lab name: a `labtest` of another checkout can run alongside
pytestmark = [pytest.mark.engine, pytest.mark.netfilter,
              pytest.mark.skipif(engine_missing_reason() is not None, reason=engine_missing_reason() or ""),
              pytest.mark.skipif(os.geteuid() != 0, reason="the lab makes network namespaces: needs root")]


def _write_stack(firewall: dict) -> None:
    config = {"config": {"hardened-lightsail:target": "lab", "hardened-lightsail:firewall": firewall}}
    (PROJECT_DIR / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(config))


BASE = {"adminCidrs": ["192.0.2.0/24", "2001:db8:a::/48"], "confirmTimeoutSeconds": 10,
        "services": [{"name": "http", "protocol": "tcp", "ports": "80"},
                     {"name": "https", "protocol": "tcp", "ports": "443"}]}


def _from_internet(outputs: dict, port: int, family: int = 4, client: str = "labInternetNamespace") -> str:
    """Connect from a lab client namespace (default: the untrusted internet), a fresh process inside it."""
    address = outputs["publicIp"] if family == 4 else outputs["ipv6Addresses"][0]
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from hardened_lightsail.reachability import tcp_state;"
            "print(tcp_state(sys.argv[2], int(sys.argv[3])))")
    result = subprocess.run(["ip", "netns", "exec", outputs[client], str(PROJECT_DIR / ".venv/bin/python"),
                             "-c", code, str(PROJECT_DIR), address, str(port)], capture_output=True, text=True, timeout=30)
    return result.stdout.strip()


@pytest.fixture(scope="module")
def lab_stack(tmp_path_factory):
    backend = tmp_path_factory.mktemp("backend")
    _write_stack(BASE)
    pulumi(["stack", "init", STACK], backend)
    yield backend
    remove_lab_stack(STACK, backend)


def _outputs(backend) -> dict:
    return json.loads(pulumi(["stack", "output", "-s", STACK, "--json"], backend).stdout)


def test_lab_life_cycle_through_the_real_engine(lab_stack):
    backend = lab_stack
    started = time.monotonic()
    first = pulumi(["up", "-s", STACK, "--yes", "--skip-preview", "--non-interactive"], backend)
    first_up = time.monotonic() - started
    assert "PRIVATE KEY" not in first.stdout + first.stderr, "the lab key leaked into the update's log"
    outputs = _outputs(backend)
    assert "verified:" in outputs["verifiedExposure"] and "MISMATCH" not in outputs["verifiedExposure"]
    # The lab's private key is a secret: encrypted in the state, absent from the outputs.
    state_files = [path for path in (backend / ".pulumi").rglob("*") if path.is_file()]
    assert any(path.name == f"{STACK}.json" for path in state_files), "no state file to check"
    leaked = [path for path in state_files if b"PRIVATE KEY-----" in path.read_bytes()]
    assert leaked == [], f"private key in plaintext in {leaked}"
    assert "PRIVATE KEY" not in json.dumps(outputs)
    assert _from_internet(outputs, 80) == "open" and _from_internet(outputs, 80, 6) == "open"
    assert _from_internet(outputs, 22) == "filtered" and _from_internet(outputs, 22, 6) == "filtered"
    assert _from_internet(outputs, 8080) == "filtered"
    for family in (4, 6):  # the admin client: SSH and the web, nothing hidden
        assert _from_internet(outputs, 22, family, client="labAdminNamespace") == "open"
        assert _from_internet(outputs, 443, family, client="labAdminNamespace") == "open"
        assert _from_internet(outputs, 5432, family, client="labAdminNamespace") == "filtered"

    # Unchanged policy: nothing runs.
    again = pulumi(["up", "-s", STACK, "--yes", "--skip-preview", "--non-interactive"], backend)
    assert re.search(r"^Resources:\n +\d+ unchanged\n", again.stdout, re.M), again.stdout

    # `fw check` renders what `up` shipped: the same release hash, lab deployer addresses included.
    check = subprocess.run([str(PROJECT_DIR / "scripts" / "fw"), "check", "--stack", STACK], capture_output=True,
                           text=True, timeout=60)
    assert re.search(rf"^release {outputs['releaseHash']}: 0 error\(s\)", check.stdout, re.M), check.stdout

    # A service added: the preview names the rows that open, and the lab's own part is one short
    # line (a new cloud-ports file); the server's address stays known.
    changed = dict(BASE, services=BASE["services"] + [{"name": "alt-http", "protocol": "tcp", "ports": "8080"}])
    _write_stack(changed)
    preview = pulumi(["preview", "-s", STACK, "--diff", "--non-interactive"], backend).stdout
    assert re.search(r'^ +\+ tcp/8080 IPv4 from anyone else *: "open"$', preview, re.M), preview
    assert re.search(r'^ +\+ tcp/8080 IPv6 from anyone else *: "open"$', preview, re.M), preview
    assert re.search(r'^ +~ HL_CLOUD_PORTS: "\.build/lab/cloud-ports-[0-9a-f]{16}\.json" => '
                     r'"\.build/lab/cloud-ports-[0-9a-f]{16}\.json"$', preview, re.M), preview
    assert '"fromPort"' not in preview and "lab-lab]" not in preview  # no JSON blob; the lab itself unchanged
    assert outputs["publicIp"] in preview
    assert not re.search(r"(HL_SSH_HOST|publicIp) *: .*\[unknown\]", preview), preview
    started = time.monotonic()
    pulumi(["up", "-s", STACK, "--yes", "--skip-preview", "--non-interactive"], backend)
    change_seconds = time.monotonic() - started
    outputs = _outputs(backend)
    assert _from_internet(outputs, 8080) == "open" and _from_internet(outputs, 8080, 6) == "open"

    # Cutting the deployer off is refused at preview, before anything is touched.
    locked = dict(changed, adminCidrs=["198.51.100.0/24"])
    _write_stack(locked)
    refused = pulumi(["preview", "-s", STACK, "--non-interactive"], backend, check=False)
    assert refused.returncode != 0
    assert "lock-out" in refused.stdout + refused.stderr
    assert "is not in firewall.adminCidrs" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr, "a refused policy must read as its reasons only"

    # Forced through: the host rolls back by itself, `up` fails with the clear message, SSH works,
    # also from the admin client: the lab edge went back to the cloud layer of the host's rules.
    _write_stack(dict(locked, allowLockout=True))
    started = time.monotonic()
    forced = pulumi(["up", "-s", STACK, "--yes", "--skip-preview", "--non-interactive"], backend, check=False)
    rollback_seconds = time.monotonic() - started
    assert forced.returncode != 0
    assert "rules were rolled back: new SSH connections failed within 10 s" in forced.stdout + forced.stderr
    assert "Traceback" not in forced.stdout + forced.stderr, "a failed up must end with its error lines only"
    for origin in (None, outputs["labAdminNamespace"]):
        ssh = subprocess.run([*(["ip", "netns", "exec", origin] if origin else []),
                              "ssh", "-i", str(LAB.state_dir / "ssh" / "id_ed25519"), "-o", "BatchMode=yes",
                              "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                              "-o", "ConnectTimeout=5", f"root@{outputs['publicIp']}", "true"],
                             capture_output=True, text=True, timeout=30)
        assert ssh.returncode == 0, (origin, ssh.stderr)
    assert _from_internet(outputs, 22) == "filtered"  # the drill's SSH source is closed again at the edge
    after = pulumi(["preview", "-s", STACK, "--non-interactive"], backend, check=False).stdout
    assert re.search(r"warning: lab \S+ \([0-9TZ:-]+\): release [0-9a-f]{16} was rolled back on the host, so the lab "
                     r"edge went back to the cloud layer of release [0-9a-f]{16}, which the host runs again: open now: "
                     r"tcp 22 from 192\.0\.2\.0/24, 2001:db8:a::/48; tcp 80 from anyone; tcp 443 from anyone; tcp 8080 "
                     "from anyone", after), after
    print(f"\nlab timings: first up {first_up:.1f} s, change verified {change_seconds:.1f} s, "
          f"forced lock-out up (incl. rollback) {rollback_seconds:.1f} s")

    # Back to a good policy, then destroy leaves no namespace behind.
    _write_stack(BASE)
    pulumi(["up", "-s", STACK, "--yes", "--skip-preview", "--non-interactive"], backend)
    pulumi(["destroy", "-s", STACK, "--yes", "--skip-preview", "--non-interactive"], backend)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"hl-{LAB.name}-" not in namespaces
    assert not LAB.state_dir.exists(), "destroy left the lab's files behind"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert re.search(rf"\bhl{outputs['labSlot']}up\b", links) is None, "destroy left the deployer uplink behind"
