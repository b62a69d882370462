"""`pulumi up` tells the host's truth, through the real engine against a lab stack:
- after a failed `up` of any kind (a forced lock-out, a network blip longer than the confirm
  window), the next `up` re-applies and confirms by itself, and the host ends up `active` on the
  release `stack output releaseHash` names, also after the rollback deadline has passed;
- drift of every kind (a v4 rule, a v6 rule, an ipset member, a persisted boot file, a flushed
  INPUT chain) shows on `preview --refresh` as a change of the server's host state, with the
  reason, and a plain `up` repairs it through the full commit-confirm and verification."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from hardened_lightsail.commit_confirm import PAUSE_BEFORE_CONFIRM
from hardened_lightsail.ssh_session import SshEndpoint, run_remote
from lab.identity import stack_lab
from lab.layout import LabLayout

from engine import PROJECT_DIR, engine_missing_reason, pulumi

STACK = "hosttruth"
LAB = stack_lab(PROJECT_DIR, STACK)  # the lab this checkout's stack stands up
CONFIRM_SECONDS = 10
ROLLBACK_GRACE_SECONDS = 5
pytestmark = [pytest.mark.engine, pytest.mark.netfilter,
              pytest.mark.skipif(engine_missing_reason() is not None, reason=engine_missing_reason() or ""),
              pytest.mark.skipif(os.geteuid() != 0, reason="the lab makes network namespaces: needs root")]

BASE = {"adminCidrs": ["192.0.2.0/24", "2001:db8:a::/48"], "confirmTimeoutSeconds": CONFIRM_SECONDS,
        "blocklist": ["203.0.113.250/32", "2001:db8:dead::/48"],
        "services": [{"name": "http", "protocol": "tcp", "ports": "80"},
                     {"name": "https", "protocol": "tcp", "ports": "443"}]}
WITH_ALT_HTTP = dict(BASE, services=BASE["services"] + [{"name": "alt-http", "protocol": "tcp", "ports": "8080"}])
UP = ["up", "-s", STACK, "--yes", "--skip-preview", "--non-interactive"]


def _write_stack(firewall: dict) -> None:
    config = {"config": {"hardened-lightsail:target": "lab", "hardened-lightsail:firewall": firewall}}
    (PROJECT_DIR / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(config))


def _lab_layout() -> LabLayout:
    return LabLayout(LAB.state_dir)


def _host_state() -> dict[str, str]:
    """The payload's state file, read from the lab directory the server's sessions write into."""
    path = _lab_layout().server_fs("/var/lib/hardened-lightsail") / "state"
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _on_host(outputs: dict, command: str) -> subprocess.CompletedProcess:
    """A shell command on the lab server, as its root login, over a fresh SSH connection."""
    layout = _lab_layout()
    endpoint = SshEndpoint(outputs["publicIp"], 22, "root", layout.client_key.read_text(),
                           Path(str(layout.host_key) + ".pub").read_text())  # the stack's pinned key
    result = run_remote(endpoint, command, connect_timeout=5, timeout=60)
    assert result.returncode == 0, f"{command}: {result.stderr}"
    return result


def _outputs(backend) -> dict:
    return json.loads(pulumi(["stack", "output", "-s", STACK, "--json"], backend).stdout)


def _edge(outputs: dict) -> str:
    return outputs["labServerNamespace"].rsplit("-", 1)[0] + "-edge"


def _assert_confirmed_after_the_deadline(backend) -> None:
    """Past the confirm deadline (+ grace), the host must still run the release `up` named."""
    time.sleep(CONFIRM_SECONDS + ROLLBACK_GRACE_SECONDS)
    state, release = _host_state(), _outputs(backend)["releaseHash"]
    assert (state.get("state"), state.get("release")) == ("active", release), state
    assert state.get("persisted_release") == release, state


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    backend = tmp_path_factory.mktemp("backend")
    _write_stack(BASE)
    pulumi(["stack", "init", STACK], backend)
    yield backend
    try:
        pulumi(["destroy", "-s", STACK, "--yes", "--skip-preview", "--non-interactive"], backend, check=False)
        pulumi(["stack", "rm", STACK, "--yes", "--force"], backend, check=False)
    finally:
        (PROJECT_DIR / f"Pulumi.{STACK}.yaml").unlink(missing_ok=True)
        subprocess.run([str(PROJECT_DIR / "scripts" / "hl-lab"), "down"], check=False, capture_output=True,
                       env={**os.environ, "HL_LAB_NAME": LAB.name, "HL_LAB_DIR": str(LAB.state_dir)})


def test_a_failed_lockout_drill_then_the_good_policy_leaves_the_host_confirmed(stack):
    backend = stack
    _write_stack(BASE)
    pulumi(UP, backend)
    outputs = _outputs(backend)
    # The drill: the deployer itself blocklisted. The host rolls back; `up` says so and fails.
    _write_stack(dict(BASE, blocklist=BASE["blocklist"] + ["192.0.2.0/24"], allowLockout=True))
    drill = pulumi(UP, backend, check=False)
    assert drill.returncode != 0
    assert f"rules were rolled back: new SSH connections failed within {CONFIRM_SECONDS} s" in drill.stdout + drill.stderr
    # The good policy again: `up` succeeds, and the host keeps it past the rollback deadline.
    _write_stack(BASE)
    pulumi(UP, backend)
    _assert_confirmed_after_the_deadline(backend)
    assert "verified:" in _outputs(backend)["verifiedExposure"]

    # Replacing the deploy step by hand runs the whole unit again, and it stays confirmed too.
    state = json.loads(pulumi(["stack", "export", "-s", STACK], backend).stdout)
    urn = next(r["urn"] for r in state["deployment"]["resources"] if r["urn"].endswith("::lab-firewall-deploy"))
    replaced = pulumi(UP + ["--replace", urn], backend)
    assert "lab-firewall-deploy" in replaced.stdout
    _assert_confirmed_after_the_deadline(backend)
    assert outputs["publicIp"] == _outputs(backend)["publicIp"]


def test_a_network_blip_longer_than_the_confirm_window_does_not_wedge_the_stack(stack):
    backend = stack
    _write_stack(BASE)
    pulumi(UP, backend)
    outputs = _outputs(backend)
    edge = _edge(outputs)
    _write_stack(WITH_ALT_HTTP)
    # The deploy step pauses 3 s between apply and confirm, so the blip starts before the confirm.
    environment = {**os.environ, "PULUMI_BACKEND_URL": f"file://{backend}", "PULUMI_HOME": str(backend / "home"),
                   "HL_USE_BUILT_PULUMI": "1", PAUSE_BEFORE_CONFIRM: "3"}
    update = subprocess.Popen([str(PROJECT_DIR / "scripts" / "pulumi"), *UP], env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    blocked = ["ip", "netns", "exec", edge, "iptables", "-I", "FORWARD", "1", "-p", "tcp", "--dport", "22",
               "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]
    blocked6 = ["ip", "netns", "exec", edge, "ip6tables", "-I", "FORWARD", "1", "-p", "tcp", "--dport", "22",
                "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]
    try:
        # As soon as the new release is live and waiting, new SSH connections stop getting through
        # for longer than the confirm window (the apply's own session is not affected).
        deadline = time.monotonic() + 120
        while _host_state().get("state") != "pending" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _host_state().get("state") == "pending", _host_state()
        subprocess.run(blocked, check=True)
        subprocess.run(blocked6, check=True)
        output, _ = update.communicate(timeout=CONFIRM_SECONDS + 60)
    finally:
        for argv in (blocked, blocked6):
            subprocess.run([*argv[:5], "-D", "FORWARD", *argv[8:]], check=False)
        if update.poll() is None:
            update.kill()
    assert update.returncode != 0, output
    assert "rules were rolled back" in output, output
    assert _host_state().get("state") != "pending"
    # The network is back: a plain `up` (no --replace) applies, confirms and verifies again.
    pulumi(UP, backend)
    _assert_confirmed_after_the_deadline(backend)
    assert "tcp/8080" in _outputs(backend)["verifiedExposure"]


# (host command, what the reason must name), one per kind of drift of what the project owns.
DRIFTS = [
    pytest.param("iptables -I HL-INPUT 1 -p tcp --dport 80 -j DROP", "live v4", id="v4 rule"),
    pytest.param("ip6tables -I HL-INPUT 1 -p tcp --dport 443 -j ACCEPT", "live v6", id="v6 rule"),
    pytest.param("ipset add hl-blocklist-v4 203.0.113.251", "hl-blocklist-v4", id="ipset member"),
    pytest.param("echo '# edited by hand' >> /etc/iptables/rules.v4", "/etc/iptables/rules.v4", id="persisted file"),
    # INPUT's policy stays ACCEPT (the project's chain ends with the DROP), so the host stays
    # reachable and the lost jump shows.
    pytest.param("iptables -F INPUT", "live v4", id="flushed INPUT"),
    # The deployer's copy in the login home is gone too: the refresh reads the payload's own
    # stored copy, and the repair sends the release again.
    pytest.param("rm -rf /root/.hardened-lightsail-*; iptables -I HL-INPUT 1 -p tcp --dport 443 -j DROP", "live v4",
                 id="release copy removed"),
]


@pytest.mark.parametrize("command,reason", DRIFTS)
def test_drift_shows_on_preview_refresh_and_up_repairs_it(stack, command, reason):
    backend = stack
    _write_stack(BASE)
    pulumi(UP, backend)
    outputs = _outputs(backend)
    clean = pulumi(["preview", "-s", STACK, "--refresh", "--diff", "--non-interactive"], backend)
    assert "hostState" not in clean.stdout, clean.stdout

    _on_host(outputs, command)
    preview = pulumi(["preview", "-s", STACK, "--refresh", "--diff", "--non-interactive"], backend)
    changed = [line for line in preview.stdout.splitlines() if "hostState" in line]
    assert changed and "drift:" in changed[0] and reason in changed[0] and '"in sync"' in changed[0], preview.stdout
    assert "lab-firewall-deploy" in preview.stdout

    # refresh alone records it; a plain `up` then repairs it through commit-confirm.
    pulumi(["refresh", "-s", STACK, "--yes", "--non-interactive"], backend)
    repaired = pulumi(UP, backend)
    assert "lab-firewall-deploy" in repaired.stdout
    drift = _on_host(outputs, "sh /var/lib/hardened-lightsail/releases/$(sed -n 's/^release=//p' "
                              "/var/lib/hardened-lightsail/state)/hlfw drift --release "
                              f"{_outputs(backend)['releaseHash']}")
    assert "in_sync=yes" in drift.stdout, drift.stdout
    after = pulumi(["preview", "-s", STACK, "--refresh", "--diff", "--non-interactive"], backend)
    assert "hostState" not in after.stdout, after.stdout
    _assert_confirmed_after_the_deadline(backend)


def test_another_tools_rule_in_front_of_the_policy_is_drift_only_when_it_changes_what_is_open(stack):
    backend = stack
    _write_stack(BASE)
    pulumi(UP, backend)
    outputs = _outputs(backend)
    # Closed anyway: not a change.
    _on_host(outputs, "iptables -I INPUT 1 -p tcp --dport 23 -j DROP")
    harmless = pulumi(["preview", "-s", STACK, "--refresh", "--diff", "--non-interactive"], backend)
    assert "hostState" not in harmless.stdout, harmless.stdout
    # The web cut off by another tool's rule: the refresh says so, and `up` can't make it true,
    # so it fails naming the port and the rule (the rule is not the project's to remove).
    _on_host(outputs, "iptables -I INPUT 1 -p tcp --dport 80 -j DROP")
    preview = pulumi(["preview", "-s", STACK, "--refresh", "--diff", "--non-interactive"], backend)
    changed = [line for line in preview.stdout.splitlines() if "hostState" in line and "=>" in line]
    assert changed and "tcp/80 from anyone else open -> closed" in changed[0], preview.stdout
    failed = pulumi(UP + ["--refresh"], backend, check=False)
    assert failed.returncode != 0
    assert "tcp/80" in failed.stdout and "MISMATCH" in failed.stdout and "--dport 80 -j DROP" in failed.stdout, \
        failed.stdout
    # Removed by hand: the next `up` verifies again.
    _on_host(outputs, "iptables -D INPUT -p tcp --dport 80 -j DROP; iptables -D INPUT -p tcp --dport 23 -j DROP")
    pulumi(UP + ["--refresh"], backend)
    assert "verified:" in _outputs(backend)["verifiedExposure"]
