"""Deployer-side steps of HostFirewall, run by pulumi-command local.Command (`scripts/hl-step`).

ready    before anything is pushed: the server answers SSH with its pinned host key, cloud-init
         is done and the package lock is free (hardened_lightsail/server_readiness.py).
deploy   the host firewall as one unit: apply the release (rollback armed), confirm it over a
         NEW ssh connection with this apply's nonce, verify it on the host, then probe the
         server from here and fail unless what answers is exactly what the policy allows.
         stdout: progress lines, then EXPOSURE_MARKER and the measured exposure (the stack's
         verifiedExposure); stderr: only why it failed, so the error `up` ends with is that.
         Any step that fails fails the whole step, so `up` never ends well over a host that is
         pending, rolled back or different from the release (hardened_lightsail/deploy_step.py).
cloud-readback
         the verdict of comparing each server's cloud firewall as AWS stores it with the policy
         (HL_CLOUD_READBACK, computed by the program): fails, naming the rows, when AWS lets in
         more than the policy; stdout: one line for each other server."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping

# Each step imports only its own modules when it runs: a fleet starts `ready` and `deploy` once
# per server and release, and loading the policy core, the scanner and the rule evaluator for a
# step that only waits for SSH cost more CPU than the wait itself (2 shared cores, 10 servers).


def cloud_readback_step(env: Mapping[str, str] = os.environ) -> int:
    from .cloud_readback import CloudReadback, describe
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


def _ready(args: list[str]) -> int:
    from .server_readiness import ready_step
    return ready_step(args)


def _deploy(args: list[str]) -> int:
    from .deploy_step import deploy_step
    return deploy_step()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Each step takes no arguments but `ready`, which takes --first-contact at most.
    steps: dict[str, Callable[[list[str]], int]] = {
        "deploy": _deploy, "cloud-readback": lambda args: cloud_readback_step(), "ready": _ready}
    allowed: dict[str, tuple[list[str], ...]] = {"ready": ([], ["--first-contact"])}
    if not argv or argv[0] not in steps or argv[1:] not in allowed.get(argv[0], ([],)):
        print("usage: hl-step deploy | hl-step cloud-readback | hl-step ready [--first-contact]", file=sys.stderr)
        return 2
    return steps[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
