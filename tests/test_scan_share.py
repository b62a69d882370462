"""A fleet's full scans split among its servers: together they cover every TCP port once, each
server measures every rule edge and every port the quick check lists, and the blocks turn with
the release."""
import pytest

from hardened_lightsail.config import settings_from_values
from hardened_lightsail.outside_verification import FULL, QUICK, THIS_DEPLOYER, View, _Policy, _scan_ports
from hardened_lightsail.policy import ALL_TCP_PORTS
from hardened_lightsail.port_scan import COMMON_UDP_PORTS
from hardened_lightsail.release import render_release
from hardened_lightsail.scan_share import (
    EVERY,
    SPLIT,
    ScanShare,
    server_share,
    share_from_environment,
    write_fleet_file,
)

LISTED = {"tcp": [22, 80, 443, 5432], "udp": [53, 5353]}


@pytest.mark.parametrize("count", [2, 3, 7, 10, 13, 20])
@pytest.mark.parametrize("rotation", [0, 1, 5])
def test_the_blocks_of_a_fleet_cover_every_port_once(count, rotation):
    blocks = [ScanShare(index, count, rotation % count).ports for index in range(count)]
    covered = sorted(port for block in blocks for port in block)
    assert covered == list(ALL_TCP_PORTS)  # no gap, no port twice
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_only_a_fleet_that_splits_gets_a_share_and_it_turns_with_the_release():
    assert server_share(0, 1, SPLIT, "00000003") is None  # one server scans everything
    assert server_share(3, 10, EVERY, "00000003") is None
    assert server_share(2, 4, SPLIT, "00000003") == ScanShare(2, 4, 3)
    owners = {server_share(0, 4, SPLIT, release).ports.start for release in ("00000000", "00000001")}
    assert len(owners) == 2  # the next release puts server 0 on another block
    with pytest.raises(ValueError):
        ScanShare(2, 2)


def test_a_deploy_step_finds_its_share_in_the_fleet_file_and_scans_everything_without_it(tmp_path):
    path = tmp_path / "fleets" / "dev.json"
    write_fleet_file(path, ["web-0", "web-1", "web-2"], SPLIT)
    env = {"HL_FLEET_FILE": str(path), "HL_FLEET_MEMBER": "web-2"}
    assert share_from_environment(env, "00000001") == ScanShare(2, 3, 1)
    # Whatever is missing or wrong, the whole scan: never less than asked for.
    assert share_from_environment({**env, "HL_FLEET_MEMBER": "web-9"}, "00000001") is None
    assert share_from_environment({"HL_FLEET_MEMBER": "web-2"}, "00000001") is None
    assert share_from_environment({**env, "HL_FLEET_FILE": str(tmp_path / "nowhere.json")}, "00000001") is None
    path.write_text("{not json")
    assert share_from_environment(env, "00000001") is None
    write_fleet_file(path, ["web-0", "web-1", "web-2"], EVERY)
    assert share_from_environment(env, "00000001") is None
    write_fleet_file(path, ["web-0"], SPLIT)  # one server: the whole scan
    assert share_from_environment({**env, "HL_FLEET_MEMBER": "web-0"}, "00000001") is None


def _release():
    settings = settings_from_values({"target": "lab", "firewall": {
        "adminCidrs": ["192.0.2.0/24"], "services": [
            {"name": "web", "protocol": "tcp", "ports": "80"},
            {"name": "apps", "protocol": "tcp", "ports": "8000-8010", "sources": ["198.51.100.0/24"]}]}})
    return render_release(settings.firewall)


def test_each_server_scans_its_block_every_rule_edge_and_the_listed_ports():
    release = _release()
    allowed = _Policy(release, "198.51.100.2")
    full = View(THIS_DEPLOYER, FULL)
    whole, udp = _scan_ports(full, LISTED, allowed, None)
    assert whole == list(ALL_TCP_PORTS) and udp == sorted({53, 5353, *COMMON_UDP_PORTS})
    shares = [_scan_ports(full, LISTED, allowed, ScanShare(index, 10, 4)) for index in range(10)]
    edges = {80, 81, 79, 8000, 7999, 8010, 8011, 22, 23, 21, 1, 65535}
    for index, (tcp, share_udp) in enumerate(shares):
        block = ScanShare(index, 10, 4).ports
        assert set(block) | set(LISTED["tcp"]) <= set(tcp)
        assert edges <= set(tcp), sorted(edges - set(tcp))  # every rule's edges on every server
        assert len(tcp) < len(block) + 40 and share_udp == udp  # the rest is someone else's
    assert set().union(*(tcp for tcp, _ in shares)) == set(ALL_TCP_PORTS)
    # A quick check never scans the port space: the share changes nothing there.
    assert _scan_ports(View(THIS_DEPLOYER, QUICK), LISTED, allowed, ScanShare(1, 3)) == (LISTED["tcp"], LISTED["udp"])
