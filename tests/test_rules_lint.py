"""`fw check --rules`: the saved-ruleset reader (every match and target iptables-save writes for
a server), the walk through chains, and the lint of a hand-written ruleset; our own rendered
rules read back completely and lint clean. (Saved by the real iptables-save in namespaces:
tests/test_rules_lint_corpus.py.)"""
import subprocess
from pathlib import Path

import pytest

from hardened_lightsail.evaluate import CLOSED, OPEN, PARTLY, host_verdict
from hardened_lightsail.exposure import exposure_table, format_table
from hardened_lightsail.networks import parse_cidr
from hardened_lightsail.rule_conditions import (
    ALL,
    NONE,
    SOME,
    AddressIs,
    Fixed,
    HostFacts,
    IcmpTypeIs,
    InSet,
    InterfaceIs,
    Intervals,
    KindIn,
    NotUnderstood,
    PacketDetail,
    PortsIn,
    Probe,
    ProtocolIs,
    StateIn,
    SteadyState,
    TcpFlagsIn,
)
from hardened_lightsail.rules_lint import lint_rulesets
from hardened_lightsail.saved_rules import parse_ipset_save, parse_saved_ruleset, split_words

from golden_cases import case_names, load_case

HERE = Path(__file__).resolve().parent
RULESETS = HERE / "rulesets"
FW = HERE.parent / "scripts" / "fw"
ANYONE = parse_cidr("0.0.0.0/0")


def filter_table(*rules: str, policy: str = "DROP", chains: str = "") -> str:
    declared = "".join(f":{chain} - [0:0]\n" for chain in chains.split())
    return (f"*filter\n:INPUT {policy} [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n{declared}"
            + "".join(rule + "\n" for rule in rules) + "COMMIT\n")


def conditions(rule: str, family: int = 4, chains: str = ""):
    ruleset = parse_saved_ruleset(filter_table(rule, chains=chains), family)
    [read] = ruleset.rules
    return set(read.conditions), [note.message for note in ruleset.notes]


# --- reading words and rules --------------------------------------------------------------------

def test_words_are_split_like_iptables_restore_does_with_quotes_and_escapes():
    assert split_words('-A INPUT -m comment --comment "a \\"quoted\\" thing" -j LOG --log-prefix "x: "') == [
        "-A", "INPUT", "-m", "comment", "--comment", 'a "quoted" thing', "-j", "LOG", "--log-prefix", "x: "]


TCP, UDP = ProtocolIs(frozenset({"tcp"})), ProtocolIs(frozenset({"udp"}))


def ports(*pairs):
    return Intervals.of(pairs)


@pytest.mark.parametrize("rule, expected", [
    # iptables-save's explicit -m tcp and a hand-typed implicit one read the same
    ("-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT", {TCP, PortsIn("dport", ports((22, 22)))}),
    ("-A INPUT -p tcp --dport 22 -j ACCEPT", {TCP, PortsIn("dport", ports((22, 22)))}),
    ("-A INPUT -p 6 --destination-port ssh -j ACCEPT", {TCP, PortsIn("dport", ports((22, 22)))}),
    ("-A INPUT -p udp -m udp --sport 53 --dport 1024:65535 -j ACCEPT",
     {UDP, PortsIn("sport", ports((53, 53))), PortsIn("dport", ports((1024, 65535)))}),
    ("-A INPUT -p tcp -m tcp ! --dport 22 -j DROP", {TCP, PortsIn("dport", ports((0, 21), (23, 65535)))}),
    ("-A INPUT -p tcp --dport ! 22 -j DROP", {TCP, PortsIn("dport", ports((0, 21), (23, 65535)))}),  # old style
    ("-A INPUT -p tcp -m multiport --dports 22,3306,80,443,1000:2000 -j ACCEPT",
     {TCP, PortsIn("dport", ports((22, 22), (80, 80), (443, 443), (1000, 2000), (3306, 3306)))}),
    ("-A INPUT -p tcp -m multiport --sports 1:1023 -m multiport --ports 8000:8100,9000 -j ACCEPT",
     {TCP, PortsIn("sport", ports((1, 1023))), PortsIn("either", ports((8000, 8100), (9000, 9000)))}),
    ("-A INPUT -p tcp -m tcp --dport :1024 -j ACCEPT", {TCP, PortsIn("dport", ports((0, 1024)))}),
    ("-A INPUT -s 203.0.113.5/32 ! -d 198.51.100.0/24 -j ACCEPT",
     {AddressIs("src", (parse_cidr("203.0.113.5/32"),)), AddressIs("dst", (parse_cidr("198.51.100.0/24"),), True)}),
    ("-A INPUT -s 10.0.0.1/8 -j ACCEPT", {AddressIs("src", (parse_cidr("10.0.0.0/8"),))}),  # masked, as iptables does
    ("-A INPUT ! -i lo -s 127.0.0.0/8 -j REJECT",
     {InterfaceIs("in", "lo", True), AddressIs("src", (parse_cidr("127.0.0.0/8"),))}),
    ("-A FORWARD -i docker0 ! -o docker0 -j ACCEPT", {InterfaceIs("in", "docker0"), InterfaceIs("out", "docker0", True)}),
    ("-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT", {StateIn(frozenset({"RELATED", "ESTABLISHED"}))}),
    ("-A INPUT -m conntrack ! --ctstate INVALID -j ACCEPT",
     {StateIn(frozenset({"NEW", "ESTABLISHED", "RELATED", "UNTRACKED", "SNAT", "DNAT"}))}),
    ("-A INPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT", {ProtocolIs(frozenset({"icmp"})), IcmpTypeIs(ports((2048, 2303)))}),
    ("-A INPUT -p icmp --icmp-type echo-request -j ACCEPT",
     {ProtocolIs(frozenset({"icmp"})), IcmpTypeIs(ports((2048, 2303)))}),
    ("-A INPUT -p icmp --icmp-type 3/4 -j ACCEPT", {ProtocolIs(frozenset({"icmp"})), IcmpTypeIs(ports((772, 772)))}),
    ("-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT",
     {TCP, TcpFlagsIn(frozenset(v for v in range(256) if v & 0x17 == 0x02))}),
    ("-A INPUT -p tcp --syn -j ACCEPT", {TCP, TcpFlagsIn(frozenset(v for v in range(256) if v & 0x17 == 0x02))}),
    ("-A INPUT -m limit --limit 5/min --limit-burst 10 -j LOG --log-prefix \"x \"",
     {SteadyState("limit", True, ("--limit", "5/min", "--limit-burst", "10"))}),
    ("-A INPUT -p tcp -m hashlimit --hashlimit-above 20/min --hashlimit-mode srcip --hashlimit-name ssh -j DROP",
     {TCP, SteadyState("hashlimit", False, ("--hashlimit-above", "20/min", "--hashlimit-mode", "srcip",
                                            "--hashlimit-name", "ssh"))}),
    ("-A INPUT -m recent --update --seconds 60 --hitcount 4 --name ssh --rsource -j DROP",
     {SteadyState("recent", False, ("--update", "--seconds", "60", "--hitcount", "4", "--name", "ssh", "--rsource"))}),
    ("-A INPUT -m recent --set --name ssh -j ACCEPT", {SteadyState("recent", True, ("--set", "--name", "ssh"))}),
    ("-A INPUT -p tcp -m connlimit --connlimit-above 3 --connlimit-mask 32 -j REJECT --reject-with tcp-reset",
     {TCP, SteadyState("connlimit", False, ("--connlimit-above", "3", "--connlimit-mask", "32"))}),
    ("-A INPUT -m set --match-set blocklist src -j DROP", {InSet("blocklist", ("src",))}),
    ("-A INPUT -m set ! --match-set admins src,dst --return-nomatch -j DROP",
     {InSet("admins", ("src", "dst"), True, ("--return-nomatch",))}),
    ("-A INPUT -m comment --comment \"web: tcp/80\" -j RETURN", set()),
    ("-A INPUT -m addrtype --dst-type LOCAL -j RETURN", {KindIn("dst-type", frozenset({"LOCAL"}))}),
    ("-A INPUT -m pkttype --pkt-type broadcast -j DROP", {KindIn("pkt-type", frozenset({"broadcast"}))}),
    ("-A INPUT -m iprange --src-range 192.0.2.0-192.0.2.127 -j ACCEPT",
     {AddressIs("src", (parse_cidr("192.0.2.0/25"),))}),
    ("-A INPUT -f -j DROP", {Fixed(("-f",), NONE)}),
    ("-A INPUT -m ttl --ttl-lt 5 -j DROP", {PacketDetail("ttl", ("--ttl-lt", "5"))}),
])
def test_each_match_iptables_save_writes_is_read_into_what_it_means(rule, expected):
    assert conditions(rule) == (expected, [])


@pytest.mark.parametrize("rule, expected", [
    ("-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT",
     {ProtocolIs(frozenset({"ipv6-icmp"})), IcmpTypeIs(ports((32768, 33023)))}),
    ("-A INPUT -p icmpv6 --icmpv6-type neighbour-solicitation -m hl --hl-eq 255 -j ACCEPT",
     {ProtocolIs(frozenset({"ipv6-icmp"})), IcmpTypeIs(ports((34560, 34815))), PacketDetail("hl", ("--hl-eq", "255"))}),
    ("-A INPUT -m rt --rt-type 0 -j DROP", {Fixed(("-m rt", "--rt-type", "0"), NONE)}),
    ("-A INPUT -s 2001:db8::/32 -j ACCEPT", {AddressIs("src", (parse_cidr("2001:db8::/32"),))}),
])
def test_ipv6_matches_are_read_too(rule, expected):
    assert conditions(rule, family=6) == (expected, [])


def test_targets_keep_their_options_and_a_goto_is_told_apart_from_a_jump():
    ruleset = parse_saved_ruleset(filter_table(
        '-A INPUT -j LOG --log-prefix "IPTables-Dropped: " --log-level 4 --log-tcp-options',
        "-A INPUT -p tcp -j REJECT --reject-with tcp-reset", "-A INPUT -g zone", "-A INPUT -p udp",
        chains="zone"))
    log, reject, goto, counting = ruleset.rules
    assert log.target_options == (("--log-prefix", ("IPTables-Dropped: ",)), ("--log-level", ("4",)),
                                  ("--log-tcp-options", ()))
    assert reject.target_option("--reject-with") == ("tcp-reset",)
    assert (goto.target, goto.goto) == ("zone", True)
    assert counting.target is None and ruleset.notes == []  # a rule without -j only counts packets


@pytest.mark.parametrize("rule, note", [
    ("-A INPUT -m foo --bar 1 -j ACCEPT", "line 5: -m foo not understood; the analysis below may miss what it does"),
    ("-A INPUT -p tcp -m tcp --flux 3 -j ACCEPT",
     "line 5: --flux of -m tcp not understood; the analysis below may miss what it does"),
    ("-A INPUT -j TARPIT", "line 5: -j TARPIT not understood (neither a target the analysis knows nor a chain of this "
                           "table: a typo? iptables-restore refuses a target it has no extension for); the analysis "
                           "below may miss what it does"),
    ("-A INPUT -j NFQUEUE --queue-num 1", "line 5: -j NFQUEUE: the verdict is decided elsewhere; the analysis below "
                                          "may miss what it does"),
])
def test_what_the_reader_does_not_understand_is_named_with_its_line(rule, note):
    ruleset = parse_saved_ruleset(filter_table(rule))
    assert [f"line {n.line}: {n.message}" for n in ruleset.notes] == [note]
    assert len(ruleset.rules) == 1  # kept, with what it understood


def test_a_rule_with_an_unknown_match_counts_as_matching_only_some_packets():
    ruleset = parse_saved_ruleset(filter_table("-A INPUT -p tcp --dport 22 -m foo --bar 1 -j ACCEPT"))
    [rule] = ruleset.rules
    assert any(isinstance(c, NotUnderstood) for c in rule.conditions)
    verdict = host_verdict(ruleset, "tcp", 22, ANYONE)
    assert verdict.outcome == PARTLY and verdict.because == (rule,)


@pytest.mark.parametrize("text, message", [
    ("*filter\n-A INPUT -m comment --comment \"unclosed\n", "can't split"),
    ("*filter\n-A nosuch -j ACCEPT\nCOMMIT\n", "chain nosuch is not declared"),
    ("-A INPUT -j ACCEPT\n", "is outside any table"),
    ("iptables -A INPUT -p tcp --dport 22 -j ACCEPT\n", "this is a shell command, not iptables-save output"),
    ("*filter\n-A INPUT -s 2001:db8::1 -j ACCEPT\nCOMMIT\n", "2001:db8::1 is an IPv6 address in an IPv4 ruleset"),
    ("*filter\n-A INPUT -p tcp --dport 70000 -j ACCEPT\nCOMMIT\n", "port 70000 is out of range"),
])
def test_a_file_iptables_restore_would_refuse_is_an_error_naming_the_line_not_a_crash(text, message):
    ruleset = parse_saved_ruleset(text)
    [note] = ruleset.notes
    assert note.fatal and message in note.message and note.line in (1, 2)


def test_inserts_land_where_iptables_puts_them_and_the_other_family_is_skipped():
    ruleset = parse_saved_ruleset(filter_table("-A TCP -p tcp --dport 22 -j ACCEPT",
                                               "-I TCP -p tcp -m recent --update --name x -j REJECT",
                                               "-I TCP 2 -p tcp --dport 80 -j ACCEPT", "-6 -A INPUT -j DROP",
                                               chains="TCP"))
    assert [rule.line for rule in ruleset.chain_rules("TCP")] == [7, 8, 6]
    assert ruleset.chain_rules("INPUT") == []


def test_ipset_save_gives_members_of_address_sets():
    sets = parse_ipset_save("create bl hash:net family inet hashsize 1024 maxelem 65536\nadd bl 192.0.2.0/25\n"
                            "create pairs hash:ip,port family inet\nadd pairs 192.0.2.1,tcp:22\n")
    assert sets["bl"].networks == (parse_cidr("192.0.2.0/25"),) and sets["pairs"].networks is None


# --- walking the chains ----------------------------------------------------------------------

def verdict(*rules, chains="", port=22, source="198.51.100.7/32", protocol="tcp", **options):
    ruleset = parse_saved_ruleset(filter_table(*rules, chains=chains, **options))
    return host_verdict(ruleset, protocol, port, parse_cidr(source))


def test_jumps_return_and_gotos_are_followed_as_the_kernel_does():
    assert verdict("-A INPUT -p tcp -j TCP", "-A TCP -p tcp --dport 22 -j ACCEPT", chains="TCP").outcome == OPEN
    assert verdict("-A INPUT -j f2b", "-A INPUT -p tcp --dport 22 -j ACCEPT",
                   "-A f2b -s 198.51.100.7 -j REJECT", "-A f2b -j RETURN", chains="f2b").outcome == CLOSED
    assert verdict("-A INPUT -j f2b", "-A INPUT -p tcp --dport 22 -j ACCEPT",
                   "-A f2b -s 203.0.113.9 -j REJECT", "-A f2b -j RETURN", chains="f2b").outcome == OPEN
    # A goto's chain returns to INPUT's caller: the policy, not the rule after the goto.
    assert verdict("-A INPUT -g zone", "-A INPUT -j ACCEPT", "-A zone -p udp -j ACCEPT", chains="zone").outcome == CLOSED
    assert verdict("-A INPUT -j zone", "-A INPUT -j ACCEPT", "-A zone -p udp -j ACCEPT", chains="zone").outcome == OPEN


def test_rate_limits_and_lists_are_taken_in_their_steady_state():
    assert verdict("-A INPUT -p tcp --dport 22 -m hashlimit --hashlimit-upto 5/min --hashlimit-name s -j ACCEPT"
                   ).outcome == OPEN
    assert verdict("-A INPUT -p tcp -m recent --update --seconds 60 --name ban -j DROP",
                   "-A INPUT -p tcp --dport 22 -j ACCEPT").outcome == OPEN
    assert verdict("-A INPUT -p tcp -m recent --set --name seen -j DROP", "-A INPUT -p tcp --dport 22 -j ACCEPT"
                   ).outcome == CLOSED
    assert verdict("-A INPUT -p tcp --syn -m connlimit --connlimit-above 3 -j REJECT",
                   "-A INPUT -p tcp --dport 22 -j ACCEPT").outcome == OPEN


def test_a_rule_that_takes_some_packets_only_makes_the_port_partly_open_naming_it():
    dns_hole = verdict("-A INPUT -p udp --sport 53 -j ACCEPT", protocol="udp", port=5353)
    assert dns_hole.outcome == PARTLY and [rule.line for rule in dns_hole.because] == [5]
    assert verdict("-A INPUT -p tcp --sport 1024:65535 --dport 22 -j ACCEPT").outcome == OPEN  # any client port
    assert verdict("-A INPUT -i eth0 -p tcp --dport 22 -j ACCEPT").outcome == PARTLY
    facts = HostFacts(public_interfaces=frozenset({"eth0"}))
    ruleset = parse_saved_ruleset(filter_table("-A INPUT -i eth0 -p tcp --dport 22 -j ACCEPT"), facts=facts)
    assert host_verdict(ruleset, "tcp", 22, ANYONE).outcome == OPEN
    assert verdict("-A INPUT -i lo -j ACCEPT").outcome == CLOSED


def test_the_probe_is_a_syn_to_the_hosts_own_address():
    probe = Probe("tcp", 22, ANYONE)
    assert TcpFlagsIn(frozenset({0x02})).on_probe(probe, HostFacts()) == ALL
    assert KindIn("dst-type", frozenset({"BROADCAST", "MULTICAST"})).on_probe(probe, HostFacts()) == NONE
    assert AddressIs("dst", (parse_cidr("224.0.0.251/32"),)).on_probe(probe, HostFacts()) == NONE
    assert AddressIs("dst", (parse_cidr("192.0.2.10/32"),)).on_probe(probe, HostFacts()) == SOME
    known = HostFacts(local_addresses=(parse_cidr("192.0.2.10/32"),))
    assert AddressIs("dst", (parse_cidr("192.0.2.0/24"),)).on_probe(probe, known) == ALL


# --- the lint of a hand-typed ruleset --------------------------------------------------------

def lint(path: Path, v6_text=None):
    v4 = parse_saved_ruleset(path.read_text(), 4, path.name)
    v6 = parse_saved_ruleset(v6_text, 6, "rules.v6") if v6_text is not None else None
    return lint_rulesets(v4, v6)


def test_the_articles_ruleset_as_typed_is_caught_on_each_quiet_bug():
    findings, rows = lint(RULESETS / "article.v4")
    assert [str(f) for f in findings] == [
        "error: article.v4 line 17: `-A INPUT -p tcp --dport 22 -j DROP` can never match: line 15 "
        "`-A INPUT -p tcp --dport 22 -j ACCEPT` above it already accepts every packet it would",
        "warning: article.v4: chain never reached from INPUT, FORWARD or OUTPUT, so its rules never run: "
        "port-scan (line 10, 2 rules)",
        "warning: article.v4 line 12: `-m state` is the old interface; use `-m conntrack --ctstate`",
        "warning: article.v4 line 16: `-A INPUT -p tcp --dport 22 -s 203.0.113.5 -j ACCEPT` can never match: "
        "line 15 `-A INPUT -p tcp --dport 22 -j ACCEPT` above it already accepts every packet it would",
        "warning: article.v4 line 18: LOG without -m limit: a flood fills the disk (add `-m limit --limit 10/min`)",
        "warning: tcp/22 (SSH) is open to anyone over IPv4 (article.v4 line 15): accept it only from the addresses "
        "you administer from",
        "warning: no IPv6 rules given (--rules6): on a dual-stack host every port ip6tables doesn't filter is open "
        "over IPv6, whatever the IPv4 rules say",
    ]
    # ...which is why the untrusted host in the article still got in.
    assert format_table(rows).splitlines() == [
        "port               family  source          host",
        "tcp/22             IPv4    203.0.113.5/32  open",
        "tcp/22             IPv4    anyone else     open",
        "tcp/80             IPv4    anyone else     open",
        "tcp/443            IPv4    anyone else     open",
        "ping               IPv4    anyone else     open",
        "tcp (other ports)  IPv4    anyone else     closed",
        "udp (other ports)  IPv4    anyone else     closed",
    ]


def test_a_ruleset_that_accepts_by_default_is_an_error_and_empty_ipv6_rules_are_one():
    findings, _ = lint_rulesets(parse_saved_ruleset(filter_table("-A INPUT -p tcp --dport 80 -j ACCEPT",
                                                                 policy="ACCEPT"), 4, "rules.v4"),
                                parse_saved_ruleset("", 6, "rules.v6"))
    assert [str(f) for f in findings] == [
        "error: rules.v4: INPUT accepts by default (`:INPUT ACCEPT`) and no rule drops what the rules above don't "
        "accept: every tcp/udp port no rule names is open to anyone. Set `:INPUT DROP` (default deny), or end INPUT "
        "with `-j DROP`",
        "error: rules.v6: no IPv6 rules at all (ip6tables accepts everything): on a dual-stack host every port "
        "ip6tables doesn't filter is open over IPv6, whatever the IPv4 rules say"]


def test_a_database_open_to_anyone_is_an_error_and_ipv6_that_differs_is_named():
    v4 = parse_saved_ruleset(filter_table("-A INPUT -p tcp -m multiport --dports 80,5432 -j ACCEPT"), 4, "rules.v4")
    v6 = parse_saved_ruleset(filter_table("-A INPUT -p tcp --dport 80 -j ACCEPT"), 6, "rules.v6")
    findings, _ = lint_rulesets(v4, v6)
    assert [str(f) for f in findings] == [
        "error: tcp/5432 (PostgreSQL) is open to anyone over IPv4 (rules.v4 line 5): databases, caches and admin "
        "interfaces belong behind the firewall: accept it only from the hosts that use it",
        "warning: tcp/5432 from anyone is open over IPv4 but closed over IPv6: the IPv6 rules don't match the "
        "IPv4 ones"]


def test_an_unknown_ipset_is_named_and_taken_as_empty():
    findings, _ = lint_rulesets(parse_saved_ruleset(filter_table("-A INPUT -m set --match-set bl src -j DROP"),
                                                    4, "rules.v4"), None)
    assert "warning: rules.v4 line 5: the members of ipset bl are unknown (give the `ipset save` output with " \
           "--ipsets): the analysis takes it as holding none of the sources" in map(str, findings)


# --- our own rules --------------------------------------------------------------------------

@pytest.mark.parametrize("case", case_names())
def test_our_rendered_rules_read_back_completely_and_lint_clean(case):
    settings, release = load_case(case)
    sets = parse_ipset_save(release.files.get("ipsets", b"").decode())
    # As a host with Docker loads it: the rules and the DOCKER-USER hook, with --noflush.
    rulesets = [parse_saved_ruleset(release.files[f"rules.v{family}"].decode() +
                                    release.files.get(f"docker-hook.v{family}", b"").decode(), family,
                                    f"rules.v{family}", HostFacts(sets=sets), noflush=True) for family in (4, 6)]
    for ruleset, rendered in zip(rulesets, release.rulesets, strict=True):
        hook = [rule for rule in ruleset.rules if rule.chain == "DOCKER-USER"]
        assert ruleset.notes == [] and len(ruleset.rules) - len(hook) == len(rendered.rules)
    findings, rows = lint_rulesets(*rulesets)
    assert findings == []
    # The file's own exposure agrees with the policy's table, row for row, on the host layer.
    policy_rows = {(r.port, r.family, r.source): r.host for r in exposure_table(settings.firewall, release)}
    file_rows = {(r.port, r.family, r.source): r.host for r in rows}
    assert {key: file_rows[key] for key in policy_rows if key in file_rows} == \
           {key: value for key, value in policy_rows.items() if key in file_rows}
    assert len(set(policy_rows) & set(file_rows)) >= 8


# --- the command -----------------------------------------------------------------------------

def run_fw(*args):
    return subprocess.run([str(FW), *args], capture_output=True, text=True, timeout=60)


def test_cli_lints_a_file_prints_the_exposure_and_exits_2_on_errors():
    result = run_fw("check", "--rules", str(RULESETS / "article.v4"))
    assert result.returncode == 2, result.stderr
    assert result.stdout.startswith("port               family  source          host\n")
    assert result.stdout.rstrip().endswith("1 error(s), 6 warning(s)")
    both = run_fw("check", "--rules", str(RULESETS / "centos7.v4"), "--rules6", str(RULESETS / "centos7.v6"))
    assert both.returncode == 0 and both.stdout.rstrip().endswith("0 error(s), 3 warning(s)")


def test_cli_reads_the_ipsets_the_rules_name():
    result = run_fw("check", "--rules", str(RULESETS / "fail2ban.v4"), "--ipsets", str(RULESETS / "fail2ban.ipsets"))
    assert "members of ipset blocklist are unknown" not in result.stdout
    assert "error: tcp/6379 (Redis) is open to anyone over IPv4" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--rules", "/nonexistent/rules.v4"], "error: --rules /nonexistent/rules.v4: can't read it"),
    (["--rules6", str(RULESETS / "centos7.v6")], "error: --rules6 needs --rules (the IPv4 rules) too"),
    (["--host", "no-at-sign"], "error: --host 'no-at-sign': give the login as USER@ADDRESS"),
    (["--stack", "dev", "--rules", str(RULESETS / "article.v4")], "error: check lints either a policy"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, message):
    result = run_fw("check", *args)
    assert result.returncode == 2 and result.stderr.startswith(message) and "Traceback" not in result.stderr


# --- FORWARD's policy matters where the host routes -------------------------------------------

FORWARD_ACCEPT = filter_table("-A INPUT -i lo -j ACCEPT").replace(":FORWARD DROP", ":FORWARD ACCEPT")
ROUTES = "FORWARD accepts by default"


@pytest.mark.parametrize("text,facts,warned", [
    (FORWARD_ACCEPT, HostFacts(), False),  # Ubuntu's default, nothing routes
    (FORWARD_ACCEPT.replace("COMMIT", "-A FORWARD -i wg0 -j ACCEPT\nCOMMIT"), HostFacts(), True),  # a VPN
    (FORWARD_ACCEPT + "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n",
     HostFacts(), True),
    (FORWARD_ACCEPT, HostFacts(forwarding=True), True),  # a live host with ip_forward=1
    (FORWARD_ACCEPT.replace("COMMIT", "-A FORWARD -i wg0 -j ACCEPT\nCOMMIT"), HostFacts(forwarding=False), False),
])
def test_forward_accepting_by_default_is_a_warning_only_where_the_host_routes(text, facts, warned):
    findings, _ = lint_rulesets(parse_saved_ruleset(text, 4, "rules.v4", facts=facts), None)
    assert any(ROUTES in f.message for f in findings) == warned, findings


def test_the_projects_docker_chain_waiting_for_docker_is_not_dead_code():
    text = filter_table("-A HL-DOCKER -p tcp --dport 80 -j RETURN", "-A HL-DOCKER -j DROP", chains="HL-DOCKER")
    findings, _ = lint_rulesets(parse_saved_ruleset(text, 4, "rules.v4"), None)
    assert not any("never reached" in f.message for f in findings), findings
    other = filter_table("-A MINE -j DROP", chains="MINE")
    assert any("never reached" in f.message for f in lint_rulesets(parse_saved_ruleset(other, 4, "rules.v4"), None)[0])
