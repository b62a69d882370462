"""`scripts/fw`: the operator's command line (render, check; more as issues ask).

Exit codes: 0 fine; 2 for anything the user must fix (bad config, lock-out, layers disagree),
printed one problem per line without a traceback."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .analysis import ERROR, Finding, analyse, errors
from .config import ConfigError, load_stack_file
from .effective_settings import effective_settings
from .exposure import exposure_table, format_table
from .release import render_release

PROJECT_DIR = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_USAGE = 0, 2


def _stack_file(args) -> Path:
    if args.config:
        return Path(args.config)
    return PROJECT_DIR / f"Pulumi.{args.stack}.yaml"


def _load(args):
    """The settings and release `pulumi up` would use for this stack file (target additions included)."""
    settings = effective_settings(load_stack_file(_stack_file(args)))
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
    if args.rules or args.rules6:
        return cmd_lint_rules(args)
    if not (args.stack or args.config):
        print("error: check needs --stack NAME, --config FILE, or --rules FILE (an existing ruleset)", file=sys.stderr)
        return EXIT_USAGE
    settings, release = _load(args)
    findings = analyse(settings.firewall, release)
    print(format_table(exposure_table(settings.firewall, release)))
    print()
    for finding in findings:
        print(finding)
    counts = {level: sum(f.level == level for f in findings) for level in (ERROR, "warning")}
    print(f"release {release.hash}: {counts[ERROR]} error(s), {counts['warning']} warning(s)")
    return EXIT_USAGE if counts[ERROR] else EXIT_OK


def cmd_lint_rules(args) -> int:
    """Lint a hand-written ruleset (what runs on a server today) for the classic mistakes."""
    from .rules_lint import RulesFileError, lint_ruleset, parse_filter_table
    findings = []
    for path, family in ((args.rules, 4), (args.rules6, 6)):
        if not path:
            continue
        try:
            findings += lint_ruleset(parse_filter_table(Path(path).read_text(), family))
        except (OSError, RulesFileError) as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            return EXIT_USAGE
    if not args.rules6:
        findings.append(Finding("warning", "no IPv6 rules given (--rules6): on a dual-stack host every port "
                                           "ip6tables doesn't filter is open over IPv6"))
    for finding in findings:
        print(finding)
    errors_found = sum(f.level == ERROR for f in findings)
    print(f"{errors_found} error(s), {len(findings) - errors_found} warning(s)")
    return EXIT_USAGE if errors_found else EXIT_OK


def _add_source(parser: argparse.ArgumentParser, required: bool = True) -> None:
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--stack", help="read Pulumi.STACK.yaml from the project directory")
    source.add_argument("--config", help="read a file in the Pulumi.<stack>.yaml format")


def _add_trial(commands) -> None:
    """`fw trial`: a disposable copy of a stack, up -> verify -> destroy (hardened_lightsail/trial.py)."""
    def run(args) -> int:
        from .trial import cmd_trial  # the Automation API loads only when a trial runs
        return cmd_trial(args)
    trial = commands.add_parser("trial", help="stand up a disposable copy of a stack, verify it, destroy it")
    trial.add_argument("--stack", default="lab", help="the base stack whose config the trial copies (default: lab)")
    trial.add_argument("--ttl", default="2h", help="how long a kept (or abandoned) trial may live: 2h, 90m, 1d")
    trial.add_argument("--keep", action="store_true", help="leave the trial up, tagged with its expiry")
    trial.add_argument("--reap", nargs="?", const="", metavar="NAME",
                       help="destroy every trial whose expiry has passed (with NAME: that trial, expired or not)")
    trial.add_argument("--now", action="store_true", help="with --reap: destroy every trial, expired or not")
    trial.add_argument("--in-lab", action="store_true",
                       help="try the base stack's firewall policy in the local lab (its lab twin: the lab's "
                            "admin CIDRs are added, SSH stays on 22); for a Lightsail stack's PR preview")
    trial.set_defaults(run=run)


def _add_diff(commands) -> None:
    """`fw diff`: markdown for a PR comment, base ref vs working tree (hardened_lightsail/policy_diff.py)."""
    from . import policy_diff

    def run(args) -> int:
        return policy_diff.cmd_diff(args, _stack_file(args))

    def max_chars(text: str) -> int:
        value = int(text)
        if value < policy_diff.MIN_MAX_CHARS:
            raise argparse.ArgumentTypeError(f"at least {policy_diff.MIN_MAX_CHARS}")
        return value
    diff = commands.add_parser("diff", help="markdown for a PR: what a policy change opens and closes, per layer",
                               description=policy_diff.HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_source(diff)
    diff.add_argument("--base", required=True, metavar="REF",
                      help="git ref to compare with (e.g. origin/main), in the repository of the stack file")
    diff.add_argument("--max-chars", type=max_chars, default=policy_diff.DEFAULT_MAX_CHARS,
                      help=f"longest output, in characters (default {policy_diff.DEFAULT_MAX_CHARS:,}; "
                           "a GitHub comment holds 65,536)")
    diff.set_defaults(run=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fw", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="write rules.v4, rules.v6, cloud-ports.json (+ ipsets)")
    _add_source(render)
    render.add_argument("--out", required=True, help="directory to write the release into")
    render.set_defaults(run=cmd_render)
    check = commands.add_parser("check", help="lint the policy and print its exposure table, or lint an "
                                               "existing ruleset with --rules/--rules6")
    _add_source(check, required=False)
    check.add_argument("--rules", help="an iptables-save / rules.v4 file to lint instead of a policy")
    check.add_argument("--rules6", help="the matching ip6tables-save / rules.v6 file")
    check.set_defaults(run=cmd_check)
    _add_trial(commands)
    _add_diff(commands)
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
