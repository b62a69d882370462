"""examples/plain-ssh-server, for real: the host layer used from another Pulumi program (no Lightsail,
no lab target) hardens a lab server given only its address, user, private key (a secret) and pinned
host key, through the real engine: up -> verified from outside, up again changes nothing, destroy
leaves the confirmed rules in place."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from lab.netns import in_namespace
from lab.topology import ADMIN_CIDRS, DEPLOYER_CIDRS, SERVER

from engine import PROJECT_DIR, engine_missing_reason, pulumi

EXAMPLE = PROJECT_DIR / "examples" / "plain-ssh-server"
STACK = "home"
PASSPHRASE = {"PULUMI_CONFIG_PASSPHRASE": "example-test-only"}
pytestmark = [pytest.mark.engine, pytest.mark.netfilter,
              pytest.mark.skipif(engine_missing_reason() is not None, reason=engine_missing_reason() or "")]


def example(args: list[str], backend: Path, check: bool = True, stdin: str | None = None):
    return pulumi([*args, "-s", STACK, "--non-interactive"], backend, cwd=backend / "project",
                  env=PASSPHRASE, check=check, stdin=stdin, timeout=900)


@pytest.fixture
def example_stack(tmp_path, lab_factory):
    """The example copied next to a private backend and pointed at a fresh lab's server, as its
    user would configure it; destroyed and removed however the test ends (the lab by lab_factory)."""
    lab = lab_factory.up()
    project = tmp_path / "project"
    project.mkdir()
    settings = yaml.safe_load((EXAMPLE / "Pulumi.yaml").read_text())
    settings["runtime"]["options"]["virtualenv"] = str(PROJECT_DIR / ".venv")  # has the package's deps
    (project / "Pulumi.yaml").write_text(yaml.safe_dump(settings))
    shutil.copy(EXAMPLE / "__main__.py", project / "__main__.py")
    pulumi(["stack", "init", STACK], tmp_path, cwd=project, env=PASSPHRASE)
    try:
        stack_file = project / f"Pulumi.{STACK}.yaml"
        stack_config = yaml.safe_load(stack_file.read_text()) or {}
        host_key = Path(str(lab.layout.host_key) + ".pub").read_text().strip()
        stack_config["config"] = {
            "plain-ssh-server:host": lab.server_ipv4, "plain-ssh-server:user": "root",
            "plain-ssh-server:hostKey": host_key,
            "plain-ssh-server:firewall": {
                "adminCidrs": list(ADMIN_CIDRS), "deployerAddresses": list(DEPLOYER_CIDRS),
                "services": [{"name": "http", "protocol": "tcp", "ports": "80"}],
                "confirmTimeoutSeconds": 30}}
        stack_file.write_text(yaml.safe_dump(stack_config))
        example(["config", "set", "--secret", "privateKey"], tmp_path, stdin=lab.layout.client_key.read_text())
        yield tmp_path, lab
    finally:
        example(["destroy", "--yes", "--skip-preview"], tmp_path, check=False)
        example(["stack", "rm", "--yes", "--force"], tmp_path, check=False)


def test_example_hardens_a_plain_ssh_server_and_a_second_up_changes_nothing(example_stack):
    backend, lab = example_stack

    first = example(["up", "--yes", "--skip-preview"], backend)

    outputs = json.loads(example(["stack", "output", "--json", "--show-secrets"], backend).stdout)
    verified = outputs["verifiedExposure"]
    assert "verified:" in verified and "MISMATCH" not in verified, verified
    assert outputs["exposure"]["tcp/80 IPv4 from anyone else"] == "open", outputs["exposure"]
    assert outputs["exposure"]["tcp/22 IPv4 from anyone else"] == "closed", outputs["exposure"]
    private_key = lab.layout.client_key.read_text()
    assert private_key.strip().splitlines()[1] not in first.stdout + first.stderr + json.dumps(outputs)
    # The control: the project's chains are live in the server's namespace, both families.
    for tool in ("iptables", "ip6tables"):
        assert "-j HL-" in in_namespace(lab.namespace(SERVER), [tool, "-S", "INPUT"]).stdout, tool

    again = example(["up", "--yes", "--skip-preview"], backend)
    assert "unchanged" in again.stdout and "updated" not in again.stdout.split("Resources:")[-1], again.stdout

    example(["destroy", "--yes", "--skip-preview"], backend)
    state = json.loads(example(["stack", "export"], backend).stdout)
    assert not state["deployment"].get("resources"), "destroy left resources in the state"
