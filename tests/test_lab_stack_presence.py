"""scripts/lab-up makes a lab again when its stack records one this machine no longer has
(lab/stack_presence.py): the resource to replace is found in `stack export`'s JSON."""
from __future__ import annotations

from lab.stack_presence import lab_resource_to_replace

STACK = "urn:pulumi:lab::hardened-lightsail::pulumi:pulumi:Stack::hardened-lightsail-lab"
LAB_SERVER = "urn:pulumi:lab::hardened-lightsail::hardened-lightsail:lab:LabServer::lab"
LAB_COMMAND = "urn:pulumi:lab::hardened-lightsail::hardened-lightsail:lab:LabServer$command:local:Command::lab-lab"
EDGE_COMMAND = "urn:pulumi:lab::hardened-lightsail::hardened-lightsail:lab:LabServer$command:local:Command::lab-cloud-firewall"


def export(outputs: dict) -> dict:
    """The parts of `pulumi stack export` that matter here (a fleet of two servers, or one)."""
    return {"deployment": {"resources": [
        {"urn": STACK, "type": "pulumi:pulumi:Stack", "outputs": outputs},
        {"urn": LAB_SERVER, "type": "hardened-lightsail:lab:LabServer", "parent": STACK},
        {"urn": EDGE_COMMAND, "type": "command:local:Command", "parent": LAB_SERVER,
         "inputs": {"create": "scripts/hl-lab cloud"}},
        {"urn": LAB_COMMAND, "type": "command:local:Command", "parent": LAB_SERVER,
         "inputs": {"create": "scripts/hl-lab up"}},
    ]}}


FLEET = {"labServerNamespace": "hl-lab-e26d-srv",
         "servers": [{"labServerNamespace": "hl-lab-e26d-srv"}, {"labServerNamespace": "hl-lab-e26d-srv1"}]}


def test_a_lab_that_is_all_there_is_left_alone():
    assert lab_resource_to_replace(export(FLEET), ["hl-lab-e26d-srv", "hl-lab-e26d-srv1", "hl-lab-e26d-edge"]) is None


def test_a_missing_server_namespace_names_the_lab_command_not_the_edge():
    assert lab_resource_to_replace(export(FLEET), ["hl-lab-e26d-srv"]) == LAB_COMMAND
    assert lab_resource_to_replace(export({"labServerNamespace": "hl-lab-e26d-srv"}), []) == LAB_COMMAND


def test_a_new_stack_or_one_without_a_lab_asks_for_nothing():
    assert lab_resource_to_replace({}, []) is None  # `stack export` of a stack never deployed
    assert lab_resource_to_replace({"deployment": {"resources": []}}, []) is None
    assert lab_resource_to_replace(export({"publicIp": "203.0.113.10"}), []) is None  # no lab output
