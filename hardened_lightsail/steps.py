"""Deployer-side steps of HostFirewall, run by pulumi-command local.Command (`scripts/hl-step`).

ready    before anything is pushed: the server answers SSH with its pinned host key, cloud-init
         is done and the package lock is free (hardened_lightsail/server_readiness.py).
deploy   the host firewall as one unit: apply the release (rollback armed), confirm it over a
         NEW ssh connection with this apply's nonce, verify it on the host, then probe the
         server from here and fail unless what answers is exactly what the policy allows.
         stdout: progress lines, then EXPOSURE_MARKER and the measured exposure (the stack's
         verifiedExposure); stderr: only why it failed, so the error `up` ends with is that.
         Any step that fails fails the whole step, so `up` never ends well over a host that is
         pending, rolled back or different from the release.
cloud-readback
         the verdict of comparing each server's cloud firewall as AWS stores it with the policy
         (HL_CLOUD_READBACK, computed by the program): fails, naming the rows, when AWS lets in
         more than the policy; stdout: one line for each other server."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from .cloud_readback import CloudReadback, describe
from .commit_confirm import DeployError, RemoteRelease, deploy, timed_progress
from .config import load_policy_file
from .outside_verification import FULL, QUICK, THIS_DEPLOYER, View, parse_host_report, verify_outside
from .port_scan import Vantage
from .release import render_release
from .scan_share import share_from_environment
from .server_readiness import ready_step
from .ssh_session import VANTAGE_KEY_VARIABLE, HostKeyMismatch, SshEndpoint
from .step_output import EXPOSURE_MARKER


def verification_views(env: Mapping[str, str]) -> list[View]:
    """This deployer (HL_VERIFY_SCAN: full|quick), then the vantage outside the admin CIDRs when
    there is one (HL_VERIFY_VANTAGE): the lab's internet namespace, or verify.vantage over SSH."""
    views = [View(THIS_DEPLOYER, env.get("HL_VERIFY_SCAN", QUICK))]
    vantage = json.loads(env.get("HL_VERIFY_VANTAGE") or "null")
    if vantage and vantage.get("namespace"):
        from lab.docnet import require_documentation_address  # the lab scans its own addresses only
        for address in filter(None, json.loads(env["HL_ADDRESSES"])):
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


def cloud_readback_step(env: Mapping[str, str] = os.environ) -> int:
    readbacks = [CloudReadback.from_json(item) for item in json.loads(env["HL_CLOUD_READBACK"])]
    too_open = [readback for readback in readbacks if readback.more_open]
    if len(too_open) < len(readbacks):
        print(describe(readback for readback in readbacks if not readback.more_open))
    if too_open:
        print("\n".join(readback.more_open_report() for readback in too_open), file=sys.stderr)
        print("The host firewall was deployed and still filters what gets through. To close these rows, give "
              "a rule the policy leaves empty in a family sources of its own there (e.g. an IPv6 admin CIDR); "
              "anything else the cloud firewall holds beyond the policy goes back with `pulumi up --refresh`.",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Each step takes no arguments but `ready`, which takes --first-contact at most.
    steps: dict[str, Callable[[list[str]], int]] = {"deploy": lambda args: deploy_step(), "cloud-readback": lambda args: cloud_readback_step(),
             "ready": ready_step}
    allowed: dict[str, tuple[list[str], ...]] = {"ready": ([], ["--first-contact"])}
    if not argv or argv[0] not in steps or argv[1:] not in allowed.get(argv[0], ([],)):
        print("usage: hl-step deploy | hl-step cloud-readback | hl-step ready [--first-contact]", file=sys.stderr)
        return 2
    return steps[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
