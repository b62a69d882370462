"""A lab of several servers, measured from its own hosts: one edge enforces the cloud layer for
every server, each server is its own host (namespace, sshd, files), a rollback on any of them
returns the shared edge, and the server count grows and shrinks in place. No host-layer rules
are loaded here: the servers' own firewalls are empty."""
from __future__ import annotations

import json
import subprocess

import pytest

from lab import lab_down, lab_status, lab_up
from lab.netns import namespace_exists
from lab.probe import probe, states, targets
from lab.services import service_pids
from test_lab_topology import WEB_AND_ADMIN_SSH, _host_rolled_back, _wait_for_return, cloud_ports_file, port_info  # noqa: F401 (a fixture)

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


def test_a_rollback_on_any_server_returns_the_shared_edge(lab_factory, cloud_ports_file, tmp_path):
    lab = lab_factory.up(cloud_ports=cloud_ports_file(WEB_AND_ADMIN_SSH), servers=3)
    drill = [port_info(22, ["198.51.100.0/24", "192.0.2.128/25"], ["2001:db8:a:100::/60"]), *WEB_AND_ADMIN_SSH[1:]]
    drill_file = tmp_path / "drill.json"
    drill_file.write_text(json.dumps(drill))
    lab.load_cloud_layer(drill_file)
    # Server 2 rolled the drill back (the others, say, never got it): the edge follows it.
    _host_rolled_back(lab, "1000", "aaaaaaaaaaaaaaaa", {"aaaaaaaaaaaaaaaa": WEB_AND_ADMIN_SSH}, server=2)
    note = _wait_for_return(lab)
    assert note["server"] == 2
    assert note["message"].startswith("release bbbbbbbbbbbbbbbb was rolled back on the host of server 2 (of 3, which "
                                      "share the edge), so the lab edge went back to the cloud layer of release "
                                      "aaaaaaaaaaaaaaaa")
    assert json.loads((lab.layout.edge_dir / "cloud-ports.json").read_text()) == WEB_AND_ADMIN_SSH


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
