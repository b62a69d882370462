"""The deploy step (`hl-step deploy`, see steps.py): apply the release with the rollback armed,
confirm it over a NEW ssh connection, verify it on the host, then from outside."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from .commit_confirm import DeployError, RemoteRelease, deploy
from .config import load_policy_file
from .documentation_routes import require_documentation_address
from .outside_verification import FULL, QUICK, THIS_DEPLOYER, View, parse_host_report, verify_outside
from .port_scan import Vantage
from .release import render_release
from .scan_share import share_from_environment
from .ssh_session import VANTAGE_KEY_VARIABLE, HostKeyMismatch, SshEndpoint
from .step_output import EXPOSURE_MARKER, timed_progress


def verification_views(env: Mapping[str, str]) -> list[View]:
    """This deployer (HL_VERIFY_SCAN: full|quick), then the vantage outside the admin CIDRs when
    there is one (HL_VERIFY_VANTAGE): the lab's internet namespace, or verify.vantage over SSH."""
    views = [View(THIS_DEPLOYER, env.get("HL_VERIFY_SCAN", QUICK))]
    vantage = json.loads(env.get("HL_VERIFY_VANTAGE") or "null")
    if vantage and vantage.get("namespace"):
        for address in filter(None, json.loads(env["HL_ADDRESSES"])):  # the lab scans its own addresses only
            require_documentation_address(address)
        views.append(View(Vantage(f"the lab's internet namespace {vantage['namespace']}",
                                  namespace=vantage["namespace"]), FULL, outsider=True))
    elif vantage:
        endpoint = SshEndpoint(vantage["host"], int(vantage["port"]), vantage["user"], env[VANTAGE_KEY_VARIABLE],
                               vantage["hostKey"])
        views.append(View(Vantage(f"vantage {endpoint.where}", endpoint=endpoint), vantage["scan"], outsider=True))
    return views


def deploy_step(env: Mapping[str, str] = os.environ) -> int:
    say = timed_progress()
    target = RemoteRelease(SshEndpoint.from_environment(env), env["HL_REMOTE_DIR"], env["HL_RELEASE"])
    local_dir = Path(env["HL_RELEASE_DIR"])
    policy = load_policy_file(local_dir / "policy.json")
    release = render_release(policy)
    if release.hash != target.release:  # the local copy must be the release the graph names
        print(f"release directory {local_dir} renders {release.hash}, not {target.release}: render it again",
              file=sys.stderr)
        return 1
    try:
        report = deploy(target, local_dir, int(env["HL_CONFIRM_TIMEOUT"]), say)
    except DeployError as error:
        print(str(error), file=sys.stderr)
        return 1
    say("verify on the host: live rules, ipsets and boot files match the release")
    addresses = [a for a in json.loads(env["HL_ADDRESSES"]) if a]
    warnings = [line for line in report.splitlines() if line.startswith("warning:")]
    for warning in warnings:
        say(f"verify on the host: {warning}")
    views = verification_views(env)
    say("verify from outside: " + "; ".join(f"{view.scan} scan from {view.vantage.name}" for view in views))
    try:
        outside = verify_outside(release, policy, addresses, parse_host_report(report), views, policy.admin_cidrs,
                                 share_from_environment(env, release.hash))
    except HostKeyMismatch as error:  # the vantage is not the host its pinned key names
        print(f"verify from outside: {error}", file=sys.stderr)
        return 1
    if outside.mismatches:
        print(outside.table)
        print(f"verify from outside failed: {outside.failure}:\n" + "\n".join([*outside.mismatch_lines, *warnings]),
              file=sys.stderr)
        return 1
    say(f"verify from outside: {outside.table.splitlines()[-1]}")
    print(f"{EXPOSURE_MARKER}\n{outside.table}")
    return 0
