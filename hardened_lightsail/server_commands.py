"""The `fw` commands that read a running server over SSH: `check --host`, `diff --from-host` and
`logs`. They read (live_host.py) and hand the text to the pure analysis (rules_lint, host_diff,
drop_log); nothing here changes the server."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .analysis import analyse
from .config import load_stack_file
from .drop_log import format_summary, log_rules, summarize
from .effective_settings import effective_settings
from .exposure import ExposureRow
from .findings import WARNING, Finding
from .host_diff import compare_with_host, host_diff_markdown
from .host_error import HostError
from .live_host import LiveRules, SshTarget, read_log, read_rules, target_from_stack
from .policy_diff import stack_name_of
from .release import render_release
from .rules_lint import lint_rulesets


def _target(args: argparse.Namespace, host: str) -> SshTarget:
    return SshTarget.parse(host, identity=args.identity, known_hosts=args.known_hosts, port=args.ssh_port)


def live_findings(live: LiveRules) -> tuple[list[Finding], list[ExposureRow]]:
    """Lint of the live rules, with what only a live read can tell."""
    findings, rows = lint_rulesets(live.v4, live.v6)
    if live.other_nft_tables:
        findings.append(Finding(WARNING, f"{live.target}: nftables table{'s' if len(live.other_nft_tables) > 1 else ''} "
                                         f"{', '.join(live.other_nft_tables)} filter{'' if len(live.other_nft_tables) > 1 else 's'} "
                                         "packets too (`nft list ruleset`); this analysis reads iptables only"))
    # sshd behind the firewall: a password login is one guess away for anyone the rules let reach SSH.
    findings += [Finding(WARNING, f"{live.target}: {warning}") for warning in live.sshd_warnings]
    if live.legacy_tables_too:
        findings.append(Finding(WARNING, f"{live.target}: iptables-legacy tables are loaded as well as the nft ones: "
                                         "packets go through both; read them with iptables-legacy-save"))
    return findings, rows


def cmd_check_host(args: argparse.Namespace) -> int:
    from .cli import print_lint  # the same output as `fw check --rules`
    if args.rules or args.rules6 or args.stack or args.config:
        raise HostError("--host reads the rules from the server: leave out --rules/--rules6/--stack/--config")
    live = read_rules(_target(args, args.host))
    sets = f"{len(live.v4.facts.sets or {})} ipset(s)" if live.ipsets_read else "ipsets not read"
    print(f"live rules of {live.target}: iptables-save {len(live.v4.rules)} filter rules, ip6tables-save "
          f"{len(live.v6.rules)}, {sets} (line numbers: `sudo iptables-save | cat -n`)")
    if live.sshd_settings:
        print(f"sshd: {live.sshd_settings}")
    print()
    findings, rows = live_findings(live)
    return print_lint(findings, rows)


def cmd_diff_from_host(args: argparse.Namespace, stack_file: Path) -> int:
    """Markdown: the stack's policy against the server's live rules; exit 0 (it is a report). The
    policy is the one `pulumi up` renders (effective_settings: a lab stack's deployer addresses),
    so the release hash and the lock-out lint agree with `fw check` and `fw diff --base`."""
    settings = effective_settings(load_stack_file(stack_file))
    release = render_release(settings.firewall)
    live = read_rules(_target(args, args.from_host))
    findings, _ = live_findings(live)
    changes = compare_with_host(settings.firewall, release, (live.v4, live.v6))
    sys.stdout.write(host_diff_markdown(args.stack or stack_name_of(stack_file), str(live.target), release, changes,
                                        findings, analyse(settings.firewall, release), args.max_chars))
    return 0


def cmd_logs(args: argparse.Namespace, stack_file: Path | None) -> int:
    prefix = args.prefix
    if (args.stack or args.config) and stack_file is not None:
        policy = load_stack_file(stack_file).firewall
        prefix = prefix or policy.drop_log.prefix
    if args.host:
        target = _target(args, args.host)
    elif args.stack:
        target = target_from_stack(args.stack, identity=args.identity, known_hosts=args.known_hosts,
                                   port=args.ssh_port)
    else:
        raise HostError("which server? give --stack NAME (its first server) or --host USER@ADDRESS")
    live, log = read_log(target, args.minutes)
    logging = log_rules([live.v4, live.v6])
    prefixes = [prefix] if prefix else sorted(logging) or [""]
    for index, name in enumerate(prefixes):
        rules = logging.get(name, {})
        if not rules:
            print(f"note: no LOG rule on {target} uses the prefix \"{name}\": nothing is logged with it"
                  + (f" (its LOG rules use {', '.join(repr(p) for p in sorted(logging))})" if logging else
                     " (it has no LOG rule at all)"))
        limits = {family: entries[0][1] for family, entries in rules.items()
                  if len(entries) == 1 and entries[0][1] is not None}
        summary = summarize(log, name, args.minutes, limits)
        print(("\n" if index else "") + format_summary(summary, str(target), args.top), end="")
    return 0
