"""Adopting and watching a running server, in the lab: `fw check --host` reads the live rules
over real SSH (read-only) and lints them, `fw diff --from-host` compares them with a stack's
policy, `fw logs --host` summarizes the dropped-packet lines the server's LOG rule writes to the
kernel log. The server is the lab's, its host key pinned in a known_hosts file the test writes."""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from test_rules_lint import RULESETS
from test_rules_lint_corpus import EXPECTED

from hardened_lightsail.host_error import HostError
from hardened_lightsail.live_host import RULES_SCRIPT, SCRIPT_HEAD, SshTarget, _rules_from, parse_sections
from lab import ADMIN_CIDRS
from lab.probe import probe
from lab.topology import INTERNET, SERVER

from lab_fixtures import SESSION_LAB_PREFIX
from lab_helpers import EMPTY_FILTER, OPEN_EDGE, Layers, render, wait_until_every_client_reaches_the_web

pytestmark = pytest.mark.netfilter

FW = Path(__file__).resolve().parent.parent / "scripts" / "fw"
NF_LOG_ALL_NETNS = Path("/proc/sys/net/netfilter/nf_log_all_netns")
PREFIX = f"HL-{SESSION_LAB_PREFIX}drop: "  # this session's own: other labs log with theirs


@pytest.fixture(scope="module")
def server(lab, tmp_path_factory):
    """(lab, layers, ssh options for fw): the host key pinned, the lab's deployer key."""
    wait_until_every_client_reaches_the_web(lab)
    directory = tmp_path_factory.mktemp("live-host")
    known_hosts = directory / "known_hosts"
    host_key = Path(str(lab.layout.host_key) + ".pub").read_text().split()
    known_hosts.write_text(f"{lab.server_ipv4} {host_key[0]} {host_key[1]}\n")
    options = ["--identity", str(lab.layout.client_key), "--known-hosts", str(known_hosts)]
    return lab, Layers(lab, directory), options


def load_host_rules(lab, v4: str, v6: str = EMPTY_FILTER) -> None:
    lab.run(SERVER, ["iptables-restore"], input=v4)
    lab.run(SERVER, ["ip6tables-restore"], input=v6)


def fw(*args, timeout=120):
    return subprocess.run([str(FW), *args], capture_output=True, text=True, timeout=timeout)


def test_check_host_reads_the_live_rules_and_finds_the_articles_bugs_at_their_saved_lines(server):
    lab, layers, options = server
    layers.use(OPEN_EDGE, None)
    load_host_rules(lab, (RULESETS / "article.v4").read_text())
    result = fw("check", "--host", f"root@{lab.server_ipv4}", *options)
    assert result.returncode == 2, result.stderr  # the DROP the ACCEPT hides is an error
    host = f"root@{lab.server_ipv4}"
    assert result.stdout.startswith(f"live rules of {host}: iptables-save 11 filter rules, ip6tables-save 0, "
                                    "0 ipset(s)")
    expected = [line.replace("article.v4", f"{host} iptables-save").replace("article.v6", f"{host} ip6tables-save")
                for line in EXPECTED["article"]]
    findings = [line for line in result.stdout.splitlines() if line.startswith(("error: ", "warning: "))]
    assert findings == expected
    assert "tcp (other ports)  IPv6    anyone else     open" in result.stdout


def test_a_host_key_that_is_not_pinned_is_refused(server, tmp_path):
    lab, _, options = server
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = fw("check", "--host", f"root@{lab.server_ipv4}", "--identity", options[1], "--known-hosts", str(empty))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: root@{lab.server_ipv4}: the host key is not known (or changed)" in result.stderr


def test_a_login_ssh_refuses_says_to_give_the_key(server, tmp_path):
    lab, _, options = server
    other_key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    result = fw("check", "--host", f"root@{lab.server_ipv4}", "--identity", str(other_key), *options[2:])
    assert result.returncode == 2
    assert "SSH refused the login" in result.stderr and "--identity FILE" in result.stderr


def test_a_login_that_is_not_root_needs_sudo_without_a_password(server):
    """The same script fw sends, run as an unprivileged user in the server's namespace."""
    lab, _, _ = server
    result = lab.run(SERVER, ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-s"],
                     input=SCRIPT_HEAD + RULES_SCRIPT, check=False)
    with pytest.raises(HostError, match=r"nobody can't run iptables-save as root: `sudo -n` .*password is required\. "
                                        r"Log in as root, or allow nobody to run iptables-save"):
        _rules_from(SshTarget("nobody", lab.server_ipv4), parse_sections(result.stdout))


def test_diff_from_host_shows_what_the_stacks_policy_opens_and_closes(server, tmp_path):
    lab, layers, options = server
    layers.use(OPEN_EDGE, None)
    load_host_rules(lab, (RULESETS / "article.v4").read_text())
    stack_file = tmp_path / "Pulumi.adopt.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {
        "hardened-lightsail:target": "lab",
        "hardened-lightsail:firewall": {"adminCidrs": list(ADMIN_CIDRS), "services": [
            {"name": "http", "protocol": "tcp", "ports": "80"}, {"name": "https", "protocol": "tcp", "ports": "443"}]},
    }}))
    result = fw("diff", "--from-host", f"root@{lab.server_ipv4}", "--config", str(stack_file), *options)
    assert result.returncode == 0, result.stderr
    markdown = result.stdout
    assert markdown.startswith(f"### Firewall diff: `root@{lab.server_ipv4}` (live rules) → stack `adopt`\n")
    assert "**0 opened, 5 closed** · live rules: 2 error(s), 5 warning(s)" in markdown
    # SSH stays open for the admin networks only; the trusted IP the article meant loses it too
    # (it is not in adminCidrs), and IPv6 stops being wide open.
    assert markdown.split("| change |")[1].split("\n\n")[0].splitlines()[2:] == [
        "| 🔒 closes | tcp/22 | IPv4 | 203.0.113.5/32 | open | closed | closed | no |",
        "| 🔒 closes | tcp/22 | IPv4 | anyone else | open | closed | closed | no |",
        "| 🔒 closes | tcp/22 | IPv6 | anyone else | open | closed | closed | no |",
        "| 🔒 closes | tcp (other ports) | IPv6 | anyone else | open | closed | closed | no |",
        "| 🔒 closes | udp (other ports) | IPv6 | anyone else | open | closed | closed | no |",
    ]
    assert "<details><summary>Unchanged: 10 rows</summary>" in markdown
    assert "| tcp/22 | IPv4 | 192.0.2.0/24 | open | open | open | YES |" in markdown
    assert "**Lint of the proposed policy**: no findings" in markdown


@pytest.fixture
def kernel_logs_namespaces():
    """A LOG rule in a network namespace other than the machine's own writes to the kernel log
    only when net.netfilter.nf_log_all_netns is 1: a machine-wide switch the root namespace
    alone can set. On for this test only; the previous value goes back however it ends."""
    if not NF_LOG_ALL_NETNS.exists():
        pytest.skip("this kernel has no net.netfilter.nf_log_all_netns")
    previous = NF_LOG_ALL_NETNS.read_text().strip()
    NF_LOG_ALL_NETNS.write_text("1\n")
    try:
        yield
    finally:
        NF_LOG_ALL_NETNS.write_text(previous + "\n")
        assert NF_LOG_ALL_NETNS.read_text().strip() == previous


def drops_from_internet(lab, targets) -> None:
    """One new connection per target from the untrusted client: each a dropped, logged packet."""
    results = probe(lab.namespace(INTERNET), targets, timeout=0.9)
    assert {r.state for r in results} == {"filtered"}, results


def test_logs_summarizes_the_dropped_packet_lines_per_source_port_and_protocol(server, kernel_logs_namespaces):
    lab, layers, options = server
    _, release = render({"adminCidrs": list(ADMIN_CIDRS), "portScan": {"enabled": False},
                         "dropLog": {"prefix": PREFIX, "perMinute": 10, "burst": 5},
                         "services": [{"name": "http", "protocol": "tcp", "ports": "80"}]})
    layers.use(OPEN_EDGE, release)
    v4, v6 = lab.server_ipv4, lab.server_ipv6
    drops_from_internet(lab, [(v4, "tcp", 23), (v4, "tcp", 5432), (v4, "udp", 5353), (v6, "tcp", 8080)])
    result = fw("logs", "--host", f"root@{v4}", *options, "--minutes", "5")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(rf'^"{re.escape(PREFIX)}" lines in the kernel log of root@{re.escape(v4)} \((dmesg|journal)\), '
                     r"last 5 min: 4 \(IPv4 3, IPv6 1\), ", out, re.M), out
    rule = f"root@{v4} iptables-save line"
    assert re.search(rf"^rate limit over IPv4: the LOG rule \({re.escape(rule)} \d+\) logs 10/min, burst 5; not "
                     "reached$", out, re.M), out
    internet4, internet6 = lab.address(INTERNET, 4), lab.address(INTERNET, 6)
    assert re.search(rf"^{re.escape(internet4)} +IPv4 +3$", out, re.M) and \
        re.search(rf"^{re.escape(internet6)} +IPv6 +1$", out, re.M), out
    for port, family in (("tcp/23", 4), ("tcp/5432", 4), ("udp/5353", 4), ("tcp/8080", 6)):
        assert re.search(rf"^{port} +IPv{family} +1$", out, re.M), out
    assert re.search(r"^TCP +2 +1 +3$", out, re.M) and re.search(r"^UDP +1 +0 +1$", out, re.M), out


def test_logs_says_when_the_log_rule_rate_limit_was_reached_and_when_nothing_was_logged(server,
                                                                                       kernel_logs_namespaces):
    lab, layers, options = server
    prefix = PREFIX.replace("drop", "burst")
    _, release = render({"adminCidrs": list(ADMIN_CIDRS), "portScan": {"enabled": False},
                         "dropLog": {"prefix": prefix, "perMinute": 6, "burst": 3}})
    layers.use(OPEN_EDGE, release)
    drops_from_internet(lab, [(lab.server_ipv4, "tcp", port) for port in range(2001, 2011)])
    result = fw("logs", "--host", f"root@{lab.server_ipv4}", *options, "--minutes", "5", "--prefix", prefix)
    lines = int(re.search(r"last 5 min: (\d+) \(IPv4", result.stdout).group(1))
    assert 3 <= lines < 10, result.stdout  # the burst got through, the rest was held back
    assert "rate-limited over IPv4: the LOG rule" in result.stdout and "logs 6/min, burst 3; that was reached " \
        "at" in result.stdout and "the counts below are lower bounds" in result.stdout
    time.sleep(0.1)
    unused = fw("logs", "--host", f"root@{lab.server_ipv4}", *options, "--minutes", "5", "--prefix", "nobody-logs: ")
    assert unused.returncode == 0
    assert unused.stdout.startswith(f'note: no LOG rule on root@{lab.server_ipv4} uses the prefix "nobody-logs: ": '
                                    f"nothing is logged with it (its LOG rules use '{prefix}')\n")
    assert '"nobody-logs: " lines in the kernel log of' in unused.stdout and ": none. Nothing was dropped and " \
        "logged in that time." in unused.stdout
