"""The lab's pure parts, no root needed: the address plan, the cloud-ports reader and the edge
rules it renders, the probe's refusal of real addresses, nmap XML, and the machine guard."""
from __future__ import annotations

import ipaddress
import json

import pytest

from lab import LabError, LabTopology, lab_down, read_port_infos, render_edge_rules
from lab.cloud_layer import validate_port_infos
from lab.machine_addresses import MachineAddress, slot_conflicts
from lab.probe import nmap_argv, parse_nmap_xml, probe
from lab.topology import MAX_SERVERS

from lab_fixtures import SESSION_LAB_PREFIX, guard_problems


def test_slot_3_addresses_follow_the_plan():
    lab = LabTopology("demo", 3, "/tmp/demo")
    described = lab.describe()["addresses"]
    assert (lab.server_ipv4, lab.server_ipv6) == ("203.0.113.58", "2001:db8:c:30::10")
    assert described["admin"]["ipv4Cidr"] == "192.0.2.24/29" and described["admin"]["ipv4"] == "192.0.2.26"
    assert described["admin"]["ipv6Cidr"] == "2001:db8:a:3::/64"
    assert described["deployer"] == {"ipv4": "192.0.2.154", "ipv6": "2001:db8:a:103::2", "ipv4Cidr": "192.0.2.152/29",
                                     "ipv6Cidr": "2001:db8:a:103::/64", "interface": "hl3up"}
    assert (described["internet"]["ipv4"], described["internet2"]["ipv6"]) == ("198.51.100.50", "2001:db8:b:30::3")
    assert described["edge"]["server"]["ipv6"] == "2001:db8:c:30::1"
    assert lab.namespaces == {"server": "hl-demo-srv", "edge": "hl-demo-edge", "internet": "hl-demo-inet",
                              "internet2": "hl-demo-inet2", "admin": "hl-demo-adm"}


@pytest.mark.parametrize("servers", [1, MAX_SERVERS])
def test_interface_names_fit_linux_limit_in_every_slot(servers):
    for slot in range(16):
        lab = LabTopology("a-long-lab-name1", slot, "/tmp/x", servers)
        names = [e.interface for seg in lab.segments.values() for e in (seg.edge, *seg.hosts)]
        names += [h.edge_port for seg in lab.segments.values() for h in seg.hosts]
        assert max(len(name) for name in names) <= 15
        # In the edge: two bridges and a veth end per host (4 + servers); in the hosts: one each.
        assert len(set(names)) == 2 + 2 * (4 + servers)


def test_a_fleet_shares_the_server_segment_each_server_in_its_own_namespace():
    lab = LabTopology("demo", 3, "/tmp/demo", servers=MAX_SERVERS)
    servers = lab.describe()["servers"]
    assert [s["role"] for s in servers[:3]] == ["server", "server1", "server2"]
    assert [s["namespace"] for s in servers[:3]] == ["hl-demo-srv", "hl-demo-srv1", "hl-demo-srv2"]
    # The first server keeps the one-server lab's addresses; the rest fill the /28 around it.
    assert [s["ipv4"] for s in servers] == [f"203.0.113.{48 + n}" for n in (*range(10, 15), *range(2, 10))]
    assert [s["ipv6"] for s in servers[:3]] == ["2001:db8:c:30::10", "2001:db8:c:30::11", "2001:db8:c:30::12"]
    segment = ipaddress.ip_network("203.0.113.48/28")
    edge = ipaddress.ip_address(lab.describe()["addresses"]["edge"]["server"]["ipv4"])
    addresses = {ipaddress.ip_address(s["ipv4"]) for s in servers}
    assert len(addresses) == MAX_SERVERS and edge not in addresses
    assert all(a in segment and a not in (segment.network_address, segment.broadcast_address) for a in addresses)
    assert servers[2]["hostPublicKeyPath"] == "/tmp/demo/servers/2/ssh/ssh_host_ed25519_key.pub"
    assert servers[0]["hostPublicKeyPath"] == "/tmp/demo/ssh/ssh_host_ed25519_key.pub"
    assert lab.ssh_argv("admin", ["true"], server=2)[-2:] == ["root@203.0.113.60", "true"]
    assert lab.namespaces["server12"] == "hl-demo-srv12"


@pytest.mark.parametrize("servers", [0, MAX_SERVERS + 1, True, "2"])
def test_a_server_count_a_slot_cannot_hold_is_refused_with_the_range(servers):
    with pytest.raises(LabError, match=f"use a number from 1 to {MAX_SERVERS} "):
        LabTopology("demo", 0, "/tmp/x", servers)


def machine(*entries):
    return [MachineAddress(ipaddress.ip_address(address), interface, what) for address, interface, what in entries]


# A CI runner numbered from the documentation range: eth0 192.0.2.2/24, gateway 192.0.2.1.
RUNNER = machine(("192.0.2.2", "eth0", "configured as 192.0.2.2/24"),
                 ("192.0.2.1", "eth0", "gateway of the default route"),
                 ("fd00::2", "eth0", "configured as fd00::2/64"))


def test_a_runner_numbered_from_192_0_2_0_24_can_use_every_slot():
    # Its /24 overlaps every slot's uplink /29, but no address of it lies inside one.
    assert [slot for slot in range(16) if slot_conflicts(LabTopology("demo", slot, "/tmp/x"), RUNNER)] == []


@pytest.mark.parametrize("address, what, slot, message", [
    ("192.0.2.130", "configured as 192.0.2.130/24", 0,
     "192.0.2.128/29 (deployer uplink) holds 192.0.2.130, configured as 192.0.2.130/24 on eth0"),
    ("192.0.2.137", "gateway of the default route", 1,
     "192.0.2.136/29 (deployer uplink) holds 192.0.2.137, gateway of the default route on eth0"),
    ("203.0.113.40", "configured as 203.0.113.40/32", 2, "203.0.113.32/28 (server subnet) holds 203.0.113.40"),
    ("2001:db8:a:103::99", "configured as 2001:db8:a:103::99/128", 3,
     "2001:db8:a:103::/64 (deployer uplink (IPv6)) holds 2001:db8:a:103::99"),
])
def test_a_slot_whose_root_subnets_hold_a_machine_address_is_unusable(address, what, slot, message):
    found = machine((address, "eth0", what))
    unusable = [k for k in range(16) if slot_conflicts(LabTopology("demo", k, "/tmp/x"), RUNNER + found)]
    assert unusable == [slot]
    assert message in slot_conflicts(LabTopology("demo", slot, "/tmp/x"), found)[0]


@pytest.mark.parametrize("name", ["", "Lab", "lab_1", "-lab", "lab-", "a" * 25, "lab.x"])
def test_bad_lab_names_are_refused_with_the_rule(name):
    with pytest.raises(LabError, match="use 1-24 characters of a-z, 0-9 and '-'"):
        LabTopology(name, 0, "/tmp/x")


def test_ssh_argv_keeps_no_state_and_runs_in_the_origin_namespace():
    argv = LabTopology("demo", 0, "/tmp/demo").ssh_argv("admin", ["true"], family=6, connect_timeout=3)
    assert argv[:5] == ["ip", "netns", "exec", "hl-demo-adm", "ssh"]
    for option in ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "ControlMaster=no",
                   "BatchMode=yes", "ConnectTimeout=3"):
        assert option in argv
    assert argv[-2:] == ["root@2001:db8:c::10", "true"]
    assert argv[argv.index("-i") + 1] == "/tmp/demo/ssh/id_ed25519"


def test_no_file_or_an_empty_file_means_lightsails_default(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("\n")
    for source in (None, tmp_path / "absent.json", empty):
        infos = read_port_infos(source)
        assert [(i["protocol"], i["fromPort"], i["cidrs"], i["ipv6Cidrs"]) for i in infos] == [
            ("tcp", 22, ["0.0.0.0/0"], ["::/0"]), ("tcp", 80, ["0.0.0.0/0"], ["::/0"])]


def test_an_empty_list_closes_everything(tmp_path):
    path = tmp_path / "closed.json"
    path.write_text("[]")
    rules = render_edge_rules(LabTopology("demo", 0, "/tmp/demo"), read_port_infos(path), 4, str(path))
    assert [line for line in rules.splitlines() if line.startswith("-A lightsail")] == [
        '-A lightsail -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment "lightsail: stateful" -j ACCEPT',
        '-A lightsail -m comment --comment "lightsail: not allowed" -j DROP',
    ]


def test_edge_rules_put_each_family_s_sources_in_its_own_table():
    infos = validate_port_infos([
        {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrs": ["192.0.2.0/24"],
         "ipv6Cidrs": ["2001:db8:a::/48"], "cidrListAliases": []},
        {"protocol": "udp", "fromPort": 8000, "toPort": 8010, "cidrs": ["0.0.0.0/0"]},
        {"protocol": "icmp", "fromPort": 8, "toPort": -1, "cidrs": ["0.0.0.0/0"]},
        {"protocol": "icmpv6", "fromPort": 128, "toPort": 0, "ipv6Cidrs": ["::/0"]},
        {"protocol": "all", "fromPort": 0, "toPort": 65535, "cidrs": ["203.0.113.99/32"]},
    ])
    lab = LabTopology("demo", 0, "/tmp/demo")
    v4 = [line for line in render_edge_rules(lab, infos, 4, "p.json").splitlines() if line.startswith("-A")]
    v6 = [line for line in render_edge_rules(lab, infos, 6, "p.json").splitlines() if line.startswith("-A")]
    # The servers' bridge: one allow-list for every server of the lab.
    assert v4[:2] == ["-A FORWARD -o hl0br-srv -j lightsail",
                      '-A FORWARD -o hl0e-up ! -i hl0br-srv -m comment --comment "lab: uplink is for the servers only" -j DROP']
    assert v4[3:-1] == [
        '-A lightsail -s 192.0.2.0/24 -p tcp --dport 22 -m comment --comment "lightsail [0]: tcp 22" -j ACCEPT',
        '-A lightsail -s 0.0.0.0/0 -p udp --dport 8000:8010 -m comment --comment "lightsail [1]: udp 8000-8010" -j ACCEPT',
        '-A lightsail -s 0.0.0.0/0 -p icmp --icmp-type 8 -m comment --comment "lightsail [2]: icmp type 8 code -1" -j ACCEPT',
        '-A lightsail -s 203.0.113.99/32 -m comment --comment "lightsail [4]: all" -j ACCEPT',
    ]
    assert v6[3:-1] == [
        '-A lightsail -s 2001:db8:a::/48 -p tcp --dport 22 -m comment --comment "lightsail [0]: tcp 22" -j ACCEPT',
        '-A lightsail -s ::/0 -p ipv6-icmp --icmpv6-type 128/0 -m comment --comment "lightsail [3]: icmpv6 type 128 code 0" -j ACCEPT',
    ]


@pytest.mark.parametrize("entry, message", [
    ({"protocol": "sctp", "fromPort": 1, "toPort": 1, "cidrs": ["0.0.0.0/0"]},
     "cloud-ports.json[0].protocol: 'sctp' is not one of tcp, udp, icmp, icmpv6, all"),
    ({"protocol": "tcp", "fromPort": 443, "toPort": 80, "cidrs": ["0.0.0.0/0"]},
     "cloud-ports.json[0].toPort: 80 is below fromPort 443"),
    ({"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrs": ["2001:db8::/32"]},
     "cloud-ports.json[0].cidrs[0]: '2001:db8::/32' is not an IPv4 CIDR"),
    ({"protocol": "tcp", "from_port": 22, "toPort": 22, "cidrs": ["0.0.0.0/0"]},
     "cloud-ports.json[0].from_port: unknown key"),
    ({"protocol": "tcp", "fromPort": 22, "toPort": 22},
     "cloud-ports.json[0]: no cidrs, ipv6Cidrs or cidrListAliases"),
    ({"protocol": "tcp", "fromPort": True, "toPort": 22, "cidrs": ["0.0.0.0/0"]},
     "cloud-ports.json[0].fromPort: True is not a whole number from 0 to 65535"),
])
def test_bad_port_infos_name_the_entry_and_key(entry, message):
    with pytest.raises(LabError) as caught:
        validate_port_infos([entry])
    assert str(caught.value).startswith(message)


def test_a_file_that_is_not_json_is_one_clear_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("[{")
    with pytest.raises(LabError, match=r"broken.json: not valid JSON \(.* at line 1\)"):
        read_port_infos(path)


@pytest.mark.parametrize("address", ["10.0.0.1", "8.8.8.8", "127.0.0.1", "2001:4860::8888", "fd00::1"])
def test_probes_refuse_addresses_outside_the_documentation_networks(address):
    with pytest.raises(ValueError, match="not a documentation address"):
        probe(None, [(address, "tcp", 22)])
    with pytest.raises(ValueError, match="not a documentation address"):
        nmap_argv(address, [22])


def test_nmap_argv_is_bounded_and_picks_the_family():
    assert nmap_argv("2001:db8:c::10", [22, 80], scan="sN") == [
        "nmap", "-Pn", "-n", "--max-retries", "1", "--host-timeout", "60s", "-sN", "-p", "22,80",
        "-6", "-oX", "-", "2001:db8:c::10"]


def test_nmap_xml_states_include_folded_extraports():
    xml = """<?xml version="1.0"?><nmaprun><host><status state="up"/>
      <ports><extraports state="filtered" count="2"/>
        <port protocol="tcp" portid="22"><state state="open"/></port>
        <port protocol="tcp" portid="113"><state state="closed"/></port>
      </ports></host></nmaprun>"""
    assert parse_nmap_xml(xml, [22, 113, 443, 8080]) == {22: "open", 113: "closed", 443: "filtered",
                                                         8080: "filtered"}
    with pytest.raises(LabError, match="nmap reported no host"):
        parse_nmap_xml("<nmaprun></nmaprun>", [22])


def _snapshot(rules="", links=("lo", "eth0"), namespaces=(), others=()):
    return {"firewall": {"iptables-save": rules}, "links": set(links), "namespaces": set(namespaces),
            "others": set(others)}


def test_guard_fails_on_a_changed_root_firewall_and_on_leftovers():
    before = _snapshot(rules="*filter\n:INPUT ACCEPT\nCOMMIT")
    assert guard_problems(before, _snapshot(rules="*filter\n:INPUT ACCEPT\nCOMMIT"), strict=True) == ([], [])
    changed, _ = guard_problems(before, _snapshot(rules="*filter\n:INPUT DROP\nCOMMIT"), strict=True)
    assert len(changed) == 1 and "`iptables-save` changed" in changed[0]
    ours = f"hl-{SESSION_LAB_PREFIX}0-0-srv"
    leak = _snapshot(rules="*filter\n:INPUT ACCEPT\nCOMMIT", links=("lo", "eth0", "hl0up"),
                     namespaces=(ours, "hlt-other"))
    assert guard_problems(before, leak, strict=True) == ([
        f"links or namespaces left behind: {sorted(['hl0up', ours, 'hlt-other'])}; root links removed: []"], [])
    # Off CI, only this session's own names count; other people's registered labs never do.
    problems, notes = guard_problems(before, leak, strict=False)
    assert problems == [f"links or namespaces left behind: [{ours!r}]; root links removed: []"]
    assert notes and "['hl0up', 'hlt-other']" in notes[0]
    someone_elses = _snapshot(rules="*filter\n:INPUT ACCEPT\nCOMMIT", links=("lo", "eth0", "hl4up"),
                              namespaces=("hl-lab-srv",), others=("hl4up", "hl-lab-srv"))
    assert guard_problems(before, someone_elses, strict=True) == ([], [])


@pytest.mark.parametrize("tool", ["iptables", "/usr/sbin/ip6tables-restore", "ipset", "nft", "sysctl"])
def test_lab_run_refuses_firewall_tools_in_the_root_namespace(tool):
    lab = LabTopology("demo", 0, "/tmp/demo")
    with pytest.raises(LabError, match=r"refusing to run .* in the root namespace"):
        lab.run("root", [tool, "-F"])
    assert lab.exec_argv("server", [tool, "-S"])[:4] == ["ip", "netns", "exec", "hl-demo-srv"]


def test_down_with_a_directory_that_is_not_the_labs_keeps_its_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HL_LAB_REGISTRY", str(tmp_path / "registry" / "slots.json"))
    home = tmp_path / "home"
    (home / "log").mkdir(parents=True)
    (home / "log" / "mine.txt").write_text("keep me")
    result = lab_down("nolab", home)  # nothing of lab "nolab" exists: a no-op that succeeds
    assert result["state"] == "down" and result["stoppedPids"] == []
    assert (home / "log" / "mine.txt").read_text() == "keep me"
    (home / "lab.json").write_text(json.dumps({"name": "other", "slot": 3}))
    with pytest.raises(LabError, match="belongs to lab 'other', not 'nolab'"):
        lab_down("nolab", home)
