"""HostFirewall: pushes a release to one server and runs the commit-confirm protocol.

copy -> packages -> apply (rollback armed) -> confirm over a NEW ssh connection -> verify on the host ->
verify from outside. Every step is keyed on the release hash (and the server's identity): an unchanged
policy runs nothing, a changed one (or a replaced server) runs the whole chain. No step has a delete command, so replacing or deleting this
component never flushes the live firewall (the last confirmed rules stay, and stay persisted)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command

from hardened_lightsail.release import Release

from .connection import SshTarget

PROJECT_DIR = Path(__file__).resolve().parent.parent
BUILD_DIR = PROJECT_DIR / ".build" / "releases"
# Deployer-side steps, run from the project directory (the engine starts plugins there). No
# absolute path in any input, so a stack deployed from one checkout shows no diff from another.
STEP = "scripts/hl-step"


@dataclass
class HostFirewallArgs:
    target: SshTarget
    release: Release
    confirm_timeout_seconds: int
    public_addresses: pulumi.Input[list]  # the server's addresses to probe from outside (v4 and v6)
    server_identity: pulumi.Input[str]  # changes when the server is replaced: its new disk needs the rules
    ready: pulumi.Resource  # the server answers SSH and its package manager is idle


class HostFirewall(pulumi.ComponentResource):
    def __init__(self, name: str, args: HostFirewallArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hardened-lightsail:host:HostFirewall", name, None, opts)
        release, target = args.release, args.target
        # Content-addressed: writing it again for the same hash writes the same bytes. The
        # directory is copied INTO the login home (which exists, so a retried copy lands in the
        # same place); the payload then moves it into its own root-owned state directory.
        release_dir_name = f".hardened-lightsail-{release.hash}"
        local_dir = release.write(BUILD_DIR / release_dir_name).relative_to(PROJECT_DIR)
        home = target.home_dir()
        remote_dir = home.apply(lambda path: f"{path}/{release_dir_name}")
        connection = target.connection_args()
        # triggers: a new release, or a replaced server (same address, empty firewall), re-runs
        # every step; anything else leaves them alone.
        keyed = [release.hash, args.server_identity]

        def child(*after: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, depends_on=list(after))

        copy = command.remote.CopyToRemote(
            f"{name}-copy", connection=connection, source=pulumi.FileArchive(str(local_dir)),  # relative: no checkout path in the state
            remote_path=home, triggers=keyed, opts=child(args.ready))
        # Persistence packages (iptables-persistent / iptables-services); a no-op when present.
        packages = command.remote.Command(
            f"{name}-packages", connection=connection, triggers=keyed, opts=child(copy),
            create=remote_dir.apply(lambda d: f"sh {d}/hlfw install-deps"))
        apply = command.remote.Command(
            f"{name}-apply", connection=connection, triggers=keyed, opts=child(packages),
            create=remote_dir.apply(lambda d: f"sh {d}/hlfw apply --release {d} "
                                              f"--timeout {args.confirm_timeout_seconds}"))
        # Confirmed from the deployer over a fresh ssh process (a new TCP connection: conntrack
        # would keep the apply's session alive even under rules that lock everyone else out).
        confirm = command.local.Command(
            f"{name}-confirm", create=f"{STEP} confirm", triggers=keyed,
            environment=_ssh_environment(target, remote_dir, release.hash, {
                "HL_CONFIRM_TIMEOUT": str(args.confirm_timeout_seconds)}),
            opts=child(apply))
        verify_host = command.remote.Command(
            f"{name}-verify-host", connection=connection, triggers=keyed, opts=child(confirm),
            # The client line tells the outside check which address the host sees us as (NAT).
            create=remote_dir.apply(lambda d: f'echo "client: ${{SSH_CLIENT%% *}}"; '
                                              f"sh {d}/hlfw verify --release {release.hash}"))
        verify_outside = command.local.Command(
            f"{name}-verify-outside", create=f"{STEP} verify-outside", triggers=keyed, stdin=verify_host.stdout,
            environment={"HL_RELEASE_DIR": str(local_dir),
                         "HL_ADDRESSES": pulumi.Output.from_input(args.public_addresses).apply(json.dumps)},
            opts=child(verify_host))

        self.release_hash = pulumi.Output.from_input(release.hash)
        self.exposure = verify_outside.stdout
        self.steps = (copy, packages, apply, confirm, verify_host, verify_outside)
        self.register_outputs({"releaseHash": self.release_hash, "exposure": self.exposure})


def _ssh_environment(target: SshTarget, remote_dir, release_hash: str, extra: dict) -> dict:
    """What a deployer-side step needs to open its own ssh session (the key stays a secret)."""
    return {"HL_SSH_HOST": target.host, "HL_SSH_PORT": pulumi.Output.from_input(target.port).apply(str),
            "HL_SSH_USER": target.user, "HL_SSH_KEY": pulumi.Output.secret(target.private_key),
            "HL_REMOTE_DIR": remote_dir, "HL_RELEASE": release_hash, **extra}
