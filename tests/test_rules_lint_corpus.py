"""`fw check --rules` on the rulesets people really have: each file of tests/rulesets/ (the
article's, issue 15's, distribution defaults, tutorials, ufw, firewalld, Docker, fail2ban) is
loaded the way its users load it (iptables-restore, ip6tables-restore, ipset restore) into a
namespace this test makes, saved back with the real iptables-save / ip6tables-save / ipset save
(nft and legacy), and the saved text is linted: every finding is asserted exactly, line numbers
included. Our own rendered rules go through the same round trip and lint clean."""
from __future__ import annotations

import re
import shutil

import pytest
from test_rules_lint import RULESETS

from hardened_lightsail.exposure import format_table
from hardened_lightsail.rule_conditions import HostFacts
from hardened_lightsail.rules_lint import lint_rulesets
from hardened_lightsail.saved_rules import parse_ipset_save, parse_saved_ruleset
from lab.errors import LabError
from lab.netns import add_namespace, delete_namespace, in_namespace

from golden_cases import case_names, load_case
from lab_fixtures import SESSION_LAB_PREFIX

pytestmark = pytest.mark.netfilter
CORPUS = sorted(path.stem for path in RULESETS.glob("*.v4"))
VARIANTS = ("nft", "legacy")


def _save(namespace: str, variant: str, files: dict[str, str]) -> dict[str, str]:
    """Load `files` ({"v4", "v6", "ipsets"}: text) into `namespace` as a user would, then save."""
    if "ipsets" in files:
        in_namespace(namespace, ["ipset", "restore"], input=files["ipsets"])
    in_namespace(namespace, [f"iptables-{variant}-restore"], input=files["v4"])
    if "v6" in files:
        in_namespace(namespace, [f"ip6tables-{variant}-restore"], input=files["v6"])
    return {"v4": in_namespace(namespace, [f"iptables-{variant}-save"]).stdout,
            "v6": in_namespace(namespace, [f"ip6tables-{variant}-save"]).stdout,
            "ipsets": in_namespace(namespace, ["ipset", "save"]).stdout}


def _round_trip(sources: dict[str, dict[str, str]], tag: str) -> dict:
    """{(variant, name): saved files}; every namespace removed however this ends."""
    saved = {}
    for variant in VARIANTS:
        if shutil.which(f"iptables-{variant}-restore") is None:
            continue
        for index, (name, files) in enumerate(sources.items()):
            namespace = f"hl-{SESSION_LAB_PREFIX}{tag}{variant[0]}{index}"
            add_namespace(namespace)
            try:
                saved[(variant, name)] = _save(namespace, variant, files)
            except LabError as error:
                if variant == "legacy" and "can't initialize" in str(error):
                    break  # this kernel has no legacy x_tables: the nft variant still runs
                raise
            finally:
                delete_namespace(namespace)
    return saved


@pytest.fixture(scope="module")
def corpus() -> dict:
    sources = {}
    for name in CORPUS:
        sources[name] = {kind: (RULESETS / f"{name}.{kind}").read_text()
                         for kind in ("v4", "v6", "ipsets") if (RULESETS / f"{name}.{kind}").exists()}
    return _round_trip(sources, "lint")


def lint_saved(files: dict[str, str], name: str):
    facts = HostFacts(sets=parse_ipset_save(files["ipsets"]))
    v4 = parse_saved_ruleset(files["v4"], 4, f"{name}.v4", facts)
    v6 = parse_saved_ruleset(files["v6"], 6, f"{name}.v6", facts)
    assert not [note for ruleset in (v4, v6) for note in ruleset.notes], "iptables-save wrote something unread"
    return lint_rulesets(v4, v6)


SSH_ADVICE = "accept it only from the addresses you administer from"
DB_ADVICE = "databases, caches and admin interfaces belong behind the firewall: accept it only from the hosts that use it"
NO_V6 = ("no IPv6 rules at all (ip6tables accepts everything): on a dual-stack host every port ip6tables doesn't "
         "filter is open over IPv6, whatever the IPv4 rules say")
STATE = "`-m state` is the old interface; use `-m conntrack --ctstate`"
NEVER = "can never match"


def shadow(name, later, later_text, earlier, earlier_text, level="warning"):
    return (f"{level}: {name}.v4 line {later}: `{later_text}` {NEVER}: line {earlier} `{earlier_text}` above it "
            "already accepts every packet it would")


def connlimit_reject(port, limit):
    return (f"-A INPUT -p tcp -m tcp --dport {port} --tcp-flags FIN,SYN,RST,ACK SYN -m connlimit --connlimit-above "
            f"{limit} --connlimit-mask 32 --connlimit-saddr -j REJECT --reject-with tcp-reset")


MULTIPORT = "-A INPUT -p tcp -m multiport --dports 22,3306,80,443 -j ACCEPT"
# Findings on the nft variant's saved text (line numbers of that text).
EXPECTED = {
    "article": [
        shadow("article", 13, "-A INPUT -p tcp -m tcp --dport 22 -j DROP", 11,
               "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT", level="error"),
        f"error: article.v6: {NO_V6}",
        "warning: article.v4: chain never reached from INPUT, FORWARD or OUTPUT, so its rules never run: "
        "port-scan (line 6, 2 rules)",
        f"warning: article.v4 line 8: {STATE}",
        shadow("article", 12, "-A INPUT -s 203.0.113.5/32 -p tcp -m tcp --dport 22 -j ACCEPT", 11,
               "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"),
        "warning: article.v4 line 14: LOG without -m limit: a flood fills the disk (add `-m limit --limit 10/min`)",
        f"warning: tcp/22 (SSH) is open to anyone over IPv4 (article.v4 line 11): {SSH_ADVICE}",
    ],
    "multiport-connlimit": [
        *[shadow("multiport-connlimit", line, connlimit_reject(port, limit), 8, MULTIPORT, level="error")
          for line, port, limit in ((9, 22, 3), (10, 3306, 10), (11, 80, 50), (12, 443, 50))],
        f"error: multiport-connlimit.v6: {NO_V6}",
        f"error: tcp/3306 (MySQL/MariaDB) is open to anyone over IPv4 (multiport-connlimit.v4 line 8): {DB_ADVICE}",
        "warning: multiport-connlimit.v4 line 14: LOG without -m limit: a flood fills the disk "
        "(add `-m limit --limit 10/min`)",
        f"warning: tcp/22 (SSH) is open to anyone over IPv4 (multiport-connlimit.v4 line 8): {SSH_ADVICE}",
    ],
    "centos7": [
        f"warning: centos7.v4 lines 6, 9: {STATE}",
        f"warning: centos7.v6 lines 6, 9, 10: {STATE}",
        f"warning: tcp/22 (SSH) is open to anyone over IPv4 and IPv6 (centos7.v4 line 9; centos7.v6 line 10): "
        f"{SSH_ADVICE}",
    ],
    "digitalocean-template": [
        "warning: tcp/22 (SSH) is open to anyone over IPv4 and IPv6 (digitalocean-template.v4 line 40; "
        f"digitalocean-template.v6 line 18): {SSH_ADVICE}",
        "warning: ping from anyone is closed over IPv4 but open over IPv6: the IPv6 rules don't match the IPv4 ones",
    ],
    "arch-stateful": [
        "warning: tcp/22 (SSH) is open to anyone over IPv4 and IPv6 (arch-stateful.v4 line 18; arch-stateful.v6 "
        f"line 19): {SSH_ADVICE}",
        "warning: tcp/80 from anyone is open over IPv4 but closed over IPv6: the IPv6 rules don't match the IPv4 ones",
        "warning: tcp/443 from anyone is open over IPv4 but closed over IPv6: the IPv6 rules don't match the IPv4 ones",
    ],
    "linode": [
        f"warning: linode.v4 lines 8, 9, 10, 11, 12: {STATE}",
        f"warning: linode.v6 lines 9, 10, 11, 12: {STATE}",
        f"warning: tcp/22 (SSH) is open to anyone over IPv4 and IPv6 (linode.v4 line 9; linode.v6 line 9): "
        f"{SSH_ADVICE}",
    ],
    "ufw": [
        "warning: ufw.v4: chains never reached from INPUT, FORWARD or OUTPUT, so their rules never run: "
        "ufw-logging-allow (line 18, 1 rule); ufw-skip-to-policy-forward (line 24, 1 rule); "
        "ufw-skip-to-policy-output (line 26, 1 rule); ufw-user-limit (line 32, 2 rules); "
        "ufw-user-limit-accept (line 33, 1 rule)",
        "warning: ufw.v6: chains never reached from INPUT, FORWARD or OUTPUT, so their rules never run: "
        "ufw6-logging-allow (line 18, 1 rule); ufw6-skip-to-policy-forward (line 23, 1 rule); "
        "ufw6-skip-to-policy-output (line 25, 1 rule); ufw6-user-limit (line 31, 2 rules); "
        "ufw6-user-limit-accept (line 32, 1 rule)",
        f"warning: tcp/22 (SSH) is open to anyone over IPv4 and IPv6 (ufw.v4 line 102; ufw.v6 line 104): "
        f"{SSH_ADVICE}",
    ],
    "firewalld": [
        f"warning: tcp/22 (SSH) is open to anyone over IPv4 and IPv6 (firewalld.v4 line 62; firewalld.v6 line 62): "
        f"{SSH_ADVICE}",
    ],
    "docker": [
        "warning: docker.v4 line 43: the nat table forwards ports elsewhere (DNAT, e.g. Docker-published ports): "
        "those connections go through FORWARD, not INPUT, so the exposure below does not show them",
        f"warning: tcp/22 (SSH) is open to anyone over IPv6 (docker.v6 line 10): {SSH_ADVICE}",
        "warning: tcp/22 from anyone is closed over IPv4 but open over IPv6: the IPv6 rules don't match the IPv4 ones",
    ],
    "fail2ban": [
        f"error: fail2ban.v6: {NO_V6}",
        f"error: tcp/6379 (Redis) is open to anyone over IPv4 (fail2ban.v4 line 13): {DB_ADVICE}",
        shadow("fail2ban", 14, "-A INPUT -s 192.0.2.40/32 -p tcp -m tcp --dport 6379 -j ACCEPT", 13,
               "-A INPUT -p tcp -m tcp --dport 6379 -j ACCEPT"),
        f"warning: tcp/22 (SSH) is open to anyone over IPv4 (fail2ban.v4 line 11): {SSH_ADVICE}",
    ],
}


def test_the_corpus_and_its_expectations_match():
    assert sorted(EXPECTED) == CORPUS


def _by_text(messages: list[str], files: dict[str, str]) -> list[str]:
    """Each "NAME.vN line K" / "lines K, L" replaced by the text of those lines: what a finding
    says independently of where iptables-save put the rule."""
    lines = {family: files[family].splitlines() for family in ("v4", "v6")}

    def lines_of(match):
        family, numbers = match.group(1), match.group(3)
        texts = [lines[family][int(n) - 1] for n in re.findall(r"\d+", numbers)]
        return f".{family} {' | '.join(texts)}"
    pattern = re.compile(r"\.(v4|v6)( lines? )((?:\d+(?:, )?)+)")
    return [pattern.sub(lines_of, message) for message in messages]


@pytest.mark.parametrize("name", CORPUS)
def test_saved_ruleset_findings_are_exact(corpus, name):
    if ("nft", name) not in corpus:
        pytest.skip("iptables-nft is not installed")
    findings, _ = lint_saved(corpus[("nft", name)], name)
    assert [str(f) for f in findings] == EXPECTED[name]


@pytest.mark.parametrize("name", CORPUS)
def test_legacy_iptables_save_gives_the_same_findings_at_its_own_line_numbers(corpus, name):
    if ("legacy", name) not in corpus:
        pytest.skip("iptables-legacy is not available on this machine")
    legacy, _ = lint_saved(corpus[("legacy", name)], name)
    expected = _by_text(EXPECTED[name], corpus[("nft", name)])
    assert _by_text([str(f) for f in legacy], corpus[("legacy", name)]) == expected


def test_article_exposure_shows_the_untrusted_host_still_gets_ssh_and_ipv6_is_wide_open(corpus):
    _, rows = lint_saved(corpus[("nft", "article")], "article")
    assert format_table(rows).splitlines() == [
        "port               family  source          host",
        "tcp/22             IPv4    203.0.113.5/32  open",
        "tcp/22             IPv4    anyone else     open",
        "tcp/22             IPv6    anyone else     open",
        "tcp/80             IPv4    anyone else     open",
        "tcp/80             IPv6    anyone else     open",
        "tcp/443            IPv4    anyone else     open",
        "tcp/443            IPv6    anyone else     open",
        "ping               IPv4    anyone else     open",
        "ping               IPv6    anyone else     open",
        "tcp (other ports)  IPv4    anyone else     closed",
        "tcp (other ports)  IPv6    anyone else     open",
        "udp (other ports)  IPv4    anyone else     closed",
        "udp (other ports)  IPv6    anyone else     open",
    ]


def test_fail2ban_exposure_shows_the_banned_hosts_and_the_redis_hole(corpus):
    _, rows = lint_saved(corpus[("nft", "fail2ban")], "fail2ban")
    table = format_table(rows).splitlines()
    assert table[:10] == [
        "port               family  source            host",
        "tcp/22             IPv4    198.51.100.23/32  closed",
        "tcp/22             IPv4    203.0.113.99/32   closed",
        "tcp/22             IPv4    anyone else       open",
        "tcp/22             IPv6    anyone else       open",
        "tcp/443            IPv4    anyone else       open",
        "tcp/443            IPv6    anyone else       open",
        "tcp/6379           IPv4    192.0.2.40/32     open",
        "tcp/6379           IPv4    anyone else       open",
        "tcp/6379           IPv6    anyone else       open",
    ]


def test_dhcp_and_source_port_holes_show_as_partly_open_naming_the_rule(corpus):
    _, ufw = lint_saved(corpus[("nft", "ufw")], "ufw")
    dhcp = [r for r in ufw if r.port == "udp/68" and r.family == 4]
    assert [(r.source, r.host, r.host_partly) for r in dhcp] == [("anyone else", False, ("line 81",))]
    assert corpus[("nft", "ufw")]["v4"].splitlines()[80] == \
        "-A ufw-before-input -p udp -m udp --sport 67 --dport 68 -j ACCEPT"


@pytest.fixture(scope="module")
def rendered():
    sources = {}
    for case in case_names():
        _, release = load_case(case)
        sources[case] = {"v4": release.files["rules.v4"].decode(), "v6": release.files["rules.v6"].decode(),
                         **({"ipsets": release.files["ipsets"].decode()} if "ipsets" in release.files else {})}
    return _round_trip(sources, "gold")


@pytest.mark.parametrize("case", case_names())
def test_our_rendered_rules_saved_by_iptables_save_read_completely_and_lint_clean(rendered, case):
    for variant in VARIANTS:
        if (variant, case) in rendered:
            findings, rows = lint_saved(rendered[(variant, case)], case)
            assert findings == [], variant
            assert not any(row.host_partly for row in rows)
