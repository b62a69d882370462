"""`scripts/fw`: the operator's command line (render, check, diff, logs, trial).

Exit codes: 0 fine; 2 for anything the user must fix (bad config, lock-out, layers disagree),
printed one problem per line without a traceback."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .analysis import ERROR, Finding, analyse, errors
from .config import ConfigError, load_stack_file
from .effective_settings import effective_settings
from .exposure import ExposureRow, exposure_table, format_table
from .host_error import HostError
from .policy import StackSettings
from .release import Release, render_release

PROJECT_DIR = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_USAGE = 0, 2


def _stack_file(args: argparse.Namespace) -> Path:
    if args.config:
        return Path(args.config)
    return PROJECT_DIR / f"Pulumi.{args.stack}.yaml"


def _load(args: argparse.Namespace) -> tuple[StackSettings, Release]:
    """The settings and release `pulumi up` would use for this stack file (target additions included)."""
    settings = effective_settings(load_stack_file(_stack_file(args)))
    return settings, render_release(settings.firewall)


def cmd_render(args: argparse.Namespace) -> int:
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


def cmd_check(args: argparse.Namespace) -> int:
    if args.host:
        from .server_commands import cmd_check_host  # ssh only when a host is read
        return cmd_check_host(args)
    if args.rules or args.rules6:
        if args.stack or args.config:
            print("error: check lints either a policy (--stack/--config) or an existing ruleset (--rules), "
                  "not both: run it twice", file=sys.stderr)
            return EXIT_USAGE
        return cmd_lint_rules(args)
    if not (args.stack or args.config):
        print("error: check needs --stack NAME, --config FILE, --rules FILE (an existing ruleset) or "
              "--host USER@ADDRESS (a running server)", file=sys.stderr)
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


def print_lint(findings: list[Finding], rows: list[ExposureRow]) -> int:
    """Print the lint of a server's rules (rules_lint.format_lint); exit 2 when there are errors."""
    from .rules_lint import format_lint
    print(format_lint(findings, rows), end="")
    return EXIT_USAGE if errors(findings) else EXIT_OK


def cmd_lint_rules(args: argparse.Namespace) -> int:
    """Lint saved rulesets (what runs on a server today) for the classic mistakes."""
    from .rule_conditions import HostFacts
    from .rules_lint import lint_rulesets
    from .saved_rules import parse_ipset_save, parse_saved_ruleset
    if not args.rules:
        print("error: --rules6 needs --rules (the IPv4 rules) too", file=sys.stderr)
        return EXIT_USAGE
    texts = {}
    for option, path in (("--rules", args.rules), ("--rules6", args.rules6), ("--ipsets", args.ipsets)):
        if path:
            try:
                texts[option] = Path(path).read_text()
            except (OSError, UnicodeDecodeError) as error:
                print(f"error: {option} {path}: can't read it ({error})", file=sys.stderr)
                return EXIT_USAGE
    facts = HostFacts(sets=parse_ipset_save(texts["--ipsets"]) if args.ipsets else None)
    v4 = parse_saved_ruleset(texts["--rules"], 4, label=args.rules, facts=facts)
    v6 = parse_saved_ruleset(texts["--rules6"], 6, label=args.rules6, facts=facts) if args.rules6 else None
    findings, rows = lint_rulesets(v4, v6)
    return print_lint(findings, rows)


def _add_ssh_options(parser: argparse.ArgumentParser) -> None:
    ssh = parser.add_argument_group("reading a server over SSH (read-only; sudo -n when not root)")
    ssh.add_argument("--identity", metavar="FILE", help="private key for SSH (default: your ssh config and agent)")
    ssh.add_argument("--known-hosts", metavar="FILE", help="check the host key against this known_hosts file "
                                                           "(default: your own; an unknown key is refused)")
    ssh.add_argument("--ssh-port", type=int, metavar="N", help="SSH port (default: your ssh config, or 22)")


def _add_source(parser: argparse.ArgumentParser, required: bool = True) -> None:
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--stack", help="read Pulumi.STACK.yaml from the project directory")
    source.add_argument("--config", help="read a file in the Pulumi.<stack>.yaml format")


def _add_trial(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`fw trial`: a disposable copy of a stack, up -> verify -> destroy (hardened_lightsail/trial.py)."""
    def run(args: argparse.Namespace) -> int:
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


def _add_diff(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`fw diff`: markdown for a PR comment, base ref vs working tree (hardened_lightsail/policy_diff.py),
    or a running server's live rules vs the stack's policy (--from-host, host_diff.py)."""
    from . import policy_diff

    def run(args: argparse.Namespace) -> int:
        if args.from_host:
            from .server_commands import cmd_diff_from_host
            return cmd_diff_from_host(args, _stack_file(args))
        return policy_diff.cmd_diff(args, _stack_file(args))

    def max_chars(text: str) -> int:
        value = int(text)
        if value < policy_diff.MIN_MAX_CHARS:
            raise argparse.ArgumentTypeError(f"at least {policy_diff.MIN_MAX_CHARS}")
        return value
    diff = commands.add_parser("diff", help="markdown for a PR: what a policy change opens and closes, per layer",
                               description=policy_diff.HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_source(diff)
    compared = diff.add_mutually_exclusive_group(required=True)
    compared.add_argument("--base", metavar="REF",
                          help="git ref to compare with (e.g. origin/main), in the repository of the stack file")
    compared.add_argument("--from-host", metavar="USER@ADDRESS",
                          help="compare with the rules a running server has now (read over SSH, read-only)")
    diff.add_argument("--max-chars", type=max_chars, default=policy_diff.DEFAULT_MAX_CHARS,
                      help=f"longest output, in characters (default {policy_diff.DEFAULT_MAX_CHARS:,}; "
                           "a GitHub comment holds 65,536)")
    _add_ssh_options(diff)
    diff.set_defaults(run=run)


def _add_logs(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`fw logs`: the host's dropped-packet log lines, summarized (drop_log.py, server_commands.py)."""
    def run(args: argparse.Namespace) -> int:
        from .server_commands import cmd_logs
        return cmd_logs(args, _stack_file(args) if args.stack or args.config else None)

    def minutes(text: str) -> int:
        value = int(text)
        if not 1 <= value <= 10080:
            raise argparse.ArgumentTypeError("from 1 to 10080 (a week)")
        return value
    logs = commands.add_parser("logs", help="summarize the dropped-packet log lines of a stack's server or a host",
                               description="Reads the kernel log of dropped packets (the LOG rule's prefix, "
                                           "e.g. firewall.dropLog.prefix) over SSH, read-only: journalctl -k, "
                                           "else dmesg, else /var/log/kern.log, and prints the top sources, ports "
                                           "and protocols, IPv4 and IPv6, and whether the LOG rate limit was reached.")
    policy = logs.add_mutually_exclusive_group()
    policy.add_argument("--stack", help="the stack's first server (its outputs publicIp/sshCommand, through "
                                        "scripts/pulumi) and its dropLog.prefix (Pulumi.STACK.yaml)")
    policy.add_argument("--config", help="the dropLog.prefix of a stack file elsewhere (with --host)")
    logs.add_argument("--host", metavar="USER@ADDRESS", help="read this server (default with --stack: the "
                                                             "stack's; alone: every prefix its LOG rules use)")
    logs.add_argument("--minutes", type=minutes, default=60, help="how far back to look (default 60)")
    logs.add_argument("--prefix", help="the log prefix to count (default: the stack's dropLog.prefix, or every "
                                       "prefix the host's LOG rules use)")
    logs.add_argument("--top", type=int, default=10, help="rows per table (default 10)")
    _add_ssh_options(logs)
    logs.set_defaults(run=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fw", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="write rules.v4, rules.v6, cloud-ports.json (+ ipsets)")
    _add_source(render)
    render.add_argument("--out", required=True, help="directory to write the release into")
    render.set_defaults(run=cmd_render)
    check = commands.add_parser("check", help="lint the policy and print its exposure table, or lint an "
                                               "existing ruleset with --rules/--rules6 or a server's live rules "
                                               "with --host")
    _add_source(check, required=False)
    check.add_argument("--rules", help="an iptables-save / rules.v4 file to lint instead of a policy")
    check.add_argument("--rules6", help="the matching ip6tables-save / rules.v6 file")
    check.add_argument("--ipsets", help="the matching `ipset save` output (the sets the rules name)")
    check.add_argument("--host", metavar="USER@ADDRESS", help="lint the live rules of a running server, read "
                                                              "over SSH (read-only)")
    _add_ssh_options(check)
    check.set_defaults(run=cmd_check)
    _add_trial(commands)
    _add_diff(commands)
    _add_logs(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except HostError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
