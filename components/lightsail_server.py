"""LightsailServer: one Lightsail instance with its key pair, its pinned SSH host key (installed at
first boot), static IP and cloud firewall. HostFirewall's readiness step then waits for SSH,
cloud-init and the package manager before anything else touches it."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_aws as aws

from hardened_lightsail.blueprints import login_user
from hardened_lightsail.cloud_layer import to_provider_args
from hardened_lightsail.policy import ServerSettings

from .connection import SshTarget
from .host_key import HostKey


def first_boot_user_data(ssh_port: int, host_private_key: str, host_public_key: str) -> str:
    """Lightsail's launch script (user data) for a new instance: it installs the host key the
    program made and pinned (so the first connection already checks it) and, for a custom
    firewall.sshPort, moves sshd there (both firewall layers open only that port).

    Lightsail runs the launch script as the tail of a shell script of its own (it sets up its
    browser SSH first), so this is POSIX sh, not cloud-config, and it runs in cloud-init's final
    stage: until then sshd serves the image's keys on 22. The readiness step waits that out
    without trusting them. Handles socket-activated sshd (Ubuntu 24.04: the generator reads Port
    from sshd_config) and the classic service."""
    public_key = shlex.quote(host_public_key.strip())
    port_lines = "" if ssh_port == 22 else f"""printf 'Port {ssh_port}\\n' > /etc/ssh/sshd_config.d/10-hardened-lightsail-port.conf
if command -v semanage >/dev/null 2>&1; then semanage port -a -t ssh_port_t -p tcp {ssh_port} || true; fi
"""
    return f"""#!/bin/sh
# hardened-lightsail first boot: the SSH host key this stack made and pins{'' if ssh_port == 22 else f', sshd on port {ssh_port}'}.
set -eu
umask 077
mkdir -p /etc/ssh/sshd_config.d
cat > /etc/ssh/ssh_host_ed25519_key.hl-new <<'HARDENED_LIGHTSAIL_HOST_KEY'
{host_private_key.strip()}
HARDENED_LIGHTSAIL_HOST_KEY
printf '%s\\n' {public_key} > /etc/ssh/ssh_host_ed25519_key.pub
chmod 0644 /etc/ssh/ssh_host_ed25519_key.pub
mv -f /etc/ssh/ssh_host_ed25519_key.hl-new /etc/ssh/ssh_host_ed25519_key
# The image's own keys were never pinned: sshd serves the pinned one only.
rm -f /etc/ssh/ssh_host_rsa_key /etc/ssh/ssh_host_rsa_key.pub /etc/ssh/ssh_host_ecdsa_key /etc/ssh/ssh_host_ecdsa_key.pub
printf 'HostKey /etc/ssh/ssh_host_ed25519_key\\n' > /etc/ssh/sshd_config.d/05-hardened-lightsail-host-key.conf
{port_lines}if grep -q '^Include /etc/ssh/sshd_config.d' /etc/ssh/sshd_config; then :; else
  sed -i '1i Include /etc/ssh/sshd_config.d/*.conf' /etc/ssh/sshd_config
fi
if command -v restorecon >/dev/null 2>&1; then restorecon -R /etc/ssh || true; fi
systemctl daemon-reload
if systemctl is-enabled ssh.socket >/dev/null 2>&1; then systemctl restart ssh.socket
else systemctl restart ssh 2>/dev/null || systemctl restart sshd; fi
"""


@dataclass
class LightsailServerArgs:
    settings: ServerSettings
    port_infos: list[dict[str, Any]]  # the rendered cloud layer
    tags: dict[str, Any]
    ssh_port: int = 22  # firewall.sshPort: the only SSH port either firewall layer leaves open


class LightsailServer(pulumi.ComponentResource):
    def __init__(self, name: str, args: LightsailServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hardened-lightsail:server:LightsailServer", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        # Lightsail generates the key pair; its private key is only ever held as a secret.
        key_pair = aws.lightsail.KeyPair(f"{name}-key", opts=pulumi.ResourceOptions(
            parent=self, additional_secret_outputs=["privateKey", "encryptedPrivateKey"]))
        # Made before the instance, so its first boot installs it and no connection ever has to
        # trust an unknown key. Whatever replaces the instance replaces the key first (a new
        # server gets a new key); replacing the key replaces the instance (user data).
        host_key = HostKey(f"{name}-host-key", server=name, opts=pulumi.ResourceOptions(
            parent=self, replacement_trigger=[settings.availability_zone, settings.blueprint_id, settings.bundle_id]))
        user_data: pulumi.Output[str] = pulumi.Output.secret(pulumi.Output.all(host_key.privateKey, host_key.publicKey).apply(
            lambda keys: first_boot_user_data(args.ssh_port, keys[0], keys[1])))
        instance = aws.lightsail.Instance(
            f"{name}-instance", availability_zone=settings.availability_zone,
            blueprint_id=settings.blueprint_id, bundle_id=settings.bundle_id,
            ip_address_type=settings.ip_address_type, key_pair_name=key_pair.name, tags=args.tags,
            # Create-only: it carries the private host key, so it stays a secret in the state.
            user_data=user_data, opts=child)
        self.public_ports = aws.lightsail.InstancePublicPorts(
            f"{name}-cloud-firewall", instance_name=instance.name, port_infos=cast(list[aws.lightsail.InstancePublicPortsPortInfoArgsDict], to_provider_args(args.port_infos)),  # the provider's keys
            # PutInstancePublicPorts replaces the whole set and the provider replaces rather than
            # updates (pulumi-aws#1511): delete first so the two never fight over the instance.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True))
        static_ip = aws.lightsail.StaticIp(f"{name}-ip", opts=child)
        attachment = aws.lightsail.StaticIpAttachment(
            f"{name}-ip-attachment", static_ip_name=static_ip.name, instance_name=instance.name,
            # The address we dial points at the instance once its cloud firewall is the policy's.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.public_ports]))
        user = login_user(settings.blueprint_id)
        assert user is not None  # the config check refused a blueprint we don't know
        self.target = SshTarget(host=static_ip.ip_address, user=user,
                                private_key=key_pair.private_key, host_key=host_key.publicKey, port=args.ssh_port)
        # Dialable: the static IP points at the instance, behind the policy's cloud firewall.
        # HostFirewall's readiness step waits for the rest (sshd, the pinned key, cloud-init).
        self.ready = attachment
        self.identity = instance.id
        self.public_ip = static_ip.ip_address
        self.ipv6_addresses = instance.ipv6_addresses
        self.register_outputs({"publicIp": self.public_ip, "ipv6Addresses": self.ipv6_addresses})
