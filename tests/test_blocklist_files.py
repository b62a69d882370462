"""firewall.blocklistFiles: long blocklists in files next to the stack file (the engine can't hand
a program more than 128 KiB of config), read in the formats publishers use, the same release as
the same CIDRs written inline, bad lines named by file and line, `fw diff` reading the base
side's file from git, and the fast paths big lists take (CIDR parsing and printing, lookups)."""
from __future__ import annotations

import ipaddress
import random
import subprocess
from pathlib import Path

import pytest
import yaml
from test_policy_diff import fw_diff, git

from hardened_lightsail.analysis import analyse
from hardened_lightsail.config import ConfigError, load_stack_file, settings_from_values
from hardened_lightsail.evaluate import evaluable
from hardened_lightsail.network_list import index_of
from hardened_lightsail.networks import cidr_text, parse_cidr
from hardened_lightsail.release import render_release

FW = Path(__file__).resolve().parent.parent / "scripts" / "fw"
ADMIN = "203.0.113.7/32"
SPAMHAUS_STYLE = """\
; Spamhaus DROP List 2024/05/01 - (c) 2024 The Spamhaus Project
; Last-Modified: Wed, 01 May 2024 12:00:00 GMT
192.0.2.0/25 ; SBL000001
198.51.100.0/24 ; SBL000002

# FireHOL style: bare addresses and a comment of its own
198.51.100.7
2001:db8:dead::/48   # an IPv6 range
"""


def write_stack(directory: Path, firewall: dict, name: str = "web") -> Path:
    path = directory / f"Pulumi.{name}.yaml"
    config = {"hardened-lightsail:firewall": {"adminCidrs": [ADMIN], **firewall}}
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def test_a_blocklist_file_renders_the_release_of_the_same_cidrs_written_inline(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "drop.txt").write_text(SPAMHAUS_STYLE)
    from_file = load_stack_file(write_stack(tmp_path, {"blocklistFiles": ["lists/drop.txt"]}))
    inline = settings_from_values({"firewall": {"adminCidrs": [ADMIN], "blocklist": [
        "192.0.2.0/25", "198.51.100.0/24", "198.51.100.7/32", "2001:db8:dead::/48"]}})
    assert from_file.firewall.blocklist == inline.firewall.blocklist
    assert render_release(from_file.firewall).hash == render_release(inline.firewall).hash
    # The release's policy.json holds the networks, not the path: the deploy step needs no file.
    assert b"blocklistFiles" not in render_release(from_file.firewall).files["policy.json"]


def test_inline_entries_and_several_files_add_up(tmp_path):
    (tmp_path / "a.txt").write_text("198.51.100.0/24\n")
    (tmp_path / "b.txt").write_text("2001:db8:1::/48\n198.51.100.0/24\n")
    settings = load_stack_file(write_stack(tmp_path, {"blocklist": ["192.0.2.0/24"], "blocklistFiles": ["a.txt", "b.txt"]}))
    assert [str(n) for n in settings.firewall.blocklist] == ["192.0.2.0/24", "198.51.100.0/24", "2001:db8:1::/48",
                                                             "198.51.100.0/24"]
    assert settings.firewall.blocklist_v4 == (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("198.51.100.0/24"))


def test_bad_lines_are_named_by_file_and_line_and_counted_past_five(tmp_path):
    lines = ["198.51.100.0/24", "203.0.113.1/24", "not-an-address", "0.0.0.0/0"] + [f"192.0.2.{n}/33" for n in range(6)]
    (tmp_path / "drop.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as raised:
        load_stack_file(write_stack(tmp_path, {"blocklistFiles": ["drop.txt", "missing.txt", 7]}))
    assert raised.value.problems == [
        'firewall.blocklistFiles[0]: "drop.txt" line 2: "203.0.113.1/24" has host bits set; did you mean '
        '"203.0.113.0/24"?; line 3: "not-an-address" is not a CIDR (e.g. "203.0.113.7/32" or "2001:db8::/64"); '
        'line 4: "0.0.0.0/0" would block everyone, admins included; line 5: "192.0.2.0/33" is not a CIDR (e.g. '
        '"203.0.113.7/32" or "2001:db8::/64"); line 6: "192.0.2.1/33" is not a CIDR (e.g. "203.0.113.7/32" or '
        '"2001:db8::/64"); and 4 more bad line(s)',
        'firewall.blocklistFiles[1]: "missing.txt" can\'t be read (No such file or directory); paths are relative '
        "to the stack file's directory",
        'firewall.blocklistFiles[2]: 7 is not a file path (e.g. "blocklists/drop.txt", relative to the stack file)',
    ]


def test_paths_are_relative_to_the_stack_file_wherever_fw_runs(tmp_path):
    project = tmp_path / "infra"
    project.mkdir()
    (project / "drop.txt").write_text("198.51.100.0/24\n")
    stack = write_stack(project, {"blocklistFiles": ["drop.txt"]})
    result = subprocess.run([str(FW), "check", "--config", str(stack)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_lockout_from_a_file_entry_names_the_file(tmp_path):
    (tmp_path / "drop.txt").write_text("192.0.2.0/24\n203.0.113.0/24\n")
    settings = load_stack_file(write_stack(tmp_path, {"blocklist": ["198.51.100.0/24"], "blocklistFiles": ["drop.txt"]}))
    messages = [f.message for f in analyse(settings.firewall, render_release(settings.firewall))]
    assert any(m.startswith("lock-out: firewall.blocklistFiles[0] (drop.txt) 203.0.113.0/24 blocks (part of) admin "
                            "CIDR 203.0.113.7/32.") for m in messages), messages


def test_fw_diff_reads_the_base_sides_blocklist_file_from_git(tmp_path):
    repo = tmp_path / "repo"
    (repo / "lists").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "lists" / "drop.txt").write_text("198.51.100.0/24\n")
    stack = write_stack(repo, {"blocklistFiles": ["lists/drop.txt"]})
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "base")
    (repo / "lists" / "drop.txt").write_text("198.51.100.0/24\n2001:db8:bad::/48\n")
    result = fw_diff(stack)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "**Blocklist** (host layer, dropped before anything else): IPv4 +0/−0, IPv6 +1/−0 CIDRs" in result.stdout


def _random_networks(count: int, seed: int = 7) -> list:
    rng, found = random.Random(seed), []
    for _ in range(count):
        version = rng.choice((4, 6))
        bits = 32 if version == 4 else 128
        prefix = rng.choice((0, 1, 8, 16, 24, 31, 32) if version == 4 else (0, 1, 16, 32, 48, 64, 96, 127, 128))
        # Zero runs of every length, so every way of compressing IPv6 text comes up.
        address = rng.getrandbits(bits) if rng.random() < 0.5 else rng.choice((0, 1, 0xffff << 32)) << rng.randrange(bits)
        address &= (1 << bits) - 1
        found.append(ipaddress.ip_network((address & ~((1 << (bits - prefix)) - 1), prefix)))
    return found


def test_fast_cidr_parsing_and_printing_agree_with_ipaddress():
    for network in _random_networks(20000):
        assert cidr_text(network) == str(network)
        assert parse_cidr(str(network)) == network
        assert parse_cidr(str(network.network_address)) == ipaddress.ip_network(network.network_address)
    for text in ("192.0.2.1/24", "01.2.3.4/32", "1.2.3.4/33", "2001:db8::1/32", "::/129", "1.2.3.4/+8", "", "/24"):
        with pytest.raises(ValueError):
            parse_cidr(text)
    # Only plain CIDR text gets to either parser (networks.CIDR_TEXT): no netmasks, blanks or zones.
    for text in ("192.0.2.0/255.255.255.0", " 192.0.2.0/24", "fe80::1%eth0"):
        with pytest.raises(ValueError):
            parse_cidr(text)


def test_the_network_index_answers_as_comparing_with_every_member_would():
    members = _random_networks(1000, seed=3)
    index = index_of(members)
    for probe in _random_networks(1000, seed=4):
        assert index.covers(probe) == any(m.version == probe.version and probe.subnet_of(m) for m in members)
        expected = {m for m in members if m.version == probe.version and m.overlaps(probe)}
        assert set(index.overlapping(probe)) == expected, probe


def test_the_blocklist_is_indexed_once_for_the_lockout_check_and_the_rules(tmp_path):
    """The lock-out check's index and the one the rules' ipsets are evaluated with are the same
    tables, over the very lists the rules' ipsets hold: not three builds of 100,000 entries."""
    (tmp_path / "list.txt").write_text("".join(f"2001:db8:{index:x}::/48\n" for index in range(300)) + "198.51.100.0/24\n")
    policy = load_stack_file(write_stack(tmp_path, {"blocklistFiles": ["list.txt"]})).firewall
    release = render_release(policy)
    for family, ruleset in zip((4, 6), release.rulesets, strict=True):
        ipset = evaluable(ruleset).facts.sets[f"hl-blocklist-v{family}"]
        assert ipset.networks is (policy.blocklist_v4 if family == 4 else policy.blocklist_v6)
        assert ipset.index is ipset.networks.network_index
        assert ipset.index._keys[family] is policy.blocklist_index._keys[family]
    assert policy.blocklist_index.covers(ipaddress.ip_network("2001:db8:12b::1/128"))
    assert not policy.blocklist_index.covers(ipaddress.ip_network("2001:db8:12c::/48"))
