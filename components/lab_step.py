"""Deployer-side commands of LabServer, run by pulumi-command local.Command (`scripts/hl-lab`).

up     stands the lab up with HL_LAB_SERVERS servers (default 1), or completes it, adding or
       removing servers to match, and prints its description plus the deployer's private key
       as JSON (LabServer keeps stdout secret). Its slot: `lab.slot` if the stack sets one,
       else the one the stack's state recorded (PULUMI_COMMAND_STDOUT, on an update), else the
       lowest free one; the edge keeps the cloud layer it has (a new lab starts with
       Lightsail's default until `cloud` runs). The servers' host keys are the stack's: a
       one-server lab's in HL_LAB_HOST_KEY and HL_LAB_HOST_PUBLIC_KEY, a fleet's in
       HL_LAB_HOST_KEYS (a JSON list of [private, public], one per server, in order); with
       HL_LAB_BOOT_SECONDS every new server boots.
cloud  loads the policy's cloud layer on the lab's edge and prints what it opens.
down   removes everything the lab made. All three are idempotent."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from lab.boot import BootPlan
from lab.cloud_layer import describe_open_ports, load_cloud_layer
from lab.edge_follower import forget_return
from lab.errors import LabError
from lab.identity import slot_fix, stack_lab
from lab.lifecycle import lab_down, lab_for, lab_up


def recorded_slot(previous_stdout: str | None) -> int | None:
    """The slot in the stack's state: the last `up`'s output (only the slot is read from it)."""
    try:
        slot = json.loads(previous_stdout or "")["slot"]
    except (ValueError, KeyError, TypeError):
        return None
    return slot if isinstance(slot, int) else None


def host_keys(env: Mapping[str, str]) -> list[tuple[str, str]] | None:
    """The stack's host keys for the lab's servers, in order (None: the lab makes its own)."""
    if env.get("HL_LAB_HOST_KEYS"):
        return [(private, public) for private, public in json.loads(env["HL_LAB_HOST_KEYS"])]
    if env.get("HL_LAB_HOST_KEY"):
        return [(env["HL_LAB_HOST_KEY"], env["HL_LAB_HOST_PUBLIC_KEY"])]
    return None


def up(env: Mapping[str, str] = os.environ) -> int:
    requested = int(env["HL_LAB_SLOT"]) if env.get("HL_LAB_SLOT") else None
    owner = stack_lab(Path.cwd(), env["HL_LAB_STACK"]).owner  # run in the checkout, as the engine does
    servers = int(env.get("HL_LAB_SERVERS") or 1)
    boot_seconds = float(env.get("HL_LAB_BOOT_SECONDS") or 0)
    try:
        lab = lab_up(env["HL_LAB_NAME"], Path(env["HL_LAB_DIR"]), requested,
                     preferred_slot=recorded_slot(env.get("PULUMI_COMMAND_STDOUT")), owner=owner,
                     keep_cloud_layer=True, servers=servers, host_keys=host_keys(env),
                     boot=BootPlan(boot_seconds) if boot_seconds > 0 else None)
    except LabError as error:
        raise LabError(slot_fix(error, env["HL_LAB_STACK"])) from None
    description = lab.describe()
    description["privateKey"] = Path(description["ssh"]["privateKeyPath"]).read_text()
    print(json.dumps(description))
    return 0


def cloud(env: Mapping[str, str] = os.environ) -> int:
    lab = lab_for(env["HL_LAB_NAME"], Path(env["HL_LAB_DIR"]))
    open_ports = describe_open_ports(load_cloud_layer(lab, env["HL_CLOUD_PORTS"]))
    forget_return(lab.layout)
    print(f"lab edge {lab.name} enforces {env['HL_CLOUD_PORTS']}: {open_ports} (if the host rolls this "
          "release back, the edge goes back to the host's layer)")
    return 0


def down(env: Mapping[str, str] = os.environ) -> int:
    print(json.dumps(lab_down(env["HL_LAB_NAME"], Path(env["HL_LAB_DIR"]))))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"up": up, "cloud": cloud, "down": down}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: hl-lab {{{'|'.join(commands)}}}", file=sys.stderr)
        return 2
    try:
        return commands[argv[0]]()
    except LabError as error:
        print(f"lab: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
