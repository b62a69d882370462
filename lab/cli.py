"""`python -m lab`: stand a lab up, take it down, show it, or re-point its cloud firewall.

Every command prints JSON on stdout. Errors are one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .cloud_layer import load_cloud_layer
from .errors import LabError
from .lifecycle import describe_running, lab_down, lab_for, lab_status, lab_up
from .slots import registered_labs
from .topology import MAX_SERVERS

EXIT_ERROR = 2
CLOUD_PORTS_HELP = ("cloud-ports.json for the edge (the list given to InstancePublicPorts.port_infos); "
                    "absent or empty: Lightsail's default, tcp 22 and 80 open to everyone")


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m lab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

    up = commands.add_parser("up", help="create the lab, or complete it if it exists (idempotent)")
    up.add_argument("--name", required=True, help="lab name: 1-24 of a-z 0-9 -")
    up.add_argument("--dir", required=True, help="lab state directory (keys, configs, pid files, logs)")
    up.add_argument("--slot", type=int, help="address slot 0-15 (default: the lowest free one)")
    up.add_argument("--cloud-ports", help=CLOUD_PORTS_HELP)
    up.add_argument("--servers", type=int, default=1,
                    help=f"how many servers, 1-{MAX_SERVERS}, behind the one edge (default 1; a running lab "
                         "gains or loses servers to match)")

    down = commands.add_parser("down", help="remove the lab and its runtime files (idempotent)")
    down.add_argument("--name", required=True)
    down.add_argument("--dir", required=True)

    status = commands.add_parser("status", help="what exists of the lab; exit 0 only when it is up")
    status.add_argument("--name", required=True)
    status.add_argument("--dir", required=True)

    cloud = commands.add_parser("cloud", help="reload the edge's cloud-layer rules (atomic)")
    cloud.add_argument("--name", required=True)
    cloud.add_argument("--cloud-ports", required=True, help=CLOUD_PORTS_HELP)
    cloud.add_argument("--dir", help="lab state directory (default: from the slot registry)")

    commands.add_parser("list", help="the labs in the slot registry")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "up":
        result = describe_running(lab_up(args.name, args.dir, args.slot, args.cloud_ports, servers=args.servers))
    elif args.command == "down":
        result = lab_down(args.name, args.dir)
    elif args.command == "status":
        result = lab_status(args.name, args.dir)
    elif args.command == "cloud":
        lab = lab_for(args.name, args.dir)
        load_cloud_layer(lab, args.cloud_ports)
        result = describe_running(lab)
    else:
        result = {str(slot): entry for slot, entry in sorted(registered_labs().items())}
    print(json.dumps(result, indent=2))
    return 1 if args.command == "status" and result["state"] != "up" else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (it creates network namespaces): run it as root")
        return _run(args)
    except LabError as error:
        print(f"lab: error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
    except Exception as error:  # a bug: still one line, with what to send in a report
        if os.environ.get("HL_LAB_DEBUG"):
            raise
        print(f"lab: internal error: {type(error).__name__}: {error} (rerun with HL_LAB_DEBUG=1 "
              "for the traceback)", file=sys.stderr)
    return EXIT_ERROR
