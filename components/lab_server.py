"""LabServer, the lab twin of LightsailServer: a server made of network namespaces on this
machine (see lab/), whose edge enforces the same cloud layer Lightsail would.

Two commands, like an instance and its InstancePublicPorts: `lab` stands the lab up with
`server.count` servers (named for this checkout and stack; its slot allocated at the first `up`
and kept in the stack's state) and `cloud-firewall` loads the policy's cloud layer on the lab's
edge, which serves every server. A port change runs only the second, so the servers' addresses
and key stay known in a preview; a changed count updates the lab in place (servers added or
removed, the others untouched)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pulumi
import pulumi_command as command

from hardened_lightsail.policy import StackSettings
from hardened_lightsail.release import Release
from lab.edge_follower import return_note
from lab.identity import LabIdentity, stack_lab
from lab.layout import LabLayout

from .connection import SshTarget
from .lab_step import slot_fix
from .server_handle import ServerHandle

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Cloud layers handed to the edge, named by their content: the command's input is a short path
# that changes exactly when the layer does (the JSON itself would fill every preview diff).
CLOUD_PORTS_DIR = Path(".build") / "lab"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
LAB = "scripts/hl-lab"


def this_stacks_lab() -> LabIdentity:
    return stack_lab(PROJECT_DIR, pulumi.get_stack())


def slot_problems(identity: LabIdentity, settings: StackSettings) -> list[str]:
    """Why `up` could not give this stack's lab a slot (checked at preview, changing nothing)."""
    error = identity.slot_problem(settings.lab.slot, may_move=True)
    return [] if error is None else [slot_fix(error, identity.stack)]


def cloud_ports_file(port_infos: list[dict]) -> str:
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
        # Only a fleet says how many: a one-server lab's inputs stay what they always were.
        servers = {} if settings.server.count == 1 else {"HL_LAB_SERVERS": str(settings.server.count)}
        self.lab = command.local.Command(
            f"{name}-lab", create=f"{LAB} up", update=f"{LAB} up", delete=f"{LAB} down",
            environment={**where, **requested, **servers, "HL_LAB_STACK": identity.stack},
            # Another name or slot is another lab; a reboot took the lab away, so it is made again.
            triggers=[identity.name, str(settings.lab.slot), _boot_id()],
            # stdout carries the private key: keep it out of the update's log (stderr still shows).
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

        def public(key_path):
            return pulumi.Output.unsecret(info.apply(key_path))

        self.slot = public(lambda i: i["slot"])
        self.namespaces = public(lambda i: i["namespaces"])
        self.private_key = info.apply(lambda i: i["privateKey"])
        self.servers = [_LabHost(public, index) for index in range(settings.server.count)]
        self.register_outputs({"publicIp": self.servers[0].public_ip, "ipv6Addresses": self.servers[0].ipv6_addresses})


class _LabHost:
    """One server of the lab, as `hl-lab up` described it (its entry in `servers`)."""

    def __init__(self, public, index: int):
        def server(key_path):
            return public(lambda i: key_path(i["servers"][index]))

        self.public_ip = server(lambda s: s["ipv4"])
        self.ipv6_addresses = server(lambda s: [s["ipv6"]])
        self.namespace = server(lambda s: s["namespace"])
        self.ssh_command = public(lambda i: f"ssh -i {i['ssh']['privateKeyPath']} -o StrictHostKeyChecking=no "
                                            f"-o UserKnownHostsFile=/dev/null root@{i['servers'][index]['ipv4']}")


def lab_server_name(index: int) -> str:
    """`lab` for the first server (what a one-server lab always called it, so a lab that grows
    keeps its resources), then `lab-1`, `lab-2`, ..."""
    return "lab" if index == 0 else f"lab-{index}"


def make_lab_servers(settings: StackSettings, release: Release) -> list[ServerHandle]:
    lab = LabServer("lab", settings, release)
    handles = []
    for index, host in enumerate(lab.servers):
        handles.append(ServerHandle(
            # The host chain starts once the edge enforces the policy's cloud layer.
            name=lab_server_name(index), target=SshTarget(host=host.public_ip, user="root", private_key=lab.private_key),
            ready=lab.cloud_firewall,
            # The lab made again (another slot, a reboot) is a new server; so is one added to the lab.
            identity=lab.lab.id if index == 0 else pulumi.Output.concat(lab.lab.id, f"/server{index}"),
            public_ip=host.public_ip, ipv6_addresses=host.ipv6_addresses,
            probe_addresses=pulumi.Output.all(host.public_ip, host.ipv6_addresses).apply(lambda v: [v[0], *v[1]]),
            ssh_command=host.ssh_command, details={"labServerNamespace": host.namespace}))
    handles[0].extra_outputs = {
        "labServerNamespace": lab.namespaces.apply(lambda n: n["server"]),
        "labInternetNamespace": lab.namespaces.apply(lambda n: n["internet"]),
        "labAdminNamespace": lab.namespaces.apply(lambda n: n["admin"]),
        "labSlot": lab.slot}
    return handles
