"""`pulumi up` tells the host's truth, through the real engine against a lab stack:
- after a failed `up` of any kind (a forced lock-out, a network blip longer than the confirm
  window), the next `up` re-applies and confirms by itself, and the host ends up `active` on the
  release `stack output releaseHash` names, also after the rollback deadline has passed;
- another tool's rule in front of the project's jump is drift only when it changes what is open.
Drift of what the project owns: tests/test_engine_drift.py (a stack of its own, run beside)."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from host_truth_stack import BASE, CONFIRM_SECONDS, MARKS, host_truth_stack

from hardened_lightsail.commit_confirm import PAUSE_BEFORE_CONFIRM

from engine import PROJECT_DIR

pytestmark = MARKS
WITH_ALT_HTTP = dict(BASE, services=BASE["services"] + [{"name": "alt-http", "protocol": "tcp", "ports": "8080"}])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from host_truth_stack("hosttruth", tmp_path_factory)


def test_a_failed_lockout_drill_then_the_good_policy_leaves_the_host_confirmed(stack):
    stack.write(BASE)
    stack.pulumi(stack.up)
    outputs = stack.outputs()
    # The drill: the deployer itself blocklisted. The host rolls back; `up` says so and fails.
    stack.write(dict(BASE, blocklist=BASE["blocklist"] + ["192.0.2.0/24"], allowLockout=True))
    drill = stack.pulumi(stack.up, check=False)
    assert drill.returncode != 0
    assert f"rules were rolled back: new SSH connections failed within {CONFIRM_SECONDS} s" in drill.stdout + drill.stderr
    # The good policy again: `up` succeeds, and the host keeps it past the rollback deadline.
    stack.write(BASE)
    stack.pulumi(stack.up)
    stack.assert_confirmed_after_the_deadline()
    assert "verified:" in stack.outputs()["verifiedExposure"]

    # Replacing the deploy step by hand runs the whole unit again, and it stays confirmed too.
    state = json.loads(stack.pulumi(["stack", "export", "-s", stack.name]).stdout)
    urn = next(r["urn"] for r in state["deployment"]["resources"] if r["urn"].endswith("::lab-firewall-deploy"))
    replaced = stack.pulumi(stack.up + ["--replace", urn])
    assert "lab-firewall-deploy" in replaced.stdout
    stack.assert_confirmed_after_the_deadline()
    assert outputs["publicIp"] == stack.outputs()["publicIp"]


def test_a_network_blip_longer_than_the_confirm_window_does_not_wedge_the_stack(stack):
    stack.write(BASE)
    stack.pulumi(stack.up)
    edge = stack.edge()
    stack.write(WITH_ALT_HTTP)
    # The deploy step pauses 3 s between apply and confirm, so the blip starts before the confirm.
    environment = {**os.environ, "PULUMI_BACKEND_URL": f"file://{stack.backend}", "PULUMI_HOME": str(stack.backend / "home"),
                   "HL_USE_BUILT_PULUMI": "1", PAUSE_BEFORE_CONFIRM: "3"}
    update = subprocess.Popen([str(PROJECT_DIR / "scripts" / "pulumi"), *stack.up], env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    blocked = ["ip", "netns", "exec", edge, "iptables", "-I", "FORWARD", "1", "-p", "tcp", "--dport", "22",
               "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]
    blocked6 = ["ip", "netns", "exec", edge, "ip6tables", "-I", "FORWARD", "1", "-p", "tcp", "--dport", "22",
                "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]
    try:
        # As soon as the new release is live and waiting, new SSH connections stop getting through
        # for longer than the confirm window (the apply's own session is not affected).
        deadline = time.monotonic() + 120
        while stack.host_state().get("state") != "pending" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stack.host_state().get("state") == "pending", stack.host_state()
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
    assert stack.host_state().get("state") != "pending"
    # The network is back: a plain `up` (no --replace) applies, confirms and verifies again.
    stack.pulumi(stack.up)
    stack.assert_confirmed_after_the_deadline()
    assert "tcp/8080" in stack.outputs()["verifiedExposure"]


def test_another_tools_rule_in_front_of_the_policy_is_drift_only_when_it_changes_what_is_open(stack):
    stack.write(BASE)
    stack.pulumi(stack.up)
    # Closed anyway: not a change.
    stack.on_host("iptables -I INPUT 1 -p tcp --dport 23 -j DROP")
    harmless = stack.pulumi(stack.preview_refresh)
    assert "hostState" not in harmless.stdout, harmless.stdout
    # The web cut off by another tool's rule: the refresh says so, and `up` can't make it true,
    # so it fails naming the port and the rule (the rule is not the project's to remove).
    stack.on_host("iptables -I INPUT 1 -p tcp --dport 80 -j DROP")
    preview = stack.pulumi(stack.preview_refresh)
    changed = [line for line in preview.stdout.splitlines() if "hostState" in line and "=>" in line]
    assert changed and "tcp/80 from anyone else open -> closed" in changed[0], preview.stdout
    failed = stack.pulumi(stack.up + ["--refresh"], check=False)
    assert failed.returncode != 0
    assert "tcp/80" in failed.stdout and "MISMATCH" in failed.stdout and "--dport 80 -j DROP" in failed.stdout, \
        failed.stdout
    # Removed by hand: the next `up` verifies again.
    stack.on_host("iptables -D INPUT -p tcp --dport 80 -j DROP; iptables -D INPUT -p tcp --dport 23 -j DROP")
    stack.pulumi(stack.up + ["--refresh"])
    assert "verified:" in stack.outputs()["verifiedExposure"]
