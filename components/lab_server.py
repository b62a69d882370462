"""LabServer, the lab twin of LightsailServer: a server made of network namespaces on this
machine (see lab/), whose edge enforces the same cloud layer Lightsail would.

Two commands, like an instance and its InstancePublicPorts: `lab` stands the lab up with
`server.count` servers (named for this checkout and stack; its slot allocated at the first `up`
and kept in the stack's state) and `cloud-firewall` loads the policy's cloud layer on the lab's
edge, which serves every server. A port change runs only the second, so the servers' addresses
and keys stay known in a preview; a changed count updates the lab in place (servers added or
removed, the others untouched)."""
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
from lab.identity import LabIdentity, slot_fix, stack_lab
from lab.layout import LabLayout

from .connection import SshTarget
from .host_key import HostKey
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
        self.layout = LabLayout(identity.state_dir)
        problems = slot_problems(identity, settings)  # before anything is registered
        for problem in problems:
            pulumi.log.error(problem)
        if problems:
            raise pulumi.RunError("the lab can't get its slot (see above); nothing was changed")
        super().__init__("hardened-lightsail:lab:LabServer", name, None, opts)
        returned = return_note(self.layout)
        if returned:  # a drill's release was rolled back: say what the edge lets in now
            pulumi.log.warn(f"lab {identity.name} ({returned['at']}): {returned['message']}")
        where = {"HL_LAB_NAME": identity.name, "HL_LAB_DIR": identity.relative_state_dir}
        requested = {} if settings.lab.slot is None else {"HL_LAB_SLOT": str(settings.lab.slot)}
        # Another name or slot is another lab; a reboot took the lab away, so it is made again.
        new_lab = [identity.name, str(settings.lab.slot), _boot_id()]
        # Each server's host key, made here and pinned like a Lightsail instance's (one per
        # server, as separate instances have): a new lab (any of the triggers above) gets new
        # ones; a server added to the lab gets its own.
        self.host_keys = [HostKey(f"{lab_server_name(index)}-host-key",
                                  server=identity.name if index == 0 else f"{identity.name}-server{index}",
                                  opts=pulumi.ResourceOptions(parent=self, replacement_trigger=new_lab))
                          for index in range(settings.server.count)]
        booting = {"HL_LAB_BOOT_SECONDS": str(settings.lab.boot_seconds)} if settings.lab.boot_seconds else {}
        self.lab = command.local.Command(
            f"{name}-lab", create=f"{LAB} up", update=f"{LAB} up", delete=f"{LAB} down",
            environment={**where, **requested, **booting, **_fleet_inputs(settings.server.count, self.host_keys),
                         "HL_LAB_STACK": identity.stack},
            triggers=new_lab,
            # stdout carries the private key: keep it out of the update's log (stderr still shows).
            # (The host keys in the environment are secret inputs: the engine shows them as [secret].)
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

        self.slot = public(lambda i: i["slot"])
        self.namespaces = public(lambda i: i["namespaces"])
        self.private_key = info.apply(lambda i: i["privateKey"])
        self.servers = [_LabHost(public, index) for index in range(settings.server.count)]
        self.register_outputs({"publicIp": self.servers[0].public_ip, "ipv6Addresses": self.servers[0].ipv6_addresses})


def _fleet_inputs(count: int, host_keys: list[HostKey]) -> dict[str, Any]:
    """How many servers and their host keys, for `hl-lab up`. A one-server lab's inputs stay what
    they always were (no count; HL_LAB_HOST_KEY, HL_LAB_HOST_PUBLIC_KEY), so its stacks show no
    change; a fleet's keys go as one secret JSON list of [private, public], in server order."""
    if count == 1:
        return {"HL_LAB_HOST_KEY": pulumi.Output.secret(host_keys[0].privateKey),
                "HL_LAB_HOST_PUBLIC_KEY": host_keys[0].publicKey}
    pairs = [pulumi.Output.all(key.privateKey, key.publicKey) for key in host_keys]
    return {"HL_LAB_SERVERS": str(count),
            "HL_LAB_HOST_KEYS": pulumi.Output.secret(pulumi.Output.all(*pairs).apply(json.dumps))}


class _LabHost:
    """One server of the lab, as `hl-lab up` described it (its entry in `servers`)."""

    def __init__(self, public: Callable[[Callable[[dict[str, Any]], Any]], pulumi.Output[Any]], index: int):
        def server(key_path: Callable[[dict[str, Any]], Any]) -> pulumi.Output[Any]:
            return public(lambda i: key_path(i["servers"][index]))

        self.public_ip = server(lambda s: s["ipv4"])
        self.ipv6_addresses = server(lambda s: [s["ipv6"]])
        self.namespace = server(lambda s: s["namespace"])
        self.ssh_command = public(lambda i: f"ssh -i {i['ssh']['privateKeyPath']} -o StrictHostKeyChecking=yes "
                                            f"-o UserKnownHostsFile={i['servers'][index]['knownHostsPath']} "
                                            f"root@{i['servers'][index]['ipv4']}")


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
            name=lab_server_name(index),
            # A booting lab server takes settings.lab.boot_seconds; give it the margin a real one gets.
            target=SshTarget(host=host.public_ip, user="root", private_key=lab.private_key,
                             host_key=lab.host_keys[index].publicKey,
                             first_boot_key_grace_seconds=settings.lab.boot_seconds + LAB_GRACE_SECONDS,
                             ready_timeout_seconds=settings.lab.boot_seconds + LAB_READY_SECONDS,
                             # Each server's own (lab/layout.py login_home), as on separate
                             # machines: servers of one lab never share a release copy.
                             home=str(lab.layout.server(index).login_home), on_this_machine=True),
            ready=lab.cloud_firewall,
            # The lab made again (another slot, a reboot) is a new server; so is one added to the lab.
            identity=lab.lab.id if index == 0 else pulumi.Output.concat(lab.lab.id, f"/server{index}"),
            public_ip=host.public_ip, ipv6_addresses=host.ipv6_addresses,
            probe_addresses=pulumi.Output.all(host.public_ip, host.ipv6_addresses).apply(lambda v: [v[0], *v[1]]),
            ssh_command=host.ssh_command, details={"labServerNamespace": host.namespace},
            # What anyone else sees is measured from the lab's internet namespace (the lab's vantage).
            outside_namespace=lab.namespaces.apply(lambda n: n["internet"]), component=lab))
    handles[0].extra_outputs = {
        "labServerNamespace": lab.namespaces.apply(lambda n: n["server"]),
        "labInternetNamespace": lab.namespaces.apply(lambda n: n["internet"]),
        "labAdminNamespace": lab.namespaces.apply(lambda n: n["admin"]),
        "labSlot": lab.slot}
    return handles
