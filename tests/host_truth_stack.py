"""A lab stack of this checkout driven through the real engine, for the host-truth tests
(tests/test_engine_host_truth.py, test_engine_drift.py, test_engine_drift_state.py): its stack
file, its outputs, the payload's state on its server, commands run there, and the drift check
the drift tests share. Each test file uses a stack of its own name, so the files run side by
side (scripts/test) with a lab each."""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from hardened_lightsail.ssh_session import SshEndpoint, run_remote
from lab.identity import LabIdentity, stack_lab
from lab.layout import LabLayout

from engine import PROJECT_DIR, engine_missing_reason, pulumi, remove_lab_stack

CONFIRM_SECONDS = 10
ROLLBACK_GRACE_SECONDS = 5
MARKS = [pytest.mark.engine, pytest.mark.netfilter,
         pytest.mark.skipif(engine_missing_reason() is not None, reason=engine_missing_reason() or ""),
         pytest.mark.skipif(os.geteuid() != 0, reason="the lab makes network namespaces: needs root")]

BASE = {"adminCidrs": ["192.0.2.0/24", "2001:db8:a::/48"], "confirmTimeoutSeconds": CONFIRM_SECONDS,
        "blocklist": ["203.0.113.250/32", "2001:db8:dead::/48"],
        "services": [{"name": "http", "protocol": "tcp", "ports": "80"},
                     {"name": "https", "protocol": "tcp", "ports": "443"}]}


@dataclass
class HostTruthStack:
    name: str
    backend: Path
    lab: LabIdentity = field(init=False)

    def __post_init__(self) -> None:
        self.lab = stack_lab(PROJECT_DIR, self.name)  # the lab this checkout's stack stands up

    @property
    def up(self) -> list[str]:
        return ["up", "-s", self.name, "--yes", "--skip-preview", "--non-interactive"]

    @property
    def preview_refresh(self) -> list[str]:
        return ["preview", "-s", self.name, "--refresh", "--diff", "--non-interactive"]

    def write(self, firewall: dict) -> None:
        # A log prefix of the stack's own makes its releases its own: the lab servers share this
        # machine's /root, where each release is copied to a directory named by its hash.
        firewall = {"dropLog": {"prefix": f"HL-{self.name}: "}, **firewall}
        config = {"config": {"hardened-lightsail:target": "lab", "hardened-lightsail:firewall": firewall}}
        (PROJECT_DIR / f"Pulumi.{self.name}.yaml").write_text(yaml.safe_dump(config))

    def pulumi(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        return pulumi(args, self.backend, check=check)

    @property
    def layout(self) -> LabLayout:
        return LabLayout(self.lab.state_dir)

    def host_state(self) -> dict[str, str]:
        """The payload's state file, read from the lab directory the server's sessions write into."""
        path = self.layout.server_fs("/var/lib/hardened-lightsail") / "state"
        if not path.exists():
            return {}
        return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)

    def outputs(self) -> dict:
        return json.loads(self.pulumi(["stack", "output", "-s", self.name, "--json"]).stdout)

    def on_host(self, command: str) -> subprocess.CompletedProcess:
        """A shell command on the lab server, as its root login, over a fresh SSH connection."""
        layout = self.layout
        endpoint = SshEndpoint(self.outputs()["publicIp"], 22, "root", layout.client_key.read_text(),
                               Path(str(layout.host_key) + ".pub").read_text())  # the stack's pinned key
        result = run_remote(endpoint, command, connect_timeout=5, timeout=60)
        assert result.returncode == 0, f"{command}: {result.stderr}"
        return result

    def edge(self) -> str:
        return self.outputs()["labServerNamespace"].rsplit("-", 1)[0] + "-edge"

    def assert_confirmed_after_the_deadline(self) -> None:
        """Past the confirm deadline (+ grace), the host must still run the release `up` named."""
        time.sleep(CONFIRM_SECONDS + ROLLBACK_GRACE_SECONDS)
        state, release = self.host_state(), self.outputs()["releaseHash"]
        assert (state.get("state"), state.get("release")) == ("active", release), state
        assert state.get("persisted_release") == release, state

    def remove(self) -> None:
        """Destroy the stack, remove it and its stack file, take its lab down (however far it got)."""
        remove_lab_stack(self.name, self.backend)


def host_truth_stack(name: str, tmp_path_factory):
    """The module fixture's body: a new stack `name` on BASE, removed at the end."""
    stack = HostTruthStack(name, tmp_path_factory.mktemp("backend"))
    stack.write(BASE)
    stack.pulumi(["stack", "init", name])
    try:
        yield stack
    finally:
        stack.remove()


def drift_shows_and_up_repairs_it(stack: HostTruthStack, command: str, reason: str, past_the_deadline: bool) -> None:
    """`command` on the host ({release}: the release's hash) drifts it: `preview --refresh` names
    `reason`, refresh + `up` repairs it through commit-confirm, and (past_the_deadline) the host
    still runs it after the deadline."""
    stack.write(BASE)
    stack.pulumi(stack.up)
    clean = stack.pulumi(stack.preview_refresh)
    assert "hostState" not in clean.stdout, clean.stdout

    stack.on_host(command.format(release=stack.outputs()["releaseHash"]))
    preview = stack.pulumi(stack.preview_refresh)
    changed = [line for line in preview.stdout.splitlines() if "hostState" in line]
    assert changed and "drift:" in changed[0] and reason in changed[0] and '"in sync"' in changed[0], preview.stdout
    assert "lab-firewall-deploy" in preview.stdout

    # refresh alone records it; a plain `up` then repairs it through commit-confirm.
    stack.pulumi(["refresh", "-s", stack.name, "--yes", "--non-interactive"])
    repaired = stack.pulumi(stack.up)
    assert "lab-firewall-deploy" in repaired.stdout
    drift = stack.on_host("sh /var/lib/hardened-lightsail/releases/$(sed -n 's/^release=//p' "
                          "/var/lib/hardened-lightsail/state)/hlfw drift --release "
                          f"{stack.outputs()['releaseHash']}")
    assert "in_sync=yes" in drift.stdout, drift.stdout
    after = stack.pulumi(stack.preview_refresh)
    assert "hostState" not in after.stdout, after.stdout
    if past_the_deadline:  # (the 15 s wait once per file: the host-truth tests check it too)
        stack.assert_confirmed_after_the_deadline()
