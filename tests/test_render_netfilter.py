"""Every golden rules file is loadable by the real iptables: `--test` first, then for real, in a
network namespace this test creates and deletes (never the machine's own firewall).

Needs root, iproute2, iptables/ip6tables and ipset; run just these with
    .venv/bin/python -m pytest -m netfilter"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess

import pytest

from golden_cases import GOLDEN_DIR, case_names, load_case

TOOLS = ("ip", "iptables-restore", "ip6tables-restore", "iptables", "ip6tables", "ipset")
pytestmark = [
    pytest.mark.netfilter,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace"),
    pytest.mark.skipif(any(shutil.which(tool) is None for tool in TOOLS),
                       reason=f"needs all of: {', '.join(TOOLS)}"),
]
NAMESPACE_PREFIX = "hl-golden-"


def run(argv: list[str], stdin: bytes | None = None) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(argv)} failed: {result.stderr.decode().strip()}"
    return result.stdout.decode()


class Namespace:
    """A private network namespace; every firewall command goes through `exec`, never the host."""

    def __init__(self, name: str):
        assert name.startswith(NAMESPACE_PREFIX)
        self.name = name

    def exec(self, *argv: str, stdin: bytes | None = None) -> str:
        return run(["ip", "netns", "exec", self.name, *argv], stdin=stdin)


@pytest.fixture
def namespace(request):
    name = f"{NAMESPACE_PREFIX}{secrets.token_hex(4)}"
    run(["ip", "netns", "add", name])

    def delete():  # even when the test failed; the kernel drops the rules and sets with it
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=60)
        assert not os.path.exists(f"/run/netns/{name}"), f"namespace {name} outlived its test"
    request.addfinalizer(delete)
    return Namespace(name)


def comments_in(lines: str) -> list[str]:
    r"""The -m comment strings of rule lines; `iptables -S` prints `'` as `\'`, undone here."""
    return [text.replace("\\'", "'") for text in re.findall(r'--comment "((?:[^"\\]|\\.)*)"', lines)]


@pytest.mark.parametrize("case", case_names())
def test_golden_rules_load_into_a_fresh_namespace(case, namespace):
    directory = GOLDEN_DIR / case
    if (directory / "ipsets").exists():
        namespace.exec("ipset", "restore", stdin=(directory / "ipsets").read_bytes())
    for family, restore in ((4, "iptables-restore"), (6, "ip6tables-restore")):
        namespace.exec(restore, "--test", str(directory / f"rules.v{family}"))
    for family, restore in ((4, "iptables-restore"), (6, "ip6tables-restore")):
        namespace.exec(restore, "--noflush", str(directory / f"rules.v{family}"))  # as hlfw and boot load

    _, release = load_case(case)
    for family, tool in ((4, "iptables"), (6, "ip6tables")):
        live = namespace.exec(tool, "-S")
        ruleset = release.rulesets[0 if family == 4 else 1]
        # Built-in policies are not the project's (HL-INPUT ends with the DROP).
        assert live.splitlines()[:3] == ["-P INPUT ACCEPT", "-P FORWARD ACCEPT", "-P OUTPUT ACCEPT"]
        assert sorted(re.findall(r"^-N (\S+)$", live, re.M)) == sorted(ruleset.chains + ruleset.ensured)
        # Every rule arrived, in order, with its reason readable in `iptables -S` (grouped by chain).
        for chain in ["INPUT", "FORWARD", "OUTPUT", *ruleset.chains]:
            live_chain = "\n".join(line for line in live.splitlines() if line.startswith(f"-A {chain} "))
            assert comments_in(live_chain) == [rule.why for rule in ruleset.chain_rules(chain)], \
                f"rules.v{family} chain {chain}"
        assert f'--log-prefix "{ruleset_log_prefix(case)}"' in live
        assert "whatever no rule above accepted" in live
    if (directory / "ipsets").exists():
        assert set(namespace.exec("ipset", "list", "-n").split()) == {
            name for ruleset in release.rulesets for name in ruleset.sets}


def ruleset_log_prefix(case: str) -> str:
    settings, _ = load_case(case)
    return settings.firewall.drop_log.prefix


def test_expected_comments_are_live_for_the_dual_stack_case(namespace):
    directory = GOLDEN_DIR / "dual-stack-restricted"
    namespace.exec("iptables-restore", str(directory / "rules.v4"))
    namespace.exec("ip6tables-restore", str(directory / "rules.v6"))
    v4, v6 = namespace.exec("iptables", "-S"), namespace.exec("ip6tables", "-S")
    for expected in ("service postgres: tcp/5432 from 198.51.100.0/24",
                     "service metrics: tcp/9100 from 198.51.100.7/32",
                     "service game: udp/27000-27015 from 0.0.0.0/0",
                     "admin 203.0.113.64/26: at most 20/min new SSH connections per source"):
        assert f'--comment "{expected}"' in v4
    for expected in ("service postgres: tcp/5432 from 2001:db8:100::/56",
                     "neighbour discovery (neighbour-solicitation); hop limit 255 proves it is on-link",
                     "admin 2001:db8:a::/48: at most 20/min new SSH connections per source"):
        assert f'--comment "{expected}"' in v6
    assert "9100" not in v6
    assert "-A HL-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255" in v6
    assert v4.splitlines().count('-A INPUT -m comment --comment "hardened-lightsail: the host policy (HL-* chains)" '
                                 '-j HL-INPUT') == 1
