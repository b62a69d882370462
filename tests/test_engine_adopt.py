"""A server the real engine stood up, read the way its operator would: `fw check --host` lints
its live rules (our own: clean), `fw diff --from-host --stack` finds nothing to change, and
`fw logs --stack` finds the server through the stack's outputs (publicIp, sshCommand, via
scripts/pulumi) and counts the packets it dropped."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from test_live_host import kernel_logs_namespaces  # noqa: F401  (fixture)

from lab.identity import stack_lab
from lab.layout import LabLayout
from lab.probe import probe
from lab.topology import LabTopology

from engine import PROJECT_DIR, engine_missing_reason, pulumi, remove_lab_stack
from lab_fixtures import SESSION_LAB_PREFIX
from lab_helpers import OPEN_EDGE

STACK = "adopttest"
LAB = stack_lab(PROJECT_DIR, STACK)  # the lab this checkout's stack stands up
PREFIX = f"HL-{SESSION_LAB_PREFIX}adopt: "
FW = PROJECT_DIR / "scripts" / "fw"
pytestmark = [pytest.mark.engine, pytest.mark.netfilter,
              pytest.mark.skipif(engine_missing_reason() is not None, reason=engine_missing_reason() or ""),
              pytest.mark.skipif(os.geteuid() != 0, reason="the lab makes network namespaces: needs root")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A lab stack, up through the real engine; destroyed and removed however the module ends."""
    backend = tmp_path_factory.mktemp("backend")
    stack_file = PROJECT_DIR / f"Pulumi.{STACK}.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {
        "hardened-lightsail:target": "lab",
        "hardened-lightsail:firewall": {
            "adminCidrs": ["192.0.2.0/24", "2001:db8:a::/48"], "confirmTimeoutSeconds": 10,
            "portScan": {"enabled": False}, "dropLog": {"prefix": PREFIX},
            "services": [{"name": "http", "protocol": "tcp", "ports": "80"}]}}}))
    env = {"PULUMI_BACKEND_URL": f"file://{backend}", "PULUMI_HOME": str(backend / "home"), "HL_USE_BUILT_PULUMI": "1"}
    try:
        pulumi(["stack", "init", STACK], backend)
        pulumi(["up", "-s", STACK, "--yes", "--skip-preview", "--non-interactive"], backend)
        outputs = json.loads(pulumi(["stack", "output", "-s", STACK, "--json"], backend).stdout)
        yield outputs, env
    finally:
        remove_lab_stack(STACK, backend)


def fw(env, *args):
    return subprocess.run([str(FW), *args], capture_output=True, text=True, timeout=180, env={**os.environ, **env})


def pinned_host_key(tmp_path: Path, address: str) -> list[str]:
    layout = LabLayout(LAB.state_dir)
    known_hosts = tmp_path / "known_hosts"
    kind, key = Path(str(layout.host_key) + ".pub").read_text().split()[:2]
    known_hosts.write_text(f"{address} {kind} {key}\n")
    return ["--identity", str(layout.client_key), "--known-hosts", str(known_hosts)]


def test_our_own_live_rules_lint_clean_and_the_stack_would_change_nothing(stack, tmp_path):
    outputs, env = stack
    host = f"root@{outputs['publicIp']}"
    options = pinned_host_key(tmp_path, outputs["publicIp"])
    checked = fw(env, "check", "--host", host, *options)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.rstrip().endswith("0 error(s), 0 warning(s)"), checked.stdout
    assert "tcp/22             IPv4    192.0.2.0/24     open" in checked.stdout
    diff = fw(env, "diff", "--from-host", host, "--stack", STACK, *options)
    assert diff.returncode == 0, diff.stderr
    assert "**0 opened, 0 closed** · live rules: 0 error(s), 0 warning(s)" in diff.stdout
    assert "The exposure is the same: the policy keeps open exactly what the server opens now." in diff.stdout


def test_logs_finds_the_stacks_server_through_its_outputs(stack, kernel_logs_namespaces, tmp_path):
    outputs, env = stack
    address4, address6 = outputs["publicIp"], outputs["ipv6Addresses"][0]
    # The edge drops what the cloud layer closes before the host sees it: open it (drift that the
    # next `up` would repair) so the host's own LOG rule meets the probes.
    open_edge = tmp_path / "cloud-ports.json"
    open_edge.write_text(json.dumps(OPEN_EDGE))
    LabTopology(LAB.name, outputs["labSlot"], LAB.state_dir).load_cloud_layer(open_edge)
    results = probe(outputs["labInternetNamespace"], [(address4, "tcp", 23), (address6, "tcp", 5432)], timeout=0.9)
    assert {r.state for r in results} == {"filtered"}
    logs = fw(env, "logs", "--stack", STACK, "--minutes", "10")
    assert logs.returncode == 0, logs.stderr
    assert re.search(rf'^"{re.escape(PREFIX)}" lines in the kernel log of root@{re.escape(address4)} '
                     r"\((dmesg|journal)\), last 10 min: 2 \(IPv4 1, IPv6 1\)", logs.stdout, re.M), logs.stdout
    assert re.search(r"^tcp/23 +IPv4 +1$", logs.stdout, re.M) and re.search(r"^tcp/5432 +IPv6 +1$", logs.stdout, re.M)
    wrong = fw({**env, "PULUMI_BACKEND_URL": f"file://{Path(env['PULUMI_HOME']).parent / 'nothing'}"},
               "logs", "--stack", STACK)
    assert wrong.returncode == 2 and wrong.stderr.startswith(f"error: stack {STACK}: can't read its outputs")
