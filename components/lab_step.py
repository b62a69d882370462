"""Deployer-side commands of LabServer, run by pulumi-command local.Command (`scripts/hl-lab`).

up    stands the lab up (or refreshes it: the edge reloads the cloud layer) and prints its
      description plus the deployer's private key as JSON (LabServer keeps stdout secret);
down  removes everything the lab made. Both are idempotent."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from lab.errors import LabError
from lab.lifecycle import lab_down, lab_up


def up(env=os.environ) -> int:
    # The edge keeps its own copy of the cloud layer in force; ours is only the hand-over.
    with tempfile.NamedTemporaryFile("w", suffix=".json") as cloud_ports:
        cloud_ports.write(env["HL_CLOUD_PORTS"])
        cloud_ports.flush()
        lab = lab_up(env["HL_LAB_NAME"], Path(env["HL_LAB_DIR"]), int(env["HL_LAB_SLOT"]),
                     cloud_ports=cloud_ports.name)
    description = lab.describe()
    description["privateKey"] = Path(description["ssh"]["privateKeyPath"]).read_text()
    print(json.dumps(description))
    return 0


def down(env=os.environ) -> int:
    print(json.dumps(lab_down(env["HL_LAB_NAME"], Path(env["HL_LAB_DIR"]))))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"up": up, "down": down}
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
