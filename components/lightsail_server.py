"""LightsailServer: one Lightsail instance with its key pair, static IP and cloud firewall, ready
for SSH (cloud-init and the package manager finished) before anything else touches it."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_command as command

from hardened_lightsail.blueprints import login_user
from hardened_lightsail.cloud_layer import to_provider_args
from hardened_lightsail.policy import ServerSettings

from .connection import SshTarget

# Waits (bounded, with a pause between tries) until cloud-init and apt/dnf are done, so the
# payload's package step never races the image's own first-boot updates.
WAIT_UNTIL_READY = """set -u
tries=0
until [ -e /var/lib/cloud/instance/boot-finished ] || [ $tries -ge 60 ]; do tries=$((tries+1)); sleep 5; done
command -v cloud-init >/dev/null 2>&1 && sudo -n cloud-init status --wait >/dev/null 2>&1 || true
tries=0
while sudo -n fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/run/dnf.pid >/dev/null 2>&1; do
  tries=$((tries+1)); [ $tries -ge 60 ] && { echo "package manager still busy after 5 min" >&2; exit 1; }; sleep 5
done
echo ready"""


def ssh_port_user_data(port: int) -> str:
    """First-boot script that moves sshd to `port`: both firewall layers open only that port, so
    a fresh image still listening on 22 would be unreachable. Handles socket-activated sshd
    (Ubuntu 24.04: the generator reads Port from sshd_config) and the classic service."""
    return f"""#!/bin/sh
set -eu
mkdir -p /etc/ssh/sshd_config.d
printf 'Port {port}\\n' > /etc/ssh/sshd_config.d/10-hardened-lightsail-port.conf
if grep -q '^Include /etc/ssh/sshd_config.d' /etc/ssh/sshd_config; then :; else
  sed -i '1i Include /etc/ssh/sshd_config.d/*.conf' /etc/ssh/sshd_config
fi
if command -v semanage >/dev/null 2>&1; then semanage port -a -t ssh_port_t -p tcp {port} || true; fi
systemctl daemon-reload
if systemctl is-enabled ssh.socket >/dev/null 2>&1; then systemctl restart ssh.socket
else systemctl restart ssh 2>/dev/null || systemctl restart sshd; fi
"""


@dataclass
class LightsailServerArgs:
    settings: ServerSettings
    port_infos: list[dict]  # the rendered cloud layer
    tags: dict
    ssh_port: int = 22  # firewall.sshPort: the only SSH port either firewall layer leaves open


class LightsailServer(pulumi.ComponentResource):
    def __init__(self, name: str, args: LightsailServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hardened-lightsail:server:LightsailServer", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        # Lightsail generates the key pair; its private key is only ever held as a secret.
        key_pair = aws.lightsail.KeyPair(f"{name}-key", opts=pulumi.ResourceOptions(
            parent=self, additional_secret_outputs=["privateKey", "encryptedPrivateKey"]))
        instance = aws.lightsail.Instance(
            f"{name}-instance", availability_zone=settings.availability_zone,
            blueprint_id=settings.blueprint_id, bundle_id=settings.bundle_id,
            ip_address_type=settings.ip_address_type, key_pair_name=key_pair.name, tags=args.tags,
            # Only for a custom port: user data is create-only, so the default image stays untouched.
            user_data=ssh_port_user_data(args.ssh_port) if args.ssh_port != 22 else None, opts=child)
        static_ip = aws.lightsail.StaticIp(f"{name}-ip", opts=child)
        attachment = aws.lightsail.StaticIpAttachment(
            f"{name}-ip-attachment", static_ip_name=static_ip.name, instance_name=instance.name, opts=child)
        self.public_ports = aws.lightsail.InstancePublicPorts(
            f"{name}-cloud-firewall", instance_name=instance.name, port_infos=to_provider_args(args.port_infos),
            # PutInstancePublicPorts replaces the whole set and the provider replaces rather than
            # updates (pulumi-aws#1511): delete first so the two never fight over the instance.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True))
        self.target = SshTarget(host=static_ip.ip_address, user=login_user(settings.blueprint_id),
                                private_key=key_pair.private_key, port=args.ssh_port)
        self.ready = command.remote.Command(
            f"{name}-ready", connection=self.target.connection_args(), create=WAIT_UNTIL_READY,
            # We dial the static IP: it must point at this instance before the first try.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.public_ports, attachment]))
        self.identity = instance.id
        self.public_ip = static_ip.ip_address
        self.ipv6_addresses = instance.ipv6_addresses
        self.register_outputs({"publicIp": self.public_ip, "ipv6Addresses": self.ipv6_addresses})
