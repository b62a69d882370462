"""Lints an existing, hand-written ruleset (`iptables-save` / rules.v4 format) for the classic
mistakes this project exists to prevent, so an operator can check what runs today:
`scripts/fw check --rules /etc/iptables/rules.v4`.

It reads the filter table into the same rule model the renderer uses and reports: rules that
can never match (a "trusted IP only" SSH rule after a general one), a chain nothing jumps to,
`-m state` instead of conntrack, LOG without a rate limit, and an INPUT that accepts by default."""
from __future__ import annotations

import shlex

from .analysis import ERROR, WARNING, Finding, shadow_findings
from .iptables_rules import Rule, Ruleset
from .networks import CidrError, parse_cidr
from .policy import PortRange

BUILTIN = ("INPUT", "FORWARD", "OUTPUT")


class RulesFileError(ValueError):
    """A line we can't read; the message names the line number."""


def _ports(text: str) -> PortRange:
    first, _, last = text.replace(":", "-").partition("-")
    return PortRange(int(first), int(last or first))


def _network(text: str):
    try:
        return parse_cidr(text if "/" in text else text + ("/128" if ":" in text else "/32"))
    except CidrError:
        from ipaddress import ip_network
        return ip_network(text, strict=False)


def _rule(tokens: list[str], line_number: int) -> Rule:
    chain, fields, matches, target, target_args = tokens[1], {}, [], None, []
    index, negate = 2, False
    while index < len(tokens):
        token = tokens[index]
        value = tokens[index + 1] if index + 1 < len(tokens) else None
        if token == "!":
            negate, index = True, index + 1
            continue
        if token in ("-j", "--jump"):
            target, target_args = value, tokens[index + 2:]
            break
        if token in ("-s", "--source") and not negate:
            fields["source"] = _network(value)
        elif token in ("-p", "--protocol") and not negate:
            fields["protocol"] = value
        elif token in ("--dport", "--destination-port") and not negate:
            fields["dports"] = _ports(value)
        elif token in ("-i", "--in-interface"):
            fields["not_in_interface" if negate else "in_interface"] = value
        elif token in ("--state", "--ctstate") and value and "NEW" not in value.split(","):
            fields["new_connections"] = False  # only established/related/invalid packets
            matches += [token, value]
        elif token == "--tcp-flags":  # a flag check: never decides a clean SYN
            fields["new_connections"] = False
            matches += ["!"] * negate + [token, value, tokens[index + 2]]
            index, negate = index + 3, False
            continue
        elif token == "--syn" and negate:  # "not a SYN": never a new connection's first packet
            fields["new_connections"] = False
            matches += ["!", token]
            index, negate = index + 1, False
            continue
        elif token == "-m" and value in ("comment",):
            index += 4  # -m comment --comment TEXT: says nothing about which packets match
            continue
        elif token.startswith("-") and value is not None and not value.startswith("-"):
            matches += ["!"] * negate + [token, value]
        else:
            matches += ["!"] * negate + [token]
            index, negate = index + 1, False
            continue
        index, negate = index + 2, False
    if target is None:
        raise RulesFileError(f"line {line_number}: no -j target: {' '.join(tokens)}")
    return Rule(chain, target, f"line {line_number}", matches=tuple(matches), target_args=tuple(target_args),
                **fields)


def parse_filter_table(text: str, family: int = 4) -> Ruleset:
    """The *filter table of an iptables-save / iptables-restore file."""
    ruleset = Ruleset(family=family, policies={})
    in_filter = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            in_filter = line == "*filter"
        elif not in_filter or line == "COMMIT":
            continue
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            if name in BUILTIN:
                ruleset.policies[name] = policy
            else:
                ruleset.chains.append(name)
        elif line.startswith("-A "):
            try:
                ruleset.add(_rule(shlex.split(line), number))
            except (ValueError, IndexError) as error:
                raise RulesFileError(f"line {number}: can't read `{line}` ({error})") from error
    return ruleset


def lint_ruleset(ruleset: Ruleset) -> list[Finding]:
    findings = list(shadow_findings([ruleset]))
    if ruleset.policies.get("INPUT", "ACCEPT") == "ACCEPT" and not any(
            r.chain == "INPUT" and r.target == "DROP" and not r.matches and r.source is None
            and r.protocol is None for r in ruleset.rules):
        findings.append(Finding(ERROR, "INPUT accepts whatever no rule drops: set `:INPUT DROP` (default deny)"))
    jumped = {rule.target for rule in ruleset.rules}
    for chain in ruleset.chains:
        if chain not in jumped:
            findings.append(Finding(WARNING, f"chain {chain} is never jumped to: its rules never run"))
    for rule in ruleset.rules:
        if (rule.target == "ACCEPT" and rule.protocol == "tcp" and rule.source is None and rule.new_connections
                and rule.dports is not None and rule.dports.contains(PortRange(22, 22)) and rule.chain == "INPUT"):
            findings.append(Finding(WARNING, f"{rule.why}: SSH (tcp/22) is accepted from anywhere; accept it only "
                                             "from the addresses you administer from"))
        if "state" in rule.matches and "--state" in rule.matches:
            findings.append(Finding(WARNING, f"{rule.why}: `-m state` is the old interface; use `-m conntrack --ctstate`"))
        if rule.target == "LOG" and "limit" not in rule.matches and "hashlimit" not in rule.matches:
            findings.append(Finding(WARNING, f"{rule.why}: LOG without -m limit: a flood fills the disk"))
    return sorted(findings, key=lambda f: f.level != ERROR)
