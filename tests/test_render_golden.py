"""Rendering: each golden policy renders to exactly the stored files, rendering is deterministic,
and the shipped rules have the shape the design promises (order, SSH, ping, IPv6 NDP).

Golden files live in tests/golden/<case>/; rewrite them after an intended change with
    .venv/bin/python -m pytest tests/test_render_golden.py --update-golden
(the option is declared in tests/conftest.py) and review `git diff tests/golden`."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest

from hardened_lightsail import release as release_module
from hardened_lightsail.config import settings_from_values
from hardened_lightsail.host_layer import ssh_limit_table
from hardened_lightsail.networks import parse_cidr
from hardened_lightsail.policy import DropLog, FirewallPolicy, PortRange, PortScanTrap, Service, SshRateLimit
from hardened_lightsail.release import render_release

from golden_cases import GOLDEN_DIR, GOLDEN_FILES, case_names, load_case

CASES = case_names()
PORT_INFO_KEYS = ["protocol", "fromPort", "toPort", "cidrs", "ipv6Cidrs", "cidrListAliases"]
PROTOCOL_ORDER = ["tcp", "udp", "icmp", "icmpv6"]


def test_the_golden_cases_are_all_there():
    # A case directory lost in a merge would silently shrink every test below (more are welcome).
    assert {"blocklist-quiet", "custom-ssh-and-log", "dual-stack-restricted", "minimal-web"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_rendered_release_matches_the_golden_files(case, update_golden):
    _, release = load_case(case)
    directory = GOLDEN_DIR / case
    rendered = {name: release.files[name].decode() for name in GOLDEN_FILES if name in release.files}
    if update_golden:
        for name in GOLDEN_FILES:
            if name in rendered:
                (directory / name).write_text(rendered[name])
            else:
                (directory / name).unlink(missing_ok=True)
    stored = {name: (directory / name).read_text() for name in GOLDEN_FILES if (directory / name).exists()}
    assert sorted(stored) == sorted(rendered), "golden files missing or stale: rerun with --update-golden"
    changed = [name for name in GOLDEN_FILES if name in rendered and rendered[name] != stored[name]]
    for name in (name for name in changed if name not in ("manifest.sha256", "RELEASE")):
        assert rendered[name] == stored[name], f"{case}/{name} differs from the golden copy"
    # Only the hash files differ: name the release files whose content changed (usually the payload).
    moved = sorted(set(rendered.get("manifest.sha256", "").splitlines())
                   ^ set(stored.get("manifest.sha256", "").splitlines()))
    assert changed == [], (f"{case}: the release hash changed although the rules did not; files whose hash "
                           f"changed: {sorted({line.split()[-1] for line in moved})}. If that change is "
                           "intended (e.g. payload/hlfw was edited), rerun with --update-golden")


# --- determinism and the release hash

def base_policy() -> FirewallPolicy:
    """A policy that uses every knob, so that changing any of them can be seen in the hash."""
    return FirewallPolicy(
        admin_cidrs=(parse_cidr("203.0.113.7/32"), parse_cidr("2001:db8:a::/48")),
        services=(Service("https", "tcp", PortRange(443, 443), (parse_cidr("0.0.0.0/0"), parse_cidr("::/0"))),
                  Service("game", "udp", PortRange(27000, 27015), (parse_cidr("198.51.100.0/24"),))),
        blocklist=(parse_cidr("192.0.2.0/24"), parse_cidr("2001:db8:bad::/48")),
    )


def replace(obj, **changes):
    return dataclasses.replace(obj, **changes)


def other_service(**changes) -> tuple[Service, ...]:
    policy = base_policy()
    return (policy.services[0], replace(policy.services[1], **changes))


KNOBS = {
    "adminCidrs": lambda p: replace(p, admin_cidrs=p.admin_cidrs + (parse_cidr("198.51.100.9/32"),)),
    "services (one more)": lambda p: replace(p, services=p.services + (
        Service("http", "tcp", PortRange(80, 80), (parse_cidr("0.0.0.0/0"),)),)),
    "services[].name": lambda p: replace(p, services=other_service(name="match")),
    "services[].protocol": lambda p: replace(p, services=other_service(protocol="tcp")),
    "services[].ports": lambda p: replace(p, services=other_service(ports=PortRange(27000, 27016))),
    "services[].sources": lambda p: replace(p, services=other_service(sources=(parse_cidr("198.51.100.0/25"),))),
    "sshPort": lambda p: replace(p, ssh_port=2222),
    "ping": lambda p: replace(p, ping=False),
    "pingPerSecond": lambda p: replace(p, ping_per_second=6),
    "blocklist": lambda p: replace(p, blocklist=p.blocklist + (parse_cidr("198.51.100.128/25"),)),
    "sshRateLimit.perMinute": lambda p: replace(p, ssh_rate_limit=SshRateLimit(per_minute=21)),
    "sshRateLimit.burst": lambda p: replace(p, ssh_rate_limit=SshRateLimit(burst=21)),
    "portScan.enabled": lambda p: replace(p, port_scan=PortScanTrap(enabled=False)),
    "portScan.threshold": lambda p: replace(p, port_scan=PortScanTrap(threshold=4)),
    "portScan.windowSeconds": lambda p: replace(p, port_scan=PortScanTrap(window_seconds=61)),
    "portScan.banSeconds": lambda p: replace(p, port_scan=PortScanTrap(ban_seconds=3601)),
    "dropLog.prefix": lambda p: replace(p, drop_log=DropLog(prefix="IPTables-Dropped:")),
    "dropLog.perMinute": lambda p: replace(p, drop_log=DropLog(per_minute=11)),
    "dropLog.burst": lambda p: replace(p, drop_log=DropLog(burst=6)),
    # Not in the rules, but shipped in policy.json so the host and the checks see the whole policy.
    "confirmTimeoutSeconds": lambda p: replace(p, confirm_timeout_seconds=300),
    "allowLockout": lambda p: replace(p, allow_lockout=True),
    "docker": lambda p: replace(p, docker="on"),
    "deployerAddresses": lambda p: replace(p, deployer_addresses=(parse_cidr("203.0.113.7/32"),)),
}


@pytest.mark.parametrize("case", CASES)
def test_rendering_twice_gives_identical_bytes_and_hash(case):
    _, first = load_case(case)
    _, second = load_case(case)
    assert first.files == second.files
    assert first.hash == second.hash == first.files["RELEASE"].decode().strip()
    assert len(first.hash) == 16 and int(first.hash, 16) >= 0


def test_order_of_cidrs_in_the_config_does_not_change_the_rules():
    policy = base_policy()
    shuffled = replace(policy, admin_cidrs=policy.admin_cidrs[::-1], blocklist=policy.blocklist[::-1],
                       services=(replace(policy.services[0], sources=policy.services[0].sources[::-1]),
                                 policy.services[1]))
    for name in ("rules.v4", "rules.v6", "cloud-ports.json", "ipsets"):
        assert render_release(shuffled).files[name] == render_release(policy).files[name], name


def test_every_policy_knob_changes_the_release_hash():
    base = render_release(base_policy()).hash
    hashes = {knob: render_release(change(base_policy())).hash for knob, change in KNOBS.items()}
    assert [knob for knob, digest in hashes.items() if digest == base] == []
    assert len(set(hashes.values())) == len(KNOBS), "two different policies share a release hash"


@pytest.mark.parametrize("edited_file", ["hlfw", "hlfw-confirm.sh"])
def test_payload_change_changes_the_release_hash(tmp_path, monkeypatch, edited_file):
    before = render_release(base_policy())
    for name, content in release_module.payload_files().items():
        (tmp_path / name).write_bytes(content + (b"# one more line\n" if name == edited_file else b""))
    monkeypatch.setattr(release_module, "PAYLOAD_DIR", tmp_path)
    after = render_release(base_policy())
    assert after.hash != before.hash
    assert after.files["rules.v4"] == before.files["rules.v4"]


def test_every_part_hlfw_sources_is_shipped_and_nothing_else():
    entry = release_module.PAYLOAD_DIR / "hlfw"
    sourced = re.findall(r'^\. "\$HLFW_DIR/(hlfw-[a-z]+\.sh)"$', entry.read_text(), flags=re.M)
    listed = re.search(r"^HLFW_PARTS='([a-z ]+)'$", entry.read_text(), flags=re.M).group(1).split()
    shipped = set(render_release(base_policy()).files)
    assert sourced == [f"hlfw-{part}.sh" for part in listed]
    assert {name for name in shipped if name.startswith("hlfw")} == {"hlfw", *sourced}


def test_manifest_lists_every_file_with_its_sha256():
    import hashlib
    release = render_release(base_policy())
    lines = release.files["manifest.sha256"].decode().splitlines()
    assert [line.split("  ")[1] for line in lines] == sorted(set(release.files) - {"manifest.sha256", "RELEASE"})
    assert {"rules.v4", "rules.v6", "cloud-ports.json", "ipsets", "hlfw"} <= set(release.files)
    for line in lines:
        digest, name = line.split("  ")
        assert hashlib.sha256(release.files[name]).hexdigest() == digest


def test_a_release_is_written_once_per_directory_and_again_when_a_file_went(tmp_path, monkeypatch):
    # A program with N servers asks N HostFirewalls for the same release directory: one write.
    release = render_release(base_policy())
    written = []
    write_bytes = release_module.Path.write_bytes
    monkeypatch.setattr(release_module.Path, "write_bytes",
                        lambda path, content: (written.append(path.name), write_bytes(path, content))[1])
    directory = tmp_path / f".hardened-lightsail-{release.hash}"
    for _ in range(3):
        assert release.write(directory) == directory
    assert sorted(written) == sorted(release.files)
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == release.files
    assert (directory / "hlfw").stat().st_mode & 0o777 == 0o755
    # Whatever went missing or changed size since is written again (the deploy step reads these files).
    (directory / "rules.v4").unlink()
    (directory / "ipsets").write_bytes(b"truncated")
    written.clear()
    release.write(directory)
    assert sorted(written) == sorted(release.files)
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == release.files
    written.clear()
    release.write(tmp_path / "elsewhere")  # another directory is its own
    assert sorted(written) == sorted(release.files)


# --- the cloud layer (cloud-ports.json is exactly what InstancePublicPorts gets)

@pytest.mark.parametrize("case", CASES)
def test_port_infos_are_sorted_with_both_cidr_lists_explicit(case):
    _, release = load_case(case)
    infos = json.loads(release.files["cloud-ports.json"])
    assert infos == release.port_infos
    assert [list(info) for info in infos] == [PORT_INFO_KEYS] * len(infos)
    assert infos == sorted(infos, key=lambda i: (PROTOCOL_ORDER.index(i["protocol"]), i["fromPort"], i["toPort"]))
    for info in infos:
        assert isinstance(info["cidrs"], list) and isinstance(info["ipv6Cidrs"], list)
        assert info["cidrs"] or info["ipv6Cidrs"], f"{info}: AWS would fill in its own default CIDRs"
        assert info["cidrListAliases"] == []


@pytest.mark.parametrize("case", CASES)
def test_ssh_port_info_comes_only_from_admin_cidrs(case):
    settings, release = load_case(case)
    policy = settings.firewall
    ssh = [info for info in release.port_infos
           if info["protocol"] in ("tcp", "all") and info["fromPort"] <= policy.ssh_port <= info["toPort"]]
    assert ssh == [{
        "protocol": "tcp", "fromPort": policy.ssh_port, "toPort": policy.ssh_port,
        "cidrs": [str(n) for n in policy.admin_v4], "ipv6Cidrs": [str(n) for n in policy.admin_v6],
        "cidrListAliases": [],
    }]


def test_ipv4_only_admins_leave_ipv6_ssh_closed_in_the_cloud():
    _, release = load_case("minimal-web")
    [ssh] = [info for info in release.port_infos if info["fromPort"] == 22]
    assert (ssh["cidrs"], ssh["ipv6Cidrs"]) == (["203.0.113.7/32"], [])


def test_restricted_services_keep_their_sources_per_family_in_the_cloud():
    _, release = load_case("dual-stack-restricted")
    assert [(i["protocol"], i["fromPort"], i["toPort"], i["cidrs"], i["ipv6Cidrs"]) for i in release.port_infos] == [
        ("tcp", 22, 22, ["203.0.113.7/32", "203.0.113.64/26"], ["2001:db8:a::/48"]),
        ("tcp", 443, 443, ["0.0.0.0/0"], ["::/0"]),
        ("tcp", 5432, 5432, ["198.51.100.0/24"], ["2001:db8:100::/56"]),
        ("tcp", 9100, 9100, ["198.51.100.7/32"], []),
        ("udp", 27000, 27015, ["0.0.0.0/0"], ["::/0"]),
        ("icmp", 8, 0, ["0.0.0.0/0"], []),
        ("icmpv6", 128, 0, [], ["::/0"]),
    ]


@pytest.mark.parametrize("case", CASES)
def test_ping_is_icmp_8_0_and_icmpv6_128_0_only_when_enabled(case):
    settings, release = load_case(case)
    pings = [(i["protocol"], i["fromPort"], i["toPort"], i["cidrs"], i["ipv6Cidrs"])
             for i in release.port_infos if i["protocol"].startswith("icmp")]
    if settings.firewall.ping:
        assert pings == [("icmp", 8, 0, ["0.0.0.0/0"], []), ("icmpv6", 128, 0, [], ["::/0"])]
    else:
        assert pings == []


# --- the host layer (rules.v4 / rules.v6 as shipped)

def rule_lines(release, family: int, chain: str) -> list[str]:
    text = release.files[f"rules.v{family}"].decode()
    return [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]


def index_of(lines: list[str], fragment: str) -> int:
    found = [index for index, line in enumerate(lines) if fragment in line]
    assert found, f"no rule contains {fragment!r}"
    return found[0]


FLAG_DROPS = [
    "-A HL-INPUT -p tcp --tcp-flags ALL NONE -m comment --comment \"NULL scan: no flags at all\" -j DROP",
    "-A HL-INPUT -p tcp --tcp-flags ALL FIN,PSH,URG -m comment --comment \"Xmas scan: FIN+PSH+URG\" -j DROP",
    "-A HL-INPUT -p tcp --tcp-flags ALL FIN -m comment --comment \"FIN scan: FIN without ACK\" -j DROP",
    "-A HL-INPUT -p tcp --tcp-flags SYN,FIN SYN,FIN -m comment --comment \"SYN+FIN never happens in real TCP\" -j DROP",
    "-A HL-INPUT -p tcp --tcp-flags SYN,RST SYN,RST -m comment --comment \"SYN+RST never happens in real TCP\" -j DROP",
    "-A HL-INPUT -p tcp --tcp-flags FIN,RST FIN,RST -m comment --comment \"FIN+RST never happens in real TCP\" -j DROP",
    "-A HL-INPUT -p tcp ! --syn -m conntrack --ctstate NEW -m comment --comment "
    "\"a new TCP connection must start with SYN\" -j DROP",
]


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("case", CASES)
def test_rules_come_in_the_safe_order(case, family):
    settings, release = load_case(case)
    policy = settings.firewall
    text = release.files[f"rules.v{family}"].decode()
    # The project owns its HL-* chains and no built-in chain's policy (a flushed INPUT must not
    # lock anyone out: HL-INPUT ends with the DROP).
    assert "\n*filter\n:HL-INPUT - [0:0]\n" in text and not any(f":{chain} " in text for chain in ("INPUT", "FORWARD", "OUTPUT"))
    assert text.rstrip().endswith("COMMIT")
    # Its one rule in INPUT comes last: appended, after whatever other tools put first.
    assert rule_lines(release, family, "INPUT") == [
        '-A INPUT -m comment --comment "hardened-lightsail: the host policy (HL-* chains)" -j HL-INPUT']
    assert text.rstrip().splitlines()[-3] == rule_lines(release, family, "INPUT")[0]
    rules = rule_lines(release, family, "HL-INPUT")
    assert rules[0] == '-A HL-INPUT -i lo -m comment --comment "loopback: local programs talk to each other" -j ACCEPT'
    established = index_of(rules, "--ctstate ESTABLISHED,RELATED")
    assert rules[established + 1] == ('-A HL-INPUT -m conntrack --ctstate INVALID -m comment --comment '
                                      '"packets conntrack can\'t place in any connection" -j DROP')
    flags = [index_of(rules, line) for line in FLAG_DROPS]
    assert flags == list(range(established + 2, established + 2 + len(FLAG_DROPS)))
    ssh_jump = index_of(rules, f"-p tcp --dport {policy.ssh_port} -m conntrack --ctstate NEW")
    assert rules[ssh_jump].endswith("-j HL-SSH")
    services = [index for index, line in enumerate(rules) if '--comment "service ' in line]
    assert established < flags[-1] < ssh_jump < min(services, default=ssh_jump + 1)
    assert rules[-1] == '-A HL-INPUT -m comment --comment "whatever no rule above accepted" -j HL-LOG-DROP'
    log = policy.drop_log
    assert rule_lines(release, family, "HL-LOG-DROP") == [
        f"-A HL-LOG-DROP -m limit --limit {log.per_minute}/min --limit-burst {log.burst} -m comment --comment "
        f"\"kernel log line for the operator (journalctl -k | grep the prefix)\" -j LOG --log-prefix "
        f"\"{log.prefix}\" --log-level 4",
        f"-A HL-LOG-DROP -m comment --comment \"dropped (logged above, at most {log.per_minute} lines/min)\" -j DROP",
    ]


def test_custom_log_prefix_and_limit_are_in_the_final_log_rule():
    _, release = load_case("custom-ssh-and-log")
    for family in (4, 6):
        [log, _] = rule_lines(release, family, "HL-LOG-DROP")
        assert "-m limit --limit 30/min --limit-burst 10" in log
        assert log.endswith('-j LOG --log-prefix "HL-DROP: " --log-level 4')


@pytest.mark.parametrize("family", [4, 6])
def test_ssh_is_accepted_only_from_admins_and_rate_limited(family):
    _, release = load_case("custom-ssh-and-log")
    admin = {4: "203.0.113.7/32", 6: "2001:db8:a::/48"}[family]
    assert rule_lines(release, family, "HL-SSH") == [
        f"-A HL-SSH -s {admin} -m hashlimit --hashlimit-upto 6/min --hashlimit-burst 3 --hashlimit-mode srcip "
        f"--hashlimit-name {ssh_limit_table(family, 6, 3)} -m comment --comment \"admin {admin}: at most 6/min new SSH "
        "connections per source\" -j ACCEPT",
        f"-A HL-SSH -s {admin} -m comment --comment \"admin {admin} over the SSH rate limit: drop, no ban\" "
        "-j HL-LOG-DROP",
        '-A HL-SSH -m comment --comment "not an admin: SSH is closed for this source (port-scan trap next)" -j RETURN',
    ]
    assert [line for line in rule_lines(release, family, "HL-INPUT") if "--dport 2222" in line] == [
        '-A HL-INPUT -p tcp --dport 2222 -m conntrack --ctstate NEW -m comment --comment '
        '"all new SSH connection attempts go through the admin check" -j HL-SSH']
    assert not [line for line in release.files[f"rules.v{family}"].decode().splitlines() if "--dport 22 " in line]


NDP_RULES = [
    f"-A HL-INPUT -p ipv6-icmp --icmpv6-type {kind} -m hl --hl-eq 255 -m comment --comment "
    f"\"neighbour discovery ({kind}); hop limit 255 proves it is on-link\" -j ACCEPT"
    for kind in ("router-solicitation", "router-advertisement", "neighbour-solicitation", "neighbour-advertisement")
]


@pytest.mark.parametrize("case", CASES)
def test_ipv6_neighbour_discovery_is_accepted_only_with_hop_limit_255(case):
    _, release = load_case(case)
    rules = rule_lines(release, 6, "HL-INPUT")
    positions = [index_of(rules, line) for line in NDP_RULES]
    assert [rules[p] for p in positions] == NDP_RULES
    # Before conntrack: NDP must work even for packets conntrack calls INVALID.
    assert max(positions) < index_of(rules, "--ctstate INVALID")
    assert [line for line in rules if "neighbour-" in line or "router-" in line] == NDP_RULES
    assert "icmpv6" not in release.files["rules.v4"].decode()


@pytest.mark.parametrize("case", CASES)
def test_ping_rule_is_rate_limited_and_only_there_when_enabled(case):
    settings, release = load_case(case)
    policy = settings.firewall
    for family, match in ((4, "-p icmp --icmp-type echo-request"), (6, "-p ipv6-icmp --icmpv6-type echo-request")):
        pings = [line for line in rule_lines(release, family, "HL-INPUT") if "echo-request" in line]
        expected = [f"-A HL-INPUT {match} -m limit --limit {policy.ping_per_second}/sec --limit-burst "
                    f"{policy.ping_per_second * 2} -m comment --comment \"ping: at most "
                    f"{policy.ping_per_second}/s echo requests\" -j ACCEPT",
                    f"-A HL-INPUT {match} -m comment --comment \"echo requests over the limit\" -j DROP"]
        assert pings == (expected if policy.ping else [])
        if policy.ping:  # before conntrack, or a flood of one ping session is never limited
            lines = rule_lines(release, family, "HL-INPUT")
            assert lines.index(pings[-1]) < next(i for i, line in enumerate(lines) if "ESTABLISHED" in line)


def test_blocklist_is_an_ipset_dropped_before_any_service():
    _, release = load_case("blocklist-quiet")
    assert release.files["ipsets"].decode() == (
        "create hl-blocklist-v4 hash:net family inet hashsize 1024 maxelem 65536\n"
        "add hl-blocklist-v4 192.0.2.128/25\n"
        "add hl-blocklist-v4 198.51.100.0/24\n"
        "create hl-blocklist-v6 hash:net family inet6 hashsize 1024 maxelem 65536\n"
        "add hl-blocklist-v6 2001:db8:bad::/48\n")
    for family in (4, 6):
        rules = rule_lines(release, family, "HL-INPUT")
        blocklist = index_of(rules, f"-m set --match-set hl-blocklist-v{family} src")
        assert rules[blocklist].endswith("-j DROP")
        assert blocklist < index_of(rules, "-j HL-SSH") < index_of(rules, '"service https')
        assert "HL-PORTSCAN" not in release.files[f"rules.v{family}"].decode()


def test_a_long_blocklist_starts_with_one_hash_bucket_per_member():
    """A set started at 1024 buckets is rehashed by the kernel every time it doubles while
    `ipset restore` fills it; a long list starts at its size (a power of two), a short one at
    ipset's default."""
    v4 = [f"198.51.100.{last}/32" for last in range(200)]
    v6 = [f"2001:db8:{index:x}::/48" for index in range(5000)]
    policy = settings_from_values({"firewall": {"adminCidrs": ["192.0.2.10/32"], "blocklist": v4 + v6}}).firewall
    creates = [line for line in render_release(policy).files["ipsets"].decode().splitlines()
               if line.startswith("create ")]
    assert creates == ["create hl-blocklist-v4 hash:net family inet hashsize 1024 maxelem 65536",
                       "create hl-blocklist-v6 hash:net family inet6 hashsize 8192 maxelem 65536"]


@pytest.mark.parametrize("case", [c for c in CASES if c != "blocklist-quiet"])
def test_without_a_blocklist_there_is_no_ipset_file(case):
    _, release = load_case(case)
    assert "ipsets" not in release.files
    assert "--match-set" not in release.files["rules.v4"].decode() + release.files["rules.v6"].decode()
