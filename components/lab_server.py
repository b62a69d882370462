"""LabServer, the lab twin of LightsailServer: a server made of network namespaces on this
machine (see lab/), whose edge enforces the same cloud layer Lightsail would."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import pulumi
import pulumi_command as command

from hardened_lightsail.policy import StackSettings
from hardened_lightsail.networks import parse_cidr
from hardened_lightsail.release import Release
from lab.topology import ROOT, LabTopology

from .connection import SshTarget
from .servers import ServerHandle

PROJECT_DIR = Path(__file__).resolve().parent.parent


def lab_name_for(stack: str) -> str:
    """The lab a stack stands up is named after it (cut to a valid lab name)."""
    return stack.lower()[:16].strip("-") or "lab"


def default_slot_for(lab_name: str) -> int:
    """The slot a lab stack takes when `lab.slot` is unset: derived from its name, so it is known
    at preview (and trial stacks can steer clear of it)."""
    return zlib.crc32(lab_name.encode()) % 16


def lab_identity(settings: StackSettings) -> tuple[str, int, Path]:
    """(lab name, slot, state dir) for this stack: known at preview, so the lock-out check can
    name the deployer's exact addresses."""
    name = lab_name_for(pulumi.get_stack())
    slot = settings.lab.slot if settings.lab.slot is not None else default_slot_for(name)
    return name, slot, PROJECT_DIR / ".lab" / name


def deployer_addresses(settings: StackSettings) -> tuple:
    name, slot, state_dir = lab_identity(settings)
    lab = LabTopology(name, slot, state_dir)
    return tuple(parse_cidr(lab.address(ROOT, family)) for family in (4, 6))


class LabServer(pulumi.ComponentResource):
    def __init__(self, name: str, settings: StackSettings, release: Release,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("hardened-lightsail:lab:LabServer", name, None, opts)
        lab_name, slot, state_dir = lab_identity(settings)
        # One command stands up (or refreshes) the lab; the edge reloads the cloud layer when it
        # changes. stdout carries the generated private key, so it is kept secret.
        self.lab = command.local.Command(
            f"{name}-lab", create="scripts/hl-lab up", update="scripts/hl-lab up", delete="scripts/hl-lab down",
            dir=str(PROJECT_DIR), triggers=[lab_name, slot, str(state_dir)],
            environment={"HL_LAB_NAME": lab_name, "HL_LAB_SLOT": str(slot), "HL_LAB_DIR": str(state_dir),
                         "HL_CLOUD_PORTS": json.dumps(release.port_infos)},
            # stdout carries the private key: keep it out of the update's log (stderr still shows).
            logging=command.local.Logging.STDERR,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdout"]))
        info = self.lab.stdout.apply(json.loads)

        def public(key_path):
            return pulumi.Output.unsecret(info.apply(key_path))

        self.public_ip = public(lambda i: i["ssh"]["host"])
        self.ipv6_addresses = public(lambda i: [i["ssh"]["hostIpv6"]])
        self.namespaces = public(lambda i: i["namespaces"])
        self.ssh_command = public(lambda i: f"ssh -i {i['ssh']['privateKeyPath']} -o StrictHostKeyChecking=no "
                                            f"-o UserKnownHostsFile=/dev/null root@{i['ssh']['host']}")
        self.target = SshTarget(host=self.public_ip, user="root", private_key=info.apply(lambda i: i["privateKey"]))
        self.register_outputs({"publicIp": self.public_ip, "ipv6Addresses": self.ipv6_addresses})


def make_lab_server(settings: StackSettings, release: Release) -> ServerHandle:
    server = LabServer("lab", settings, release)
    return ServerHandle(
        name="lab", target=server.target, ready=server.lab, identity=server.lab.id, public_ip=server.public_ip,
        ipv6_addresses=server.ipv6_addresses,
        probe_addresses=pulumi.Output.all(server.public_ip, server.ipv6_addresses).apply(lambda v: [v[0], *v[1]]),
        ssh_command=server.ssh_command,
        extra_outputs={"labServerNamespace": server.namespaces.apply(lambda n: n["server"]),
                       "labInternetNamespace": server.namespaces.apply(lambda n: n["internet"]),
                       "labAdminNamespace": server.namespaces.apply(lambda n: n["admin"])})
