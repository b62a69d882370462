"""`scripts/fw`: the operator's command line (render, check; more as issues ask).

Exit codes: 0 fine; 2 for anything the user must fix (bad config, lock-out, layers disagree),
printed one problem per line without a traceback."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .analysis import ERROR, analyse, errors
from .config import ConfigError, load_stack_file
from .exposure import exposure_table, format_table
from .release import render_release

PROJECT_DIR = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_USAGE = 0, 2


def _stack_file(args) -> Path:
    if args.config:
        return Path(args.config)
    return PROJECT_DIR / f"Pulumi.{args.stack}.yaml"


def _load(args):
    settings = load_stack_file(_stack_file(args))
    return settings, render_release(settings.firewall)


def cmd_render(args) -> int:
    settings, release = _load(args)
    findings = analyse(settings.firewall, release)
    for finding in findings:
        print(finding, file=sys.stderr)
    if errors(findings):
        return EXIT_USAGE
    out = Path(args.out)
    release.write(out)
    print(f"release {release.hash}: wrote {', '.join(sorted(release.files))} to {out}")
    return EXIT_OK


def cmd_check(args) -> int:
    settings, release = _load(args)
    findings = analyse(settings.firewall, release)
    print(format_table(exposure_table(settings.firewall, release)))
    print()
    for finding in findings:
        print(finding)
    counts = {level: sum(f.level == level for f in findings) for level in (ERROR, "warning")}
    print(f"release {release.hash}: {counts[ERROR]} error(s), {counts['warning']} warning(s)")
    return EXIT_USAGE if counts[ERROR] else EXIT_OK


def _add_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", help="read Pulumi.STACK.yaml from the project directory")
    source.add_argument("--config", help="read a file in the Pulumi.<stack>.yaml format")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fw", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="write rules.v4, rules.v6, cloud-ports.json (+ ipsets)")
    _add_source(render)
    render.add_argument("--out", required=True, help="directory to write the release into")
    render.set_defaults(run=cmd_render)
    check = commands.add_parser("check", help="lint the policy and print its exposure table")
    _add_source(check)
    check.set_defaults(run=cmd_check)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
