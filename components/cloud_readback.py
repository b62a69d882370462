"""Reads each server's cloud firewall back as AWS stores it (the InstancePublicPorts outputs, new
after every create, update and refresh) and fails `up` when it lets in more than the policy.

Less open is a warning. More open fails the `cloud-firewall-readback` step, which runs after every
server's host firewall is deployed: the host layer never waits for this check, so a cloud layer
that is too open never also leaves a host layer undeployed."""
from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from typing import Any

import pulumi
import pulumi_command as command

from hardened_lightsail.cloud_layer import from_provider_outputs
from hardened_lightsail.cloud_readback import read_back

from .server_handle import ServerHandle

# Deployer-side step, run from the project directory like the deploy step.
READBACK_STEP = "scripts/hl-step cloud-readback"


def read_back_cloud_firewalls(servers: Sequence[ServerHandle], host_firewalls: Sequence[pulumi.Resource],
                              policy_port_infos: list[dict[str, Any]]) -> command.local.Command | None:
    """The step that fails `up` when a server's stored cloud firewall is more open than
    `policy_port_infos` (the rendered cloud layer); None when no server has one to read back."""
    checked = [(server.name, firewall) for server in servers if (firewall := server.cloud_firewall) is not None]
    if not checked:
        return None
    verdicts = [firewall.port_infos.apply(
        partial(_verdict, name, firewall, policy_port_infos)) for name, firewall in checked]
    # Why a failing local.Command and not a pulumi.RunError from the apply: the SDK re-raises the
    # first failed apply as soon as it completes, and the program ends there with resources still
    # waiting on other outputs never registered (measured with the real engine: a command that
    # waited on another's stdout was never created), so host firewall steps could be lost. A
    # failed step lets the engine finish what is in flight, reads like the deploy step's errors
    # (its stderr is the reason, no traceback), and is not recorded, so the next `up` checks
    # again. It depends on every HostFirewall (so on all their steps), so it runs last and its
    # failure can't keep a host layer from being deployed.
    return command.local.Command(
        "cloud-firewall-readback", create=READBACK_STEP,
        # The verdict, not the raw outputs: the step re-runs exactly when what it would say changes.
        environment={"HL_CLOUD_READBACK": pulumi.Output.all(*verdicts).apply(json.dumps)},
        opts=pulumi.ResourceOptions(depends_on=list(host_firewalls)))


def _verdict(server: str, cloud_firewall: pulumi.Resource, policy_port_infos: list[dict[str, Any]],
             stored: Any) -> dict[str, Any]:
    readback = read_back(server, policy_port_infos, from_provider_outputs(stored))
    if readback.less_open:
        pulumi.log.warn(readback.less_open_report(), resource=cloud_firewall)
    if readback.more_open and pulumi.runtime.is_dry_run():
        # The stored ports are known in a preview only when the resource doesn't change: then
        # `up` keeps them, and its read-back step will fail.
        pulumi.log.warn(f"{readback.more_open_report()}\n`up` will fail on this once the host firewalls "
                        "are deployed, unless the cloud firewall changes", resource=cloud_firewall)
    return readback.to_json()
