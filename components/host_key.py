"""HostKey: the SSH host key the program makes for one server before the server exists, so the
very first connection already knows whom it talks to (no trust on first use).

A Pulumi dynamic resource (it runs with the official CLI and the SDK's dynamic-provider plugin):
create makes an ed25519 key (hardened_lightsail.host_keys); the private key is a secret in the
state and goes to the server at its first boot, the public key and its fingerprint are plain
outputs that every SSH connection pins. Nothing changes it but a replacement, which the server
kind asks for whenever its server is replaced (`replacement_trigger`), so a new server gets a new
key; deleting it touches no server."""
from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

from components.process_exit import freeze_in_dynamic_provider_process
from hardened_lightsail.host_keys import PublicHostKey, generate_host_key

freeze_in_dynamic_provider_process()


class HostKeyProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        private, public = generate_host_key(f"hardened-lightsail {props['server']}")
        fingerprint = PublicHostKey.parse(public).fingerprint
        return CreateResult(fingerprint, {**props, "privateKey": private, "publicKey": public,
                                          "fingerprint": fingerprint})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Only the server's name is an input; a key is never edited in place, only replaced.
        changed = olds.get("server") != news.get("server")
        return DiffResult(changes=changed, replaces=["server"] if changed else [], delete_before_replace=False)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """The key lives on in the server it was given to until that server goes."""


class HostKey(Resource, module="hardened-lightsail", name="HostKey"):
    privateKey: pulumi.Output[str]  # noqa: N815 (wire names) -- a secret
    publicKey: pulumi.Output[str]  # noqa: N815 -- "ssh-ed25519 AAAA... hardened-lightsail <server>"
    fingerprint: pulumi.Output[str]  # "SHA256:..."

    def __init__(self, name: str, server: str, opts: pulumi.ResourceOptions | None = None):
        props = {"server": server, "privateKey": None, "publicKey": None, "fingerprint": None}
        super().__init__(HostKeyProvider(), name, props, pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["privateKey"])))
