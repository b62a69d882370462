"""HostState: what one server's firewall really is, read back from the host on `pulumi refresh`.

A Pulumi dynamic resource (it runs with the official CLI and the SDK's own dynamic-provider
plugin, no plugin of ours). Its input `hostState` is always "in sync"; `read()` asks the host
(`hlfw drift` over a new SSH connection) and records what it found, e.g.
`drift: live v4 rules differ from release ...` or `rolled-back ...`. The next preview then shows
`hostState: "drift: ..." => "in sync"` on this resource, and `up` updates it: every create or
update hands out a new `deployment` token, and HostFirewall's deploy step is keyed on it, so the
host goes through the full commit-confirm and verification again. Nothing here touches the
firewall itself: create/update only record intent, and delete never flushes anything."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from components.process_exit import freeze_in_dynamic_provider_process

freeze_in_dynamic_provider_process()

PROVIDER_KEY = "__provider"
INPUT_KEYS = ("release", "serverIdentity", "host", "port", "user", "privateKey", "hostKey", "remoteDir", "hostState")


class HostStateProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(uuid.uuid4().hex, {**props, "deployment": uuid.uuid4().hex})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # olds are the recorded outputs (refreshed by read), news the program's inputs.
        changed = [key for key in INPUT_KEYS if olds.get(key) != news.get(key)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult({**news, "deployment": uuid.uuid4().hex})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        # Imported here, not at the top: the dynamic provider process imports this module for the
        # diff of every `up`, which the host steps wait for; only a refresh reads the host.
        from hardened_lightsail.commit_confirm import RemoteRelease, read_host_state
        from hardened_lightsail.ssh_session import SshEndpoint

        target = RemoteRelease(SshEndpoint(host=props["host"], port=int(props["port"]), user=props["user"],
                                           private_key=props["privateKey"], host_key=props["hostKey"]),
                               props["remoteDir"], props["release"])
        found = read_host_state(target)
        outs = {**props, "hostState": found}
        # Recording the finding as the input too makes the next diff show it as the change.
        return ReadResult(id_, outs, {key: outs[key] for key in INPUT_KEYS if key in outs})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Forgetting the record never touches the host: its last confirmed rules stay."""


@dataclass
class HostStateArgs:
    release: str
    server_identity: pulumi.Input[str]
    host: pulumi.Input[str]
    port: pulumi.Input[int]
    user: pulumi.Input[str]
    private_key: pulumi.Input[str]  # a secret
    host_key: pulumi.Input[str]  # the server's pinned public host key: the read-back checks it
    remote_dir: pulumi.Input[str]


class HostState(Resource, module="hardened-lightsail", name="HostState"):
    # Output properties keep their wire names: `deployment` and `hostState`.
    deployment: pulumi.Output[str]
    hostState: pulumi.Output[str]  # noqa: N815 (the property's name on the wire)

    def __init__(self, name: str, args: HostStateArgs, opts: pulumi.ResourceOptions | None = None):
        from hardened_lightsail.commit_confirm import IN_SYNC  # (see read: the program has it loaded already)

        props = {"release": args.release, "serverIdentity": args.server_identity, "host": args.host,
                 "port": args.port, "user": args.user, "privateKey": pulumi.Output.secret(args.private_key),
                 "hostKey": args.host_key, "remoteDir": args.remote_dir, "hostState": IN_SYNC, "deployment": None}
        super().__init__(HostStateProvider(), name, props, pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["privateKey"])))
