"""HostFirewall: pushes a release to one server and runs the commit-confirm protocol on it.

ready -> copy and host state (side by side) -> deploy. `ready` waits (with its own deadline)
until the server answers SSH with its pinned host key, cloud-init is done and the package lock
is free, before anything is pushed; another host key stops `up` there. deploy is ONE step: apply
(the persistence packages installed if missing, then the rules with the rollback armed) ->
confirm over a NEW ssh connection -> verify on the host -> verify from outside. Because it is one
step, an `up` that applies also confirms and verifies, or fails; a failed deploy is not recorded,
so the next `up` runs it again in full. HostState reads the host back on `refresh`: drift, a
rolled-back or unconfirmed release show as a change there, and its new deployment token re-runs
deploy. No step has a delete command, so replacing or deleting this component never flushes the
live firewall (the last confirmed rules stay, and stay persisted).

Every resource costs the engine and the SDK work on each `up`, even one with nothing to do, so a
fleet's unchanged `up` grows with them: the packages are installed by the apply's own SSH
command, not by a step of their own, and the host state (which only records intent) does not
wait for the copy.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command

from hardened_lightsail.config import NAMESPACE
from hardened_lightsail.policy import VerifySettings
from hardened_lightsail.release import Release
from hardened_lightsail.scan_share import FLEET_FILE_VARIABLE, MEMBER_VARIABLE, fleet_file, write_fleet_file
from hardened_lightsail.ssh_session import ON_THIS_MACHINE_VARIABLE, VANTAGE_KEY_VARIABLE
from hardened_lightsail.step_output import measured_exposure

from .connection import SshTarget
from .host_state import HostState, HostStateArgs

# Relative to the program's directory, where the engine runs the program and starts the command
# provider. No absolute path in any input, so a stack deployed from one checkout shows no diff
# from another.
BUILD_DIR = Path(".build") / "releases"
PROJECT_STEPS = "scripts/hl-step"  # this project's: it runs hardened_lightsail.steps with the checkout's .venv


def steps_command() -> str:
    """The command that runs the deployer-side steps (hardened_lightsail.steps): this project's
    scripts/hl-step, or in a program of your own, its own interpreter (`venv/bin/python -m
    hardened_lightsail.steps`, relative to the program's directory when the venv is inside it)."""
    if Path(PROJECT_STEPS).is_file():
        return PROJECT_STEPS
    return f"{shlex.quote(os.path.relpath(sys.executable))} -m hardened_lightsail.steps"


@dataclass
class HostFirewallArgs:
    target: SshTarget
    release: Release
    confirm_timeout_seconds: int
    public_addresses: pulumi.Input[list[str]]  # the server's addresses to probe from outside (v4 and v6)
    # Changes when the server is replaced: its new disk needs the rules (default: the address,
    # for a server that is not replaced under the same address).
    server_identity: pulumi.Input[str] | None = None
    # The server exists and can be dialled (its cloud firewall and address are in place); None
    # for a server that is already running.
    ready: pulumi.Resource | None = None
    verify_scan: str = "quick"  # from the deployer: full | quick (VerifySettings.deployer_scan)
    verify: VerifySettings = VerifySettings()  # verify.vantage: a host outside the admin CIDRs to probe from
    outside_namespace: pulumi.Input[str] | None = None  # the lab's internet namespace: probes from there too
    # A fleet: (the fleet file the program wrote, this server's name in it). Its full scans are
    # split among its servers unless verify.fleetScan is `every` (scan_share.py).
    fleet: tuple[str, str] | None = None


class HostFirewall(pulumi.ComponentResource):
    def __init__(self, name: str, args: HostFirewallArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hardened-lightsail:host:HostFirewall", name, None, opts)
        release, target = args.release, args.target
        # Content-addressed: writing it again for the same hash writes the same bytes. The
        # directory is copied INTO the login home (which exists, so a retried copy lands in the
        # same place); the payload then keeps a verified copy in its own root-owned state directory.
        release_dir_name = f".hardened-lightsail-{release.hash}"
        local_dir = release.write(BUILD_DIR / release_dir_name)
        remote_dir = target.home_dir().apply(lambda path: f"{path}/{release_dir_name}")
        connection = target.connection_args()
        # A new release, or a replaced server (same address, empty firewall), copies again.
        server_identity = target.host if args.server_identity is None else args.server_identity
        keyed = [release.hash, server_identity]
        steps = steps_command()

        def child(*after: pulumi.Resource | None) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, depends_on=[resource for resource in after if resource])

        # Created once per server (its first contact, where the image's host key may still be
        # served for a while), updated for every new release: whatever is pushed next is pushed
        # to the server with the pinned key, or `up` stops here with the mismatch.
        ready = command.local.Command(
            f"{name}-ready", create=f"{steps} ready --first-contact", update=f"{steps} ready",
            environment={**_ssh_environment(target), "HL_RELEASE": release.hash,
                         "HL_READY_TIMEOUT": str(target.ready_timeout_seconds),
                         "HL_FIRST_BOOT_KEY_GRACE": str(target.first_boot_key_grace_seconds)},
            triggers=[server_identity], opts=child(args.ready))
        copy = command.remote.CopyToRemote(
            f"{name}-copy", connection=connection, source=pulumi.FileArchive(str(local_dir)),  # relative: no checkout path in the state
            remote_path=target.home_dir(), triggers=keyed,
            # pulumi-command updates a CopyToRemote in place when only its triggers change, and an
            # update copies nothing unless source or path changed: a replaced server with the same
            # release would get no files. A replacement copies.
            opts=pulumi.ResourceOptions.merge(child(ready), pulumi.ResourceOptions(replace_on_changes=["triggers"])))
        # Records intent only (the host is read on refresh), so it need not wait for the copy: the
        # two run side by side, one wave fewer of the engine and the SDK on every `up`.
        self.host_state = HostState(f"{name}-host-state", HostStateArgs(
            release=release.hash, server_identity=server_identity, host=target.host, port=target.port,
            user=target.user, private_key=target.private_key, host_key=target.host_key, remote_dir=remote_dir),
            opts=child(ready))
        # The unit that changes the firewall. Keyed on the host state's deployment token, which is
        # new whenever the release, the server or what the host runs (after a refresh) changed.
        deploy = command.local.Command(
            f"{name}-deploy", create=f"{steps} deploy", triggers=[release.hash, self.host_state.deployment],
            environment={**_ssh_environment(target), "HL_REMOTE_DIR": remote_dir, "HL_RELEASE": release.hash,
                         "HL_RELEASE_DIR": str(local_dir),
                         "HL_CONFIRM_TIMEOUT": str(args.confirm_timeout_seconds),
                         "HL_ADDRESSES": pulumi.Output.from_input(args.public_addresses).apply(json.dumps),
                         **_verify_environment(args)},
            opts=child(copy, self.host_state))

        self.release_hash = pulumi.Output.from_input(release.hash)
        # The measured table holds no secret (the key only travels in the environment); some
        # command providers mark all of stdout secret when any input is.
        self.exposure = pulumi.Output.unsecret(deploy.stdout).apply(measured_exposure)
        self.steps = (ready, copy, self.host_state, deploy)
        self.register_outputs({"releaseHash": self.release_hash, "exposure": self.exposure,
                               "hostState": self.host_state.hostState})


def fleet_scan_plan(stack: str, names: list[str], fleet_scan: str) -> Path:
    """The fleet file HostFirewallArgs.fleet names, written on `up` only: a preview of another
    fleet size must not change what a running `up`'s deploy steps scan."""
    path = fleet_file(stack)
    if not pulumi.runtime.is_dry_run():
        write_fleet_file(path, names, fleet_scan)
    return path


def _ssh_environment(target: SshTarget) -> dict[str, pulumi.Input[str]]:
    """What the deploy step needs to open its own ssh sessions (the key stays a secret)."""
    env: dict[str, pulumi.Input[str]] = {
        "HL_SSH_HOST": target.host, "HL_SSH_PORT": pulumi.Output.from_input(target.port).apply(str),
        "HL_SSH_USER": target.user, "HL_SSH_KEY": pulumi.Output.secret(target.private_key),
        "HL_SSH_HOST_KEY": target.host_key}
    if target.on_this_machine:
        env[ON_THIS_MACHINE_VARIABLE] = "1"
    return env


def _verify_environment(args: HostFirewallArgs) -> dict[str, pulumi.Input[str]]:
    """How the deploy step probes from outside: its own scan, and the second vantage point (the
    lab's internet namespace, or verify.vantage with its private key, a secret)."""
    env: dict[str, pulumi.Input[str]] = {"HL_VERIFY_SCAN": args.verify_scan}
    if args.fleet is not None:  # names that never change with the fleet's size: no redeploy
        env[FLEET_FILE_VARIABLE], env[MEMBER_VARIABLE] = args.fleet
    vantage = args.verify.vantage
    if args.outside_namespace is not None:
        env["HL_VERIFY_VANTAGE"] = pulumi.Output.from_input(args.outside_namespace).apply(
            lambda namespace: json.dumps({"namespace": namespace}))
    elif vantage is not None:
        env["HL_VERIFY_VANTAGE"] = json.dumps({"host": vantage.host, "port": vantage.port, "user": vantage.user,
                                               "hostKey": vantage.host_key, "scan": vantage.scan})
        # Read here, never kept in the settings: it stays a secret Output from config to the step.
        verify = pulumi.Config(NAMESPACE).require_secret_object("verify")
        env[VANTAGE_KEY_VARIABLE] = pulumi.Output.secret(verify.apply(lambda value: value["vantage"]["privateKey"]))
    return env
