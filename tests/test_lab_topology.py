"""The lab network, measured from its own hosts: the cloud layer on the edge behaves like
Lightsail's, the deployer uplink reaches the server over both families, the server's SSH
sessions write lab-owned firewall files, labs coexist, and `down` leaves nothing behind.
No host-layer rules are loaded here: the server namespace's own firewall is empty."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lab import LabError, lab_down, lab_status, lab_up
from lab.layout import RUNTIME_ENTRIES
from lab.machine_addresses import machine_addresses
from lab.netns import link_exists, namespace_exists, namespace_pids
from lab.probe import format_table, nmap_scan, probe, states, targets
from lab.processes import is_alive
from lab.services import service_pids
from lab.slots import registered_labs
from lab.topology import SLOT_COUNT, LabTopology, uplink_interface_name

from lab_fixtures import SESSION_LAB_PREFIX

pytestmark = pytest.mark.netfilter

REPO = Path(__file__).resolve().parent.parent
HIDDEN_TCP = [23, 5432, 8080]
ALL_TCP = [22, 80, 443, *HIDDEN_TCP]


def port_info(port, cidrs, ipv6_cidrs, protocol="tcp", to_port=None):
    return {"protocol": protocol, "fromPort": port, "toPort": port if to_port is None else to_port,
            "cidrs": cidrs, "ipv6Cidrs": ipv6_cidrs, "cidrListAliases": []}


# The shape of a hardened policy: web open to all, SSH only from the admin CIDRs.
WEB_AND_ADMIN_SSH = [
    port_info(22, ["192.0.2.0/24"], ["2001:db8:a::/48"]),
    port_info(80, ["0.0.0.0/0"], ["::/0"]),
    port_info(443, ["0.0.0.0/0"], ["::/0"]),
]


@pytest.fixture
def cloud_ports_file(tmp_path):
    def write(infos) -> Path:
        path = tmp_path / "cloud-ports.json"
        path.write_text(json.dumps(infos))
        return path
    return write


def exposure(lab, origin, tcp_ports=ALL_TCP, udp_ports=(5353,)):
    """{(family, proto, port): state} from `origin` to the server, v4 and v6 in one parallel probe."""
    results = probe(lab.namespace(origin), targets([lab.server_ipv4, lab.server_ipv6], tcp_ports, udp_ports))
    family = {lab.server_ipv4: 4, lab.server_ipv6: 6}
    return {(family[r.address], r.protocol, r.port): r.state for r in results}, format_table(results)


def exposures(lab, origins, **ports):
    """exposure() from several origins at once (each probe waits out its timeouts in parallel)."""
    with ThreadPoolExecutor(max_workers=len(origins)) as pool:
        return dict(zip(origins, pool.map(lambda origin: exposure(lab, origin, **ports), origins), strict=True))


def expect(open_tcp=(), filtered_tcp=(), udp_state="filtered"):
    table = {}
    for family in (4, 6):
        table.update({(family, "tcp", port): "open" for port in open_tcp})
        table.update({(family, "tcp", port): "filtered" for port in filtered_tcp})
        table[(family, "udp", 5353)] = udp_state
    return table


def ssh(lab, origin, command, family=4, timeout=30):
    return subprocess.run(lab.ssh_argv(origin, [command], family=family, connect_timeout=5),
                          capture_output=True, text=True, timeout=timeout)


def test_every_server_listener_answers_from_inside_the_server(lab):
    # The control for every "filtered" below: the ports do listen, v4 and v6, TCP and UDP.
    seen, table = exposure(lab, "server")
    assert seen == expect(open_tcp=ALL_TCP, udp_state="open"), table


def test_lightsail_default_opens_only_ssh_and_http(lab):
    lab.load_cloud_layer(None)
    seen = exposures(lab, ["internet", "admin"])
    assert seen["internet"][0] == expect(open_tcp=[22, 80], filtered_tcp=[443, *HIDDEN_TCP]), seen["internet"][1]
    assert seen["admin"][0] == expect(open_tcp=[22, 80], filtered_tcp=[443, *HIDDEN_TCP]), seen["admin"][1]


def test_changed_cloud_policy_opens_https_and_keeps_ssh_for_admins(lab, cloud_ports_file):
    lab.load_cloud_layer(cloud_ports_file(WEB_AND_ADMIN_SSH))
    seen = exposures(lab, ["internet", "internet2", "admin"])
    for client in ("internet", "internet2"):
        assert seen[client][0] == expect(open_tcp=[80, 443], filtered_tcp=[22, *HIDDEN_TCP]), seen[client][1]
    assert seen["admin"][0] == expect(open_tcp=[22, 80, 443], filtered_tcp=HIDDEN_TCP), seen["admin"][1]


def test_deployer_uplink_logs_in_with_ssh_over_ipv4_and_ipv6(lab, cloud_ports_file):
    lab.load_cloud_layer(cloud_ports_file(WEB_AND_ADMIN_SSH))
    for family in (4, 6):
        result = ssh(lab, "root", "true", family=family)
        assert result.returncode == 0, f"IPv{family}: {result.stderr}"


def test_ssh_session_writes_the_labs_firewall_files_not_the_machines(lab):
    host_rules = Path("/etc/iptables/rules.v4")
    before = host_rules.read_bytes() if host_rules.exists() else None
    marker = f"lab-{lab.name}-{time.time_ns()}"
    result = ssh(lab, "root", f"echo {marker} > /etc/iptables/rules.v4 && "
                              f"echo {marker} > /var/lib/hardened-lightsail/probe && "
                              f"echo {marker} > /etc/default/hl-lab-probe")  # as the payload's boot settings edit
    assert result.returncode == 0, result.stderr
    assert (lab.layout.server_fs("/etc/default") / "hl-lab-probe").read_text() == marker + "\n"
    assert not Path("/etc/default/hl-lab-probe").exists()
    assert (lab.layout.server_fs("/etc/iptables") / "rules.v4").read_text() == marker + "\n"
    assert (lab.layout.server_fs("/var/lib/hardened-lightsail") / "probe").read_text() == marker + "\n"
    assert (host_rules.read_bytes() if host_rules.exists() else None) == before
    assert not Path("/var/lib/hardened-lightsail/probe").exists()


def test_ssh_sessions_start_in_the_labs_own_home_with_a_fresh_servers_shell_files(lab):
    # Not this machine's /root: its ~/.bashrc (Debian's bash reads it for every SSH command)
    # would run in every session, and $HOME writes would land in this machine's home.
    result = ssh(lab, "root", 'echo "$HOME"; cat "$HOME/.bashrc" 2>/dev/null | md5sum; id -un')
    assert result.returncode == 0, result.stderr
    home, bashrc, user = result.stdout.split("\n")[:3]
    assert (home, user) == (str(lab.layout.login_home), "root")
    stock = Path("/etc/skel/.bashrc")
    if stock.is_file():
        assert bashrc.split()[0] == hashlib.md5(stock.read_bytes()).hexdigest()
    assert Path("/etc/passwd").read_text().count(str(lab.layout.login_home)) == 0  # the machine's file untouched


def test_ipv6_neighbours_are_learned_by_neighbour_discovery(lab):
    probe(lab.namespace("internet"), [(lab.server_ipv6, "tcp", 80)])  # the server answers via its router
    server_if = lab.endpoint("server").interface
    entries = lab.run("server", ["ip", "-6", "neigh", "show", "dev", server_if]).stdout
    router = str(lab.segments["server"].edge.ipv6.ip)
    learned = [line for line in entries.splitlines() if line.startswith(router + " ")]
    assert learned and "lladdr" in learned[0] and "PERMANENT" not in learned[0], entries
    for namespace in lab.namespaces.values():
        assert "PERMANENT" not in lab.run(namespace, ["ip", "-6", "neigh", "show"]).stdout


def test_ping_passes_the_cloud_layer_only_when_icmp_is_listed(lab, cloud_ports_file):
    echo = targets([lab.server_ipv4, lab.server_ipv6], icmp_echo=True)
    lab.load_cloud_layer(None)
    assert set(states(probe(lab.namespace("internet"), echo)).values()) == {"filtered"}
    lab.load_cloud_layer(cloud_ports_file(WEB_AND_ADMIN_SSH + [
        port_info(8, ["0.0.0.0/0"], [], protocol="icmp", to_port=-1),
        port_info(128, [], ["::/0"], protocol="icmpv6", to_port=0),
    ]))
    results = probe(lab.namespace("internet"), echo)
    assert set(states(results).values()) == {"open"}, format_table(results)


def test_nmap_syn_scan_sees_what_the_connect_probe_sees(lab):
    lab.load_cloud_layer(None)
    expected = {22: "open", 80: "open", 443: "filtered", 23: "filtered"}
    for address in (lab.server_ipv4, lab.server_ipv6):
        assert nmap_scan(lab.namespace("internet"), address, expected, scan="sS") == expected, address


def test_a_bad_cloud_ports_file_leaves_the_edge_rules_as_they_were(lab, cloud_ports_file):
    lab.load_cloud_layer(None)
    before = lab.run("edge", ["iptables-save"]).stdout.split("\n", 1)[1]
    with pytest.raises(LabError, match=r"\[1\]\.protocol: 'sctp' is not one of"):
        lab.load_cloud_layer(cloud_ports_file([port_info(443, ["0.0.0.0/0"], []),
                                               port_info(9, ["0.0.0.0/0"], [], protocol="sctp")]))
    assert lab.run("edge", ["iptables-save"]).stdout.split("\n", 1)[1] == before


def test_the_first_connections_right_after_up_are_fast_over_ipv4_and_ipv6(lab_factory):
    # Before up waited for the routers, the first IPv6 SYN from an internet client was lost and
    # retransmitted after 1 s (the edge's bridge ignored neighbour solicitations at first).
    fresh = lab_factory.up()
    web = targets([fresh.server_ipv6, fresh.server_ipv4], [80])
    for client in ("internet", "internet2", "admin"):
        results = probe(fresh.namespace(client), web, timeout=3)
        assert {r.state for r in results} == {"open"}, format_table(results)
        slowest = max(results, key=lambda r: r.seconds)
        assert slowest.seconds < 0.5, f"{client}: first connect to {slowest.address} took {slowest.seconds:.2f} s"


def test_up_twice_is_the_same_lab(lab):
    pids = service_pids(lab)
    again = lab_up(lab.name, lab.state_dir)
    assert again == lab
    assert service_pids(again) == pids  # nothing was restarted
    assert lab_status(lab.name, lab.state_dir)["state"] == "up"


def test_two_labs_side_by_side_each_reach_their_own_server_only(lab, lab_factory):
    other = lab_factory.up()
    assert other.slot != lab.slot
    assert other.server_ipv4 != lab.server_ipv4
    both = targets([lab.server_ipv4, lab.server_ipv6, other.server_ipv4, other.server_ipv6], [80])
    assert set(states(probe(None, both)).values()) == {"open"}  # the deployer reaches both
    seen = states(probe(other.namespace("internet"), both))
    assert [seen[t] for t in both] == ["filtered", "filtered", "open", "open"], seen


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_cli_up_status_cloud_down_leaves_nothing_behind(tmp_path, cloud_ports_file, request):
    name, state_dir = f"{SESSION_LAB_PREFIX}cli", tmp_path / "lab"
    request.addfinalizer(lambda: lab_down(name, state_dir))

    started = time.monotonic()
    up = _cli("up", "--name", name, "--dir", str(state_dir))
    up_seconds = time.monotonic() - started
    assert up.returncode == 0, up.stderr
    described = json.loads(up.stdout)
    assert described["ssh"]["user"] == "root" and Path(described["ssh"]["privateKeyPath"]).stat().st_mode & 0o777 == 0o600
    assert _cli("up", "--name", name, "--dir", str(state_dir)).stdout == up.stdout  # idempotent
    assert _cli("status", "--name", name, "--dir", str(state_dir)).returncode == 0
    reloaded = _cli("cloud", "--name", name, "--cloud-ports", str(cloud_ports_file(WEB_AND_ADMIN_SSH)))
    assert reloaded.returncode == 0, reloaded.stderr
    assert json.loads(reloaded.stdout)["cloudPorts"] == WEB_AND_ADMIN_SSH

    # Processes down must stop beyond the pid files: an open SSH session and a client.
    session = subprocess.Popen([*lab_ssh_argv(described), "sleep 600"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    client = subprocess.Popen(["ip", "netns", "exec", described["namespaces"]["internet"], "sleep", "600"])
    deadline = time.monotonic() + 10
    while len(namespace_pids(described["namespaces"]["server"])) <= 4 and time.monotonic() < deadline:
        time.sleep(0.1)  # the session's sshd and shell join the daemons in the server namespace
    pids = set(described["pids"].values()) | set(namespace_pids(described["namespaces"]["server"]))

    started = time.monotonic()
    down = _cli("down", "--name", name, "--dir", str(state_dir))
    down_seconds = time.monotonic() - started
    assert down.returncode == 0, down.stderr
    assert session.wait(timeout=10) != 0 and client.wait(timeout=10) != 0
    assert not [ns for ns in described["namespaces"].values() if namespace_exists(ns)]
    assert not [pid for pid in pids if is_alive(pid)]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert described["uplinkInterface"] + "@" not in links
    server = described["addresses"]["server"]
    for flag, subnet in (("-4", server["ipv4Cidr"]), ("-6", server["ipv6Cidr"])):
        routes = subprocess.run(["ip", flag, "route", "show", subnet], capture_output=True, text=True)
        assert routes.stdout.strip() == "", routes.stdout
    assert not [entry for entry in RUNTIME_ENTRIES if (state_dir / entry).exists()]
    assert name not in [entry["name"] for entry in registered_labs().values()]

    again = _cli("down", "--name", name, "--dir", str(state_dir))
    assert again.returncode == 0, again.stderr
    assert _cli("status", "--name", name, "--dir", str(state_dir)).returncode == 1
    print(f"lab up {up_seconds:.2f} s, down {down_seconds:.2f} s")


def lab_ssh_argv(described):
    """ssh from the root namespace using only what `up` printed (as a LabServer would)."""
    ssh_info = described["ssh"]
    return ["ssh", "-F", "/dev/null", "-i", ssh_info["privateKeyPath"], "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=5", f"{ssh_info['user']}@{ssh_info['host']}"]


def _free_slot() -> int:
    taken = registered_labs()
    return next(slot for slot in range(SLOT_COUNT)
                if slot not in taken and not link_exists(None, uplink_interface_name(slot)))


def test_a_slot_holding_one_of_this_machines_addresses_is_refused(tmp_path, lab_factory, request):
    # Someone else's interface (a bridge, down: it carries nothing) with an address inside the
    # IPv6 uplink of the lowest free slot, as a machine numbered from 2001:db8::/32 might have.
    slot = _free_slot()
    foreign, address = f"hlg{os.getpid() % 100000}", LabTopology("x", slot, "/tmp/x").address("root", 6)
    address = address.rsplit(":", 1)[0] + ":99"
    subprocess.run(["ip", "link", "add", foreign, "type", "bridge"], check=True)
    request.addfinalizer(lambda: subprocess.run(["ip", "link", "delete", foreign], check=False))
    subprocess.run(["ip", "-6", "address", "add", f"{address}/128", "dev", foreign, "nodad"], check=True)
    assert [m.what for m in machine_addresses() if m.interface == foreign] == [f"configured as {address}/128"]

    name = f"{SESSION_LAB_PREFIX}clash"
    refused = _cli("up", "--name", name, "--dir", str(tmp_path / "lab"), "--slot", str(slot))
    assert refused.returncode == 2 and refused.stdout == "", refused
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert f"slot {slot} collides with this machine's own addresses" in refused.stderr
    assert f"holds {address}, configured as {address}/128 on {foreign}" in refused.stderr
    assert not namespace_exists(f"hl-{name}-edge") and name not in [e["name"] for e in registered_labs().values()]
    # Without --slot the lab simply takes another one.
    assert lab_factory.up().slot != slot


def test_cli_errors_are_one_line_with_exit_2(tmp_path):
    for args, fragment in (
        (["up", "--name", "Bad_Name", "--dir", str(tmp_path)], "lab name 'Bad_Name' is not valid"),
        (["up", "--name", "ok", "--dir", str(tmp_path), "--slot", "16"], "lab slot 16 is not valid"),
        (["cloud", "--name", "ghost", "--cloud-ports", "x.json"], "lab ghost is not up"),
        (["up", "--name", "ok"], "the following arguments are required: --dir"),
    ):
        result = _cli(*args)
        assert result.returncode == 2 and result.stdout == "", (args, result)
        assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr, result.stderr
    assert not namespace_exists("hl-ok-srv")


def _host_rolled_back(lab, changed_at: str, active: str, layers: dict, drill: bool = True, server: int = 0) -> None:
    """What the payload leaves on a server after a rollback of release bbbb...: its state file,
    and its copies of the releases it applied (each with its cloud-ports.json, and bbbb... with
    its policy.json: a lock-out drill or not), written as the payload does."""
    state_dir = lab.server_layout(server).server_fs("/var/lib/hardened-lightsail")
    for release, infos in layers.items():
        (state_dir / "releases" / release).mkdir(parents=True, exist_ok=True)
        (state_dir / "releases" / release / "cloud-ports.json").write_text(json.dumps(infos))
    (state_dir / "releases" / "bbbbbbbbbbbbbbbb").mkdir(parents=True, exist_ok=True)
    (state_dir / "releases" / "bbbbbbbbbbbbbbbb" / "policy.json").write_text(json.dumps({"allowLockout": drill}))
    (state_dir / ".state.tmp").write_text(f"state=rolled-back\nrelease=bbbbbbbbbbbbbbbb\nreason=deadline\n"
                                          f"changed_at={changed_at}\nactive_release={active}\n")
    (state_dir / ".state.tmp").replace(state_dir / "state")


def _wait_for_return(lab, timeout: float = 5.0) -> dict:
    """The follower's note, as `status` shows it, once it has returned the edge."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        note = lab_status(lab.name, lab.state_dir)["lab"]["edgeReturned"]
        if note:
            return note
        time.sleep(0.1)
    raise AssertionError(f"the edge did not return within {timeout} s; follower log: "
                         f"{lab.layout.log_file('edge-follower').read_text()}")


def test_after_a_rollback_on_the_host_the_edge_returns_to_the_cloud_layer_of_the_hosts_rules(
        lab_factory, cloud_ports_file, tmp_path):
    lab = lab_factory.up(cloud_ports=cloud_ports_file(WEB_AND_ADMIN_SSH))
    # A lock-out drill's layer: SSH only for the internet range and the deployers.
    drill = [port_info(22, ["198.51.100.0/24", "192.0.2.128/25"], ["2001:db8:a:100::/60"]), *WEB_AND_ADMIN_SSH[1:]]
    drill_file = tmp_path / "drill.json"
    drill_file.write_text(json.dumps(drill))
    lab.load_cloud_layer(drill_file)
    assert exposure(lab, "admin", tcp_ports=[22], udp_ports=())[0] == {(4, "tcp", 22): "filtered",
                                                                       (6, "tcp", 22): "filtered"}

    # A rollback that was no drill (a confirm that never came): the edge keeps the stack's layer,
    # as Lightsail's firewall would, and the stack's state stays the truth about it.
    _host_rolled_back(lab, "500", "aaaaaaaaaaaaaaaa", {"aaaaaaaaaaaaaaaa": WEB_AND_ADMIN_SSH}, drill=False)
    time.sleep(1.0)  # four polls of the follower
    assert json.loads((lab.layout.edge_dir / "cloud-ports.json").read_text()) == drill
    assert lab_status(lab.name, lab.state_dir)["lab"]["edgeReturned"] is None

    # The host rolled the drill back and runs release aaaa... again: the edge follows.
    _host_rolled_back(lab, "1000", "aaaaaaaaaaaaaaaa", {"aaaaaaaaaaaaaaaa": WEB_AND_ADMIN_SSH})
    note = _wait_for_return(lab)
    assert json.loads((lab.layout.edge_dir / "cloud-ports.json").read_text()) == WEB_AND_ADMIN_SSH
    assert note["message"] == (
        "release bbbbbbbbbbbbbbbb was rolled back on the host, so the lab edge went back to the cloud layer of "
        "release aaaaaaaaaaaaaaaa, which the host runs again: open now: tcp 22 from 192.0.2.0/24, 2001:db8:a::/48; "
        "tcp 80 from anyone; tcp 443 from anyone")
    assert exposure(lab, "admin", tcp_ports=[22], udp_ports=())[0] == {(4, "tcp", 22): "open", (6, "tcp", 22): "open"}

    # A new layer from the stack supersedes the note; a host with no confirmed release left sends
    # the edge back to the layer it had before the stack's last one (not to the follower's own).
    lab.load_cloud_layer(drill_file)
    from lab.edge_follower import forget_return
    forget_return(lab.layout)
    _host_rolled_back(lab, "2000", "", {})
    _wait_for_return(lab)
    assert json.loads((lab.layout.edge_dir / "cloud-ports.json").read_text()) == WEB_AND_ADMIN_SSH
