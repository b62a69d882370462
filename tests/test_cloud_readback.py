"""The cloud firewall read back: what AWS stores against the policy's rendered cloud layer,
compared by what each lets in (hardened_lightsail/cloud_readback.py)."""
from __future__ import annotations

import pytest

from hardened_lightsail.cloud_layer import cloud_port_infos, from_provider_outputs, to_provider_args
from hardened_lightsail.cloud_readback import CloudReadback, read_back
from hardened_lightsail.config import settings_from_values


def info(protocol, first, last, cidrs=(), ipv6=(), aliases=()):
    return {"protocol": protocol, "fromPort": first, "toPort": last, "cidrs": list(cidrs),
            "ipv6Cidrs": list(ipv6), "cidrListAliases": list(aliases)}


ANYONE = {"cidrs": ["0.0.0.0/0"], "ipv6": ["::/0"]}
POLICY = [
    info("tcp", 22, 22, ["203.0.113.7/32"]),  # IPv4 admins only: ipv6Cidrs empty
    info("tcp", 80, 80, **ANYONE),
    info("tcp", 8000, 8010, ["198.51.100.0/24"], ["2001:db8:100::/48"]),
    info("icmp", 8, 0, ["0.0.0.0/0"]),
    info("icmpv6", 128, 0, ipv6=["::/0"]),
]


def more(stored, policy=POLICY):
    return [row.line("+") for row in read_back("web-0", policy, stored).more_open]


def less(stored, policy=POLICY):
    return [row.line("-") for row in read_back("web-0", policy, stored).less_open]


def test_the_list_as_sent_matches():
    readback = read_back("web-0", POLICY, POLICY)
    assert readback.matches and readback.summary() == (
        "web-0: the cloud firewall matches the policy (5 port info(s) as AWS stores them)")


def test_the_same_rules_written_otherwise_match():
    stored = [
        info("icmpv6", 128, -1, ["0.0.0.0/0"], ["::/0"]),  # code -1, and a v4 default icmpv6 can't use
        info("tcp", 8006, 8010, ["198.51.100.0/24"], ["2001:DB8:100::/48"]),  # split in two, upper case
        info("tcp", 8000, 8005, ["198.51.100.0/25", "198.51.100.128/25"], ["2001:db8:100::/48"]),
        info("icmp", 8, -1, ["0.0.0.0/0"], ["::/0"]),  # the console's ping, and a v6 default icmp can't use
        info("tcp", 80, 80, ["0.0.0.0/0", "0.0.0.0/0"], ["::/0"]),
        info("tcp", 22, 22, ["203.0.113.7"]),  # no prefix: one address
    ]
    assert read_back("web-0", POLICY, stored).matches


def test_ranges_stored_merged_match_the_rules_they_merge():
    policy = [info("tcp", 80, 80, **ANYONE), info("tcp", 81, 90, **ANYONE)]
    assert read_back("web-0", policy, [info("tcp", 80, 90, **ANYONE)]).matches


def test_aws_default_for_a_list_left_out_is_more_open_and_named_as_such():
    stored = [info("tcp", 22, 22, ["203.0.113.7/32"], ["::/0"]), *POLICY[1:]]
    assert more(stored) == ["tcp 22: ipv6Cidrs +::/0 (AWS's default: the policy leaves ipv6Cidrs empty here and "
                            "pulumi-aws sends no empty list, so `up` can't clear it)"]
    assert less(stored) == []


def test_any_source_in_a_list_the_policy_leaves_empty_is_named_as_out_of_reach_of_up():
    stored = [info("tcp", 22, 22, ["203.0.113.7/32"], ["2001:db8:bad::/48"]), *POLICY[1:]]
    assert more(stored) == ["tcp 22: ipv6Cidrs +2001:db8:bad::/48 (not from the policy: the policy leaves ipv6Cidrs "
                            "empty here and pulumi-aws sends no empty list, so `up` can't clear it)"]


def test_a_wider_source_names_the_cidr_as_aws_stores_it():
    policy = [info("tcp", 22, 22, ["203.0.113.7/32"], ["2001:db8:7::/64"])]
    stored = [info("tcp", 22, 22, ["203.0.113.7/32", "203.0.113.0/24"], ["2001:db8:7::/64", "::/0"])]
    assert more(stored, policy) == ["tcp 22: cidrs +203.0.113.0/24", "tcp 22: ipv6Cidrs +::/0"]


def test_a_host_address_with_a_prefix_means_its_whole_network():
    stored = [info("tcp", 22, 22, ["203.0.113.7/24"]), *POLICY[1:]]
    assert more(stored) == ["tcp 22: cidrs +203.0.113.7/24"]


def test_a_wider_port_range_names_only_the_extra_ports():
    stored = [*POLICY[:2], info("tcp", 7990, 8100, ["198.51.100.0/24"], ["2001:db8:100::/48"]), *POLICY[3:]]
    assert more(stored) == ["tcp 7990-7999, 8011-8100: cidrs +198.51.100.0/24",
                            "tcp 7990-7999, 8011-8100: ipv6Cidrs +2001:db8:100::/48"]


def test_udp_is_not_tcp():
    stored = [*POLICY, info("udp", 80, 80, **ANYONE)]
    assert more(stored) == ["udp 80: cidrs +0.0.0.0/0", "udp 80: ipv6Cidrs +::/0"]


def test_icmp_types_and_codes_with_minus_one_for_any():
    stored = [*POLICY, info("icmp", -1, -1, ["0.0.0.0/0"]), info("icmpv6", 1, -1, ipv6=["::/0"]),
              info("icmpv6", 2, 0, ipv6=["2001:db8::/32"])]
    assert more(stored) == ["icmp types 0-7, types 9-255: cidrs +0.0.0.0/0", "icmpv6 type 1: ipv6Cidrs +::/0",
                            "icmpv6 type 2 code 0: ipv6Cidrs +2001:db8::/32"]


def test_the_all_protocol_opens_everything_to_its_sources():
    stored = [*POLICY, info("all", 0, 65535, ["198.51.100.7/32"])]
    assert more(stored) == ["all (every protocol and port): cidrs +198.51.100.7/32"]
    # even to sources the policy lets in somewhere: "all" opens every other protocol too
    assert more([*POLICY, info("all", 0, 65535, ["203.0.113.7/32"])]) == [
        "all (every protocol and port): cidrs +203.0.113.7/32"]


def test_cidr_list_aliases_are_sources_of_their_own():
    stored = [info("tcp", 22, 22, ["203.0.113.7/32"], aliases=["lightsail-connect"]), *POLICY[1:]]
    assert more(stored) == ["tcp 22: cidrListAliases +lightsail-connect (not from the policy: the policy leaves "
                            "cidrListAliases empty here and pulumi-aws sends no empty list, so `up` can't clear it)"]


def test_what_the_check_cannot_read_counts_as_open_to_everything_it_could_mean():
    stored = [*POLICY, info("tcp", 443, 443, ["not-a-cidr", "2001:db8::/32"]), info("sctp", 9, 9, ["0.0.0.0/0"])]
    assert more(stored) == ["tcp 443: cidrs +'not-a-cidr' (not a CIDR the check can read), "
                            "+'2001:db8::/32' (not a CIDR the check can read)",
                            "sctp every port: cidrs +0.0.0.0/0"]


def test_less_open_rows_name_what_the_policy_opens_and_aws_keeps_closed():
    stored = [POLICY[0], info("tcp", 80, 80, ["0.0.0.0/0"]), info("tcp", 8000, 8005, ["198.51.100.0/25"]),
              POLICY[3]]
    readback = read_back("web-0", POLICY, stored)
    assert readback.more_open == ()
    # 198.51.100.0/24 is only half let in on 8000-8005 and not at all on 8006-8010: the whole range
    assert less(stored) == ["tcp 80: ipv6Cidrs -::/0", "tcp 8000-8010: cidrs -198.51.100.0/24",
                            "tcp 8000-8010: ipv6Cidrs -2001:db8:100::/48", "icmpv6 type 128: ipv6Cidrs -::/0"]
    assert readback.summary() == "web-0: the cloud firewall is less open than the policy (4 port info(s) as AWS stores them)"


def test_a_server_with_no_ports_at_all_is_less_open():
    assert len(less([])) == len([s for i in POLICY for s in i["cidrs"] + i["ipv6Cidrs"]])


def test_the_verdict_survives_json():
    readback = read_back("web-1", POLICY, [info("all", 0, 0, ["0.0.0.0/0"])])
    assert CloudReadback.from_json(readback.to_json()) == readback


@pytest.mark.parametrize("outputs", [
    # as the provider SDK hands the resource's outputs to the program: snake_case, lists left out
    [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["203.0.113.7/32"]}],
    [{"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrs": ["203.0.113.7/32"], "ipv6Cidrs": None}],
])
def test_provider_outputs_read_as_cloud_ports_json(outputs):
    assert from_provider_outputs(outputs) == [info("tcp", 22, 22, ["203.0.113.7/32"])]


def test_rendered_layer_read_back_through_the_provider_names_matches_itself():
    policy = settings_from_values({"firewall": {"adminCidrs": ["203.0.113.7/32", "2001:db8:7::/64"],
                                                "services": [{"name": "web", "protocol": "tcp", "ports": "443"}]}})
    rendered = cloud_port_infos(policy.firewall)
    assert from_provider_outputs(to_provider_args(rendered)) == rendered
    assert read_back("web-0", rendered, from_provider_outputs(to_provider_args(rendered))).matches


def test_the_step_fails_naming_only_the_servers_whose_cloud_firewall_is_too_open(capsys):
    import json

    from hardened_lightsail.steps import cloud_readback_step
    verdicts = [read_back("web-0", POLICY, POLICY), read_back("web-1", POLICY, [*POLICY, info("udp", 53, 53, ["0.0.0.0/0"])])]
    assert cloud_readback_step({"HL_CLOUD_READBACK": json.dumps([v.to_json() for v in verdicts])}) == 1
    out, err = capsys.readouterr()
    assert out == "web-0: the cloud firewall matches the policy (5 port info(s) as AWS stores them)\n"
    assert err.splitlines()[:2] == [
        "web-1: the cloud firewall is MORE open than the policy (6 port info(s) as AWS stores them); "
        "AWS lets in what the policy does not:", "  udp 53: cidrs +0.0.0.0/0"]
    assert cloud_readback_step({"HL_CLOUD_READBACK": json.dumps([verdicts[0].to_json()])}) == 0
