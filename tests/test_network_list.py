"""Blocklists held as integer keys (network_list.NetworkList, networks.network_key): the same
order, text, equality, index answers and release as the ipaddress objects they stand for, over
IPv4/IPv6 mixes, host routes, duplicates, overlaps and the spellings a list may use."""
from __future__ import annotations

import ipaddress
import json
import random
from dataclasses import replace

import pytest

from hardened_lightsail.analysis import analyse
from hardened_lightsail.config import ConfigError, settings_from_values
from hardened_lightsail.network_list import NetworkList, index_of
from hardened_lightsail.networks import key_network, key_texts, network_key, parse_cidr, parse_cidr_key
from hardened_lightsail.release import indented_json, render_release

ADMIN = "203.0.113.7/32"
net = ipaddress.ip_network
MIXED = [net("2001:db8::/32"), net("198.51.100.0/24"), net("192.0.2.7/32"), net("2001:db8::1/128"),
         net("198.51.100.0/25"), net("::/0"), net("0.0.0.0/0"), net("::ffff:192.0.2.0/120"),
         net("::192.0.2.0/120"), net("255.255.255.255/32"), net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"),
         net("198.51.100.0/24")]


def _random_networks(count: int, seed: int) -> list:
    rng, found = random.Random(seed), []
    for _ in range(count):
        version = rng.choice((4, 6))
        bits = 32 if version == 4 else 128
        prefix = rng.choice((0, 1, 8, 24, 31, 32) if version == 4 else (0, 1, 32, 64, 127, 128))
        address = rng.getrandbits(bits) & ~((1 << (bits - prefix)) - 1)
        found.append(ipaddress.ip_network((address, prefix)))
    return found


def policy_of(**firewall):
    return settings_from_values({"firewall": {"adminCidrs": [ADMIN], **firewall}}).firewall


@pytest.mark.parametrize("networks", [MIXED, _random_networks(3000, seed=11)], ids=["edges", "random"])
def test_keys_round_trip_and_order_and_print_as_ipaddress_does(networks):
    keys = [network_key(n) for n in networks]
    assert [key_network(k) for k in keys] == networks
    assert key_texts(keys) == [str(n) for n in networks]  # IPv4-mapped/-compatible: ipaddress's own form
    by_key = [key_network(k) for k in sorted(keys)]
    assert by_key == sorted(networks, key=lambda n: (n.version, n))  # IPv4 first, address, prefix length
    assert [parse_cidr_key(str(n)) for n in networks] == keys


def test_a_network_list_is_the_tuple_of_its_networks():
    listed = NetworkList.of(MIXED)
    assert listed == tuple(MIXED) and tuple(MIXED) == listed and hash(listed) == hash(tuple(MIXED))
    assert listed != tuple(MIXED[::-1]) and listed != tuple(MIXED[:-1]) and listed != ("198.51.100.0/24",) * 12
    assert list(listed) == MIXED and listed[3] == MIXED[3] and listed[-1] == MIXED[-1]
    assert listed[::-1] == tuple(MIXED[::-1])  # a slice is a plain tuple of networks
    assert NetworkList.of(listed) is listed and not NetworkList(()) and len(listed) == len(MIXED)
    assert "2001:db8::/32" in repr(listed) and "12 networks" in repr(listed)


def test_families_are_sorted_and_deduplicated_and_keep_overlapping_entries():
    v4, v6 = NetworkList.of(MIXED).families
    assert [str(n) for n in v4] == ["0.0.0.0/0", "192.0.2.7/32", "198.51.100.0/24", "198.51.100.0/25",
                                    "255.255.255.255/32"]
    assert v6.texts == ["::/0", "::c000:200/120", "::ffff:c000:200/120", "2001:db8::/32", "2001:db8::1/128",
                        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]


def test_positions_name_every_entry_equal_to_a_hit_in_list_order():
    listed = NetworkList.of(MIXED)
    assert listed.positions([net("198.51.100.0/24"), net("2001:db8::1/128")]) == [
        (1, net("198.51.100.0/24")), (3, net("2001:db8::1/128")), (11, net("198.51.100.0/24"))]
    assert listed.positions([]) == [] and listed.positions([net("192.0.2.0/24")]) == []


@pytest.mark.parametrize("probe, covering, inside", [
    ("198.51.100.77/32", ["198.51.100.0/24", "198.51.100.0/25"], []),
    ("198.51.100.0/24", ["198.51.100.0/24"], ["198.51.100.0/25"]),
    ("192.0.2.7/32", ["192.0.2.7/32"], []),  # a host route covers itself
    ("192.0.2.0/24", [], ["192.0.2.7/32"]),
    ("2001:db8::1/128", ["2001:db8::/32", "2001:db8::1/128"], []),
    ("2001:db8::/31", [], ["2001:db8::/32", "2001:db8::1/128"]),
    ("255.255.255.255/32", ["255.255.255.255/32"], []),  # the top of the space: no key past it
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"], []),
])
def test_the_index_of_a_mixed_list_with_host_routes(probe, covering, inside):
    members = [n for n in MIXED if n.prefixlen]  # no /0: it would cover every probe
    index = index_of(members)
    assert [str(n) for n in index.covering(net(probe))] == covering
    assert sorted(map(str, index.overlapping(net(probe)))) == sorted(covering + inside)
    assert index.covers(net(probe)) == bool(covering)


def test_spellings_of_a_list_entry_give_the_canonical_network_or_mains_error(tmp_path):
    policy = policy_of(blocklist=["192.0.2.0/024", "2001:DB8:0:0::/48", "198.51.100.9", "2001:db8:ffff::1"])
    assert [str(n) for n in policy.blocklist] == ["192.0.2.0/24", "2001:db8::/48", "198.51.100.9/32",
                                                  "2001:db8:ffff::1/128"]
    written = json.loads(render_release(policy).files["policy.json"])["blocklist"]
    assert written == ["192.0.2.0/24", "198.51.100.9/32", "2001:db8::/48", "2001:db8:ffff::1/128"]
    with pytest.raises(ConfigError) as raised:
        policy_of(blocklist=["192.0.2.1/24", "192.0.2.0/255.255.255.0", "2001:db8::/129", "::/0"])
    assert raised.value.problems == [
        'firewall.blocklist[0]: "192.0.2.1/24" has host bits set; did you mean "192.0.2.0/24"?',
        'firewall.blocklist[1]: "192.0.2.0/255.255.255.0" is not a CIDR (e.g. "203.0.113.7/32" or "2001:db8::/64")',
        'firewall.blocklist[2]: "2001:db8::/129" is not a CIDR (e.g. "203.0.113.7/32" or "2001:db8::/64")',
        'firewall.blocklist[3]: "::/0" would block everyone, admins included; list the networks to block',
    ]
    assert parse_cidr("192.0.2.0/024") == net("192.0.2.0/24")


def test_duplicates_and_overlaps_ship_once_and_a_lockout_names_every_listed_copy():
    entries = ["2001:db8::/48", "198.51.100.0/24", "198.51.100.0/25", "2001:db8::/48", "198.51.100.0/24"]
    policy = policy_of(blocklist=entries)
    release = render_release(policy)
    assert release.files["ipsets"].decode().splitlines()[1:] == [
        "add hl-blocklist-v4 198.51.100.0/24", "add hl-blocklist-v4 198.51.100.0/25",
        "create hl-blocklist-v6 hash:net family inet6 hashsize 1024 maxelem 65536", "add hl-blocklist-v6 2001:db8::/48"]
    # The same networks as ipaddress objects (a policy made in code) give the very same release.
    as_tuple = replace(policy, blocklist=tuple(net(e) for e in entries))
    assert as_tuple == policy and render_release(as_tuple).files == release.files
    blocked = policy_of(adminCidrs=["198.51.100.7/32"], blocklist=entries)
    messages = [f.message.split(". Refusing")[0] for f in analyse(blocked, render_release(blocked))]
    assert [m for m in messages if "firewall.blocklist" in m] == [
        "lock-out: firewall.blocklist[1] 198.51.100.0/24 blocks (part of) admin CIDR 198.51.100.7/32",
        "lock-out: firewall.blocklist[2] 198.51.100.0/25 blocks (part of) admin CIDR 198.51.100.7/32",
        "lock-out: firewall.blocklist[4] 198.51.100.0/24 blocks (part of) admin CIDR 198.51.100.7/32",
    ]


@pytest.mark.parametrize("values", [
    {}, {"blocklist": []}, {"blocklist": ["192.0.2.0/24"]}, {"a": ["x", 'q"uote', "ünï", "\n"], "b": [1, "x"]},
    {"services": [{"name": "web", "sources": ["0.0.0.0/0"]}], "ping": True, "none": None, "empty": {}},
    {"nested": {"list": ["a", "b"], "deeper": {"x": []}}, "n": 3, "s": "é"},
])
def test_policy_json_is_written_as_json_dumps_would(values):
    assert indented_json(values) == json.dumps(values, indent=2)
