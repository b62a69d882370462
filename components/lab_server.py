"""LabServer, the lab twin of LightsailServer: a server made of network namespaces on this
machine (see lab/), whose edge enforces the same cloud layer Lightsail would.

Two commands, like an instance and its InstancePublicPorts: `lab` stands the lab up (named for
this checkout and stack; its slot allocated at the first `up` and kept in the stack's state)
and `cloud-firewall` loads the policy's cloud layer on the lab's edge. A port change runs only
the second, so the server's address and key stay known in a preview."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pulumi_command as command

from hardened_lightsail.policy import StackSettings
from hardened_lightsail.release import Release
from lab.edge_follower import return_note
from lab.identity import LabIdentity, stack_lab
from lab.layout import LabLayout

from .connection import SshTarget
from .host_key import HostKey
from .lab_step import slot_fix
from .server_handle import ServerHandle

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Cloud layers handed to the edge, named by their content: the command's input is a short path
# that changes exactly when the layer does (the JSON itself would fill every preview diff).
CLOUD_PORTS_DIR = Path(".build") / "lab"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
LAB = "scripts/hl-lab"
# A lab server is on this machine: it is up within seconds, or something is wrong.
LAB_GRACE_SECONDS, LAB_READY_SECONDS = 15, 60


def this_stacks_lab() -> LabIdentity:
    return stack_lab(PROJECT_DIR, pulumi.get_stack())


def slot_problems(identity: LabIdentity, settings: StackSettings) -> list[str]:
    """Why `up` could not give this stack's lab a slot (checked at preview, changing nothing)."""
    error = identity.slot_problem(settings.lab.slot, may_move=True)
    return [] if error is None else [slot_fix(error, identity.stack)]


def cloud_ports_file(port_infos: list[dict[str, Any]]) -> str:
    """Write the cloud layer to a file named by its hash; returns its path relative to the project."""
    content = (json.dumps(port_infos, indent=2) + "\n").encode()
    relative = CLOUD_PORTS_DIR / f"cloud-ports-{hashlib.sha256(content).hexdigest()[:16]}.json"
    path = PROJECT_DIR / relative
    if not path.exists() or path.read_bytes() != content:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return str(relative)


def _boot_id() -> str:
    """Changes when this machine reboots, which takes every lab with it."""
    return BOOT_ID.read_text().strip() if BOOT_ID.exists() else "unknown"


class LabServer(pulumi.ComponentResource):
    def __init__(self, name: str, settings: StackSettings, release: Release,
                 opts: pulumi.ResourceOptions | None = None):
        identity = this_stacks_lab()
        problems = slot_problems(identity, settings)  # before anything is registered
        for problem in problems:
            pulumi.log.error(problem)
        if problems:
            raise pulumi.RunError("the lab can't get its slot (see above); nothing was changed")
        super().__init__("hardened-lightsail:lab:LabServer", name, None, opts)
        returned = return_note(LabLayout(identity.state_dir))
        if returned:  # a drill's release was rolled back: say what the edge lets in now
            pulumi.log.warn(f"lab {identity.name} ({returned['at']}): {returned['message']}")
        where = {"HL_LAB_NAME": identity.name, "HL_LAB_DIR": identity.relative_state_dir}
        requested = {} if settings.lab.slot is None else {"HL_LAB_SLOT": str(settings.lab.slot)}
        # Another name or slot is another lab; a reboot took the lab away, so it is made again.
        new_server = [identity.name, str(settings.lab.slot), _boot_id()]
        # The server's host key, made here and pinned like a Lightsail instance's: a new lab
        # server (any of the triggers above) gets a new one.
        host_key = HostKey(f"{name}-host-key", server=identity.name,
                           opts=pulumi.ResourceOptions(parent=self, replacement_trigger=new_server))
        private_host_key: pulumi.Output[str] = pulumi.Output.secret(host_key.privateKey)
        booting = {"HL_LAB_BOOT_SECONDS": str(settings.lab.boot_seconds)} if settings.lab.boot_seconds else {}
        self.lab = command.local.Command(
            f"{name}-lab", create=f"{LAB} up", update=f"{LAB} up", delete=f"{LAB} down",
            environment={**where, **requested, **booting, "HL_LAB_STACK": identity.stack,
                         "HL_LAB_HOST_KEY": private_host_key, "HL_LAB_HOST_PUBLIC_KEY": host_key.publicKey},
            triggers=new_server,
            # stdout carries the private key: keep it out of the update's log (stderr still shows).
            # (The host key in the environment is a secret input: the engine shows it as [secret].)
            logging=command.local.Logging.STDERR,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdout"],
                                        # one lab name can't be up twice, so the old one goes first
                                        delete_before_replace=True))
        self.cloud_firewall = command.local.Command(
            f"{name}-cloud-firewall", create=f"{LAB} cloud", update=f"{LAB} cloud",
            environment={**where, "HL_CLOUD_PORTS": cloud_ports_file(release.port_infos)},
            triggers=[self.lab.id],  # a new lab starts with Lightsail's default: load the policy's layer again
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.lab]))
        info = self.lab.stdout.apply(json.loads)

        def public(key_path: Callable[[dict[str, Any]], Any]) -> pulumi.Output[Any]:
            return pulumi.Output.unsecret(info.apply(key_path))

        self.public_ip = public(lambda i: i["ssh"]["host"])
        self.ipv6_addresses = public(lambda i: [i["ssh"]["hostIpv6"]])
        self.slot = public(lambda i: i["slot"])
        self.namespaces = public(lambda i: i["namespaces"])
        self.ssh_command = public(lambda i: f"ssh -i {i['ssh']['privateKeyPath']} -o StrictHostKeyChecking=yes "
                                            f"-o UserKnownHostsFile={i['ssh']['knownHostsPath']} root@{i['ssh']['host']}")
        # A booting lab server takes settings.lab.boot_seconds; give it the margin a real one gets.
        self.target = SshTarget(host=self.public_ip, user="root", private_key=info.apply(lambda i: i["privateKey"]),
                                host_key=host_key.publicKey,
                                first_boot_key_grace_seconds=settings.lab.boot_seconds + LAB_GRACE_SECONDS,
                                ready_timeout_seconds=settings.lab.boot_seconds + LAB_READY_SECONDS)
        self.register_outputs({"publicIp": self.public_ip, "ipv6Addresses": self.ipv6_addresses})


def make_lab_server(settings: StackSettings, release: Release) -> ServerHandle:
    server = LabServer("lab", settings, release)
    return ServerHandle(
        # The host chain starts once the edge enforces the policy's cloud layer.
        name="lab", target=server.target, ready=server.cloud_firewall, identity=server.lab.id,
        public_ip=server.public_ip, ipv6_addresses=server.ipv6_addresses,
        probe_addresses=pulumi.Output.all(server.public_ip, server.ipv6_addresses).apply(lambda v: [v[0], *v[1]]),
        ssh_command=server.ssh_command,
        extra_outputs={"labServerNamespace": server.namespaces.apply(lambda n: n["server"]),
                       "labInternetNamespace": server.namespaces.apply(lambda n: n["internet"]),
                       "labAdminNamespace": server.namespaces.apply(lambda n: n["admin"]),
                       "labSlot": server.slot})
