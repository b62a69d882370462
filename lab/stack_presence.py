"""Is the lab a lab stack records still on this machine? (scripts/lab-up)

A lab torn down outside the engine (`hl-lab down` by hand, a reboot) leaves its stack recording
a lab that is gone: a plain `up` then changes nothing, and the stack's outputs still say
"verified". lab-up asks the engine to make it again instead: `up --replace` of the stack's lab
resource (which goes down first, then up), and every server is redeployed and verified.

    scripts/pulumi stack export -s STACK | python -m lab.stack_presence
prints the URN to replace, or nothing when the lab is there (or the stack has none yet)."""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from .netns import lab_namespaces

LAB_SERVER_TYPE = "hardened-lightsail:lab:LabServer"
STACK_TYPE = "pulumi:pulumi:Stack"


def recorded_server_namespaces(outputs: dict[str, Any]) -> set[str]:
    """Every lab server namespace the stack's outputs name (one server, or a fleet's `servers`)."""
    named = {outputs.get("labServerNamespace")}
    named |= {server.get("labServerNamespace") for server in outputs.get("servers") or [] if isinstance(server, dict)}
    return {name for name in named if isinstance(name, str) and name}


def lab_resource_to_replace(export: dict[str, Any], present: Iterable[str]) -> str | None:
    """The URN of the stack's lab resource when a server namespace it recorded is gone."""
    resources = (export.get("deployment") or {}).get("resources") or []
    stack = next((r for r in resources if r.get("type") == STACK_TYPE), None)
    recorded = recorded_server_namespaces((stack or {}).get("outputs") or {})
    if not recorded or recorded <= set(present):
        return None
    labs = {r["urn"] for r in resources if r.get("type") == LAB_SERVER_TYPE}
    for resource in resources:  # the lab command: LabServer's child that runs `hl-lab up`
        if resource.get("parent") in labs and resource.get("type") == "command:local:Command" \
                and str((resource.get("inputs") or {}).get("create", "")).endswith("hl-lab up"):
            return str(resource["urn"])
    return None


def main() -> int:
    text = sys.stdin.read()
    export = json.loads(text) if text.strip() else {}
    urn = lab_resource_to_replace(export, lab_namespaces())
    if urn:
        print(urn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
