"""A lab of several servers, measured from its own hosts: one edge enforces the cloud layer for
every server, each server is its own host (namespace, sshd, files, pinned host key, boot), a
drill's rollback on any of them returns the shared edge, and the server count grows and shrinks
in place. No host-layer rules are loaded here: the servers' own firewalls are empty."""
from __future__ import annotations

import json
import subprocess
import time

import pytest
from test_lab_topology import WEB_AND_ADMIN_SSH, _host_rolled_back, _wait_for_return, cloud_ports_file, port_info  # noqa: F401 (a fixture)

from hardened_lightsail.host_keys import generate_host_key
from hardened_lightsail.ssh_session import SshEndpoint, run_remote
from lab import lab_down, lab_status, lab_up
from lab.boot import BootPlan
from lab.netns import namespace_exists
from lab.probe import probe, states, targets
from lab.services import booting, service_pids

pytestmark = pytest.mark.netfilter


def _addresses(lab) -> list[str]:
    return [lab.address(role, family) for role in lab.server_roles for family in (4, 6)]


def test_one_edge_enforces_the_cloud_layer_for_every_server(lab_factory, cloud_ports_file):
    lab = lab_factory.up(cloud_ports=cloud_ports_file(WEB_AND_ADMIN_SSH), servers=3)
    addresses = _addresses(lab)
    assert len(set(addresses)) == 6
    outside = states(probe(lab.namespace("internet"), targets(addresses, [22, 80, 5432])))
    admin = states(probe(lab.namespace("admin"), targets(addresses, [22])))
    for address in addresses:
        assert (outside[(address, "tcp", 80)], outside[(address, "tcp", 22)], outside[(address, "tcp", 5432)]) == \
            ("open", "filtered", "filtered"), (address, outside)
        assert admin[(address, "tcp", 22)] == "open", (address, admin)


def test_each_server_is_its_own_host_with_its_own_files(lab_factory):
    lab = lab_factory.up(servers=3)
    for index, role in enumerate(lab.server_roles):
        marker = f"written on server {index}"
        command = f"echo '{marker}' > /var/lib/hardened-lightsail/probe; ip -brief address show"
        session = subprocess.run(lab.ssh_argv("root", [command], server=index), capture_output=True, text=True,
                                 timeout=30)
        assert session.returncode == 0, session.stderr
        assert lab.address(role, 4) in session.stdout  # the session ran on that server
        state_dir = lab.server_layout(index).server_fs("/var/lib/hardened-lightsail")
        assert (state_dir / "probe").read_text() == marker + "\n"
    host_keys = {lab.server_layout(index).host_key.with_suffix(".pub").read_text() for index in range(3)}
    assert len(host_keys) == 3  # every server has a host key of its own


def _load_drill_layer(lab, tmp_path) -> list[dict]:
    """A lock-out drill's cloud layer on the edge: SSH only for the internet range and the deployers."""
    drill = [port_info(22, ["198.51.100.0/24", "192.0.2.128/25"], ["2001:db8:a:100::/60"]), *WEB_AND_ADMIN_SSH[1:]]
    drill_file = tmp_path / "drill.json"
    drill_file.write_text(json.dumps(drill))
    lab.load_cloud_layer(drill_file)
    return drill


def test_a_rollback_on_any_server_returns_the_shared_edge(lab_factory, cloud_ports_file, tmp_path):
    lab = lab_factory.up(cloud_ports=cloud_ports_file(WEB_AND_ADMIN_SSH), servers=3)
    _load_drill_layer(lab, tmp_path)
    # Server 2 rolled the drill back (the others, say, never got it): the edge follows it.
    _host_rolled_back(lab, "1000", "aaaaaaaaaaaaaaaa", {"aaaaaaaaaaaaaaaa": WEB_AND_ADMIN_SSH}, server=2)
    note = _wait_for_return(lab)
    assert note["server"] == 2
    assert note["message"].startswith("release bbbbbbbbbbbbbbbb was rolled back on the host of server 2 (of 3, which "
                                      "share the edge), so the lab edge went back to the cloud layer of release "
                                      "aaaaaaaaaaaaaaaa")
    assert json.loads((lab.layout.edge_dir / "cloud-ports.json").read_text()) == WEB_AND_ADMIN_SSH


def test_a_rollback_that_was_no_drill_on_any_server_leaves_the_shared_edge(lab_factory, cloud_ports_file, tmp_path):
    lab = lab_factory.up(cloud_ports=cloud_ports_file(WEB_AND_ADMIN_SSH), servers=2)
    drill = _load_drill_layer(lab, tmp_path)
    _host_rolled_back(lab, "1000", "aaaaaaaaaaaaaaaa", {"aaaaaaaaaaaaaaaa": WEB_AND_ADMIN_SSH}, drill=False, server=1)
    time.sleep(1.0)  # four polls of the follower
    assert json.loads((lab.layout.edge_dir / "cloud-ports.json").read_text()) == drill
    assert "rolled back on server 1, not in a drill" in lab.layout.log_file("edge-follower").read_text()


def _wait_until_booted(lab, within: float) -> None:
    deadline = time.monotonic() + within
    while any(booting(lab, index) for index in range(lab.servers)):
        assert time.monotonic() < deadline, f"still booting after {within} s"
        time.sleep(0.2)


def test_every_server_of_a_fleet_boots_and_then_serves_its_own_pinned_host_key(lab_factory):
    keys = [generate_host_key(f"fleet server {index}") for index in range(2)]
    lab = lab_factory.up(servers=2, host_keys=keys, boot=BootPlan(4))
    assert all(booting(lab, index) for index in range(2))  # each server has its own boot timeline
    _wait_until_booted(lab, within=15)
    deployer_key = lab.layout.client_key.read_text()
    for index, role in enumerate(lab.server_roles):
        end = SshEndpoint(lab.address(role, 4), 22, "root", deployer_key, keys[index][1])
        # The pinned key of this server, and no other: each connection checks it.
        assert run_remote(end, "/usr/local/sbin/cloud-init status").stdout == "status: done\n"
        known = lab.server_layout(index).known_hosts.read_text().split()
        assert known[0] == f"{lab.address(role, 4)},{lab.address(role, 6)}" and known[2] == keys[index][1].split()[1]
        assert lab.describe()["servers"][index]["knownHostsPath"] == str(lab.server_layout(index).known_hosts)

    # A server added to the running lab boots like a new instance; the others keep running.
    kept = service_pids(lab)
    keys.append(generate_host_key("fleet server 2"))
    grown = lab_up(lab.name, lab.state_dir, servers=3, host_keys=keys, boot=BootPlan(4))
    assert booting(grown, 2) and not booting(grown, 0) and not booting(grown, 1)
    assert {key: service_pids(grown)[key] for key in kept} == kept
    _wait_until_booted(grown, within=15)
    end = SshEndpoint(grown.address("server2", 4), 22, "root", deployer_key, keys[2][1])
    assert run_remote(end, "/usr/local/sbin/cloud-init status").stdout == "status: done\n"

    # A server's key replaced (a stack made it anew): only that server's sshd reads it again.
    keys[1] = generate_host_key("fleet server 1, again")
    lab_up(lab.name, lab.state_dir, servers=3, host_keys=keys)
    time.sleep(0.5)  # sshd re-executes itself on SIGHUP
    end = SshEndpoint(grown.address("server1", 4), 22, "root", deployer_key, keys[1][1])
    assert run_remote(end, "echo re-keyed").stdout == "re-keyed\n"


def test_the_server_count_grows_and_shrinks_in_place(lab_factory):
    lab = lab_factory.up(servers=2)
    kept = {key: pid for key, pid in service_pids(lab).items()}
    grown = lab_up(lab.name, lab.state_dir, servers=4)
    assert (grown.slot, grown.servers) == (lab.slot, 4)
    assert {key: service_pids(grown)[key] for key in kept} == kept  # nothing of servers 0-1 restarted
    reached = states(probe(None, targets(_addresses(grown), [80])))
    assert set(reached.values()) == {"open"}, reached  # the deployer reaches the new ones too
    assert lab_status(lab.name, lab.state_dir)["lab"]["servers"][3]["namespace"] == grown.namespace("server3")

    shrunk = lab_up(lab.name, lab.state_dir, servers=2)
    assert shrunk == lab
    assert service_pids(shrunk) == kept
    assert not namespace_exists(grown.namespace("server2")) and not namespace_exists(grown.namespace("server3"))
    assert not (lab.state_dir / "servers" / "2").exists() and not (lab.state_dir / "servers" / "3").exists()
    assert lab_status(lab.name, lab.state_dir)["state"] == "up"
    lab_down(lab.name, lab.state_dir)
    assert not any(namespace_exists(grown.namespace(role)) for role in grown.namespaces)
    assert not lab.state_dir.exists()
