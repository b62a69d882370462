"""The lab target's resource graph under Pulumi mocks (tests/program_mocks_runner.py): the lab and
its edge as two commands, the edge's cloud layer handed over as a short content-named path, the
host chain behind the edge, the release `fw check` and `fw diff` compute, and a lab.slot that is
taken refused before anything is registered. No root: the lab's commands are mocked."""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml
from test_program_mocks import PROJECT_DIR, SECRET, Report, run_program, unsecret

from hardened_lightsail.config import settings_from_values
from hardened_lightsail.effective_settings import effective_settings
from hardened_lightsail.release import render_release
from hardened_lightsail.ssh_session import ON_THIS_MACHINE_VARIABLE
from lab.identity import stack_lab

from program_mocks_runner import MOCK_LAB_SLOT, fake_host_key

FW = str(PROJECT_DIR / "scripts" / "fw")
STACK = "labmock"
FIREWALL = {"adminCidrs": ["192.0.2.0/24", "2001:db8:a::/48"], "confirmTimeoutSeconds": 20,
            "services": [{"name": "http", "protocol": "tcp", "ports": "80"}]}
VALUES = {"target": "lab", "firewall": FIREWALL}


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    """A private slot registry: what other labs on this machine hold doesn't decide these tests."""
    path = tmp_path / "lab-slots.json"
    monkeypatch.setenv("HL_LAB_REGISTRY", str(path))
    return path


def test_the_lab_and_its_edge_are_two_commands_and_the_host_chain_waits_for_the_edge():
    report = Report(run_program(STACK, VALUES))
    report.assert_fully_resolved()
    lab, edge = report.inputs("lab-lab"), report.inputs("lab-cloud-firewall")
    identity = stack_lab(PROJECT_DIR, STACK)
    private, public = fake_host_key("lab-host-key")
    assert lab["environment"] == {"HL_LAB_NAME": identity.name, "HL_LAB_DIR": f".lab/{identity.name}",
                                  "HL_LAB_STACK": STACK,  # no HL_LAB_SLOT: `up` allocates a free one
                                  # the server's host key, made by the program and pinned (a secret)
                                  "HL_LAB_HOST_KEY": {SECRET: private}, "HL_LAB_HOST_PUBLIC_KEY": public}
    assert lab["triggers"][:2] == [identity.name, "None"]
    # A new lab server (another name, slot or boot of this machine) gets a new host key.
    assert report.options("lab-host-key")["replacement_trigger"] == lab["triggers"]
    assert report.wire["lab-lab"]["deleteBeforeReplace"] is True
    assert report.wire["lab-lab"]["additionalSecretOutputs"] == ["stdout"]
    assert (lab["create"], lab["delete"], edge["create"]) == ("scripts/hl-lab up", "scripts/hl-lab down",
                                                              "scripts/hl-lab cloud")
    assert "lab-lab" in report.dependencies("lab-cloud-firewall")
    assert report.options("lab-firewall-ready")["depends_on"] == ["lab-cloud-firewall"]
    assert report.options("lab-firewall-copy")["depends_on"] == ["lab-firewall-ready"]
    exports = report.raw["exports"]
    assert exports["labSlot"] == MOCK_LAB_SLOT and exports["publicIp"] == "203.0.113.58"
    assert exports["labServerNamespace"] == "hl-mock-lab-srv"


def test_the_edge_gets_the_cloud_layer_as_a_short_path_named_by_its_content():
    report = Report(run_program(STACK, VALUES))
    report.assert_fully_resolved()
    environment = report.inputs("lab-cloud-firewall")["environment"]
    path = environment["HL_CLOUD_PORTS"]
    assert re.fullmatch(r"\.build/lab/cloud-ports-[0-9a-f]{16}\.json", path), path
    release = render_release(effective_settings(settings_from_values(VALUES)).firewall)
    assert json.loads((PROJECT_DIR / path).read_text()) == release.port_infos
    assert len(json.dumps(environment)) < 200  # the JSON is in the file, not in the diffed inputs
    # The same layer, the same path; another layer, another path.
    assert Report(run_program(STACK, VALUES)).inputs("lab-cloud-firewall")["environment"]["HL_CLOUD_PORTS"] == path
    wider = {**VALUES, "firewall": {**FIREWALL, "services": [*FIREWALL["services"],
                                                           {"name": "alt", "protocol": "tcp", "ports": "8080"}]}}
    assert Report(run_program(STACK, wider)).inputs("lab-cloud-firewall")["environment"]["HL_CLOUD_PORTS"] != path


def test_the_ssh_target_is_the_labs_server_with_its_key_kept_secret():
    report = Report(run_program(STACK, VALUES))
    report.assert_fully_resolved()
    deploy = report.inputs("lab-firewall-deploy")["environment"]
    assert deploy["HL_SSH_HOST"] == "203.0.113.58"
    assert "FAKE KEY" in unsecret(deploy["HL_SSH_KEY"])
    state = report.inputs("lab-firewall-host-state")
    assert state["host"] == "203.0.113.58" and "FAKE KEY" in unsecret(state["privateKey"])
    # Every connection pins the lab server's host key; the wait allows a lab server seconds, not minutes.
    pinned = fake_host_key("lab-host-key")[1]
    assert deploy["HL_SSH_HOST_KEY"] == state["hostKey"] == pinned
    ready = report.inputs("lab-firewall-ready")["environment"]
    assert ready["HL_SSH_HOST_KEY"] == pinned
    assert (ready["HL_READY_TIMEOUT"], ready["HL_FIRST_BOOT_KEY_GRACE"]) == ("60", "15")
    # The lab's connections stay on this machine: both steps use the cheaper key exchange.
    assert deploy[ON_THIS_MACHINE_VARIABLE] == ready[ON_THIS_MACHINE_VARIABLE] == "1"


def test_the_lab_verifies_every_port_from_the_deployer_and_from_its_internet_namespace():
    report = Report(run_program(STACK, VALUES))
    report.assert_fully_resolved()
    deploy = report.inputs("lab-firewall-deploy")["environment"]
    assert deploy["HL_VERIFY_SCAN"] == "full"
    namespace = report.raw["exports"]["labInternetNamespace"]
    assert namespace and json.loads(deploy["HL_VERIFY_VANTAGE"]) == {"namespace": namespace}
    assert "HL_VERIFY_VANTAGE_KEY" not in deploy
    quick = Report(run_program(STACK, {**VALUES, "verify": {"scan": "quick"}}))
    assert quick.inputs("lab-firewall-deploy")["environment"]["HL_VERIFY_SCAN"] == "quick"
    assert report.raw["exports"]["sshCommand"].startswith("ssh -i /tmp/mock-lab/ssh/id_ed25519 "
                                                          "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=")


@pytest.mark.parametrize("count", [1, 3])
def test_a_booting_lab_server_is_waited_for_longer(count):
    report = Report(run_program(STACK, {**VALUES, "lab": {"bootSeconds": 30}, "server": {"count": count}}))
    report.assert_fully_resolved()
    assert report.inputs("lab-lab")["environment"]["HL_LAB_BOOT_SECONDS"] == "30"
    for name in ["lab", *(f"lab-{index}" for index in range(1, count))]:  # every server of a fleet boots
        ready = report.inputs(f"{name}-firewall-ready")["environment"]
        assert (ready["HL_READY_TIMEOUT"], ready["HL_FIRST_BOOT_KEY_GRACE"]) == ("90", "45")


def _release_hash_from_fw(tmp_path, values: dict) -> tuple[str, str]:
    """(`fw check` release hash, `fw diff` head hash) for a stack file with these values."""
    repo = tmp_path / "repo"
    repo.mkdir()
    stack_file = repo / f"Pulumi.{STACK}.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {f"hardened-lightsail:{k}": v for k, v in values.items()}}))
    check = subprocess.run([FW, "check", "--config", str(stack_file)], capture_output=True, text=True, timeout=60)
    checked = re.search(r"^release ([0-9a-f]{16}): 0 error", check.stdout, re.M)
    assert checked, check.stdout + check.stderr
    for command in (["init", "-q"], ["-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-q",
                                     "--allow-empty", "-m", "empty"]):
        subprocess.run(["git", *command], cwd=repo, check=True, capture_output=True)
    diff = subprocess.run([FW, "diff", "--config", str(stack_file), "--base", "HEAD"], capture_output=True,
                          text=True, timeout=60)
    diffed = re.search(r"Release: none → `([0-9a-f]{16})`", diff.stdout)
    assert diffed, diff.stdout + diff.stderr
    return checked.group(1), diffed.group(1)


@pytest.mark.parametrize("values", [VALUES, {**VALUES, "target": "lightsail", "firewall": {
    **FIREWALL, "adminCidrs": ["203.0.113.7/32"], "deployerAddresses": ["203.0.113.7/32"]}}],
    ids=["lab", "lightsail"])
def test_fw_check_and_fw_diff_render_the_release_up_ships(tmp_path, values):
    report = Report(run_program(STACK, values, (("aws:region", "ap-northeast-1"),)))
    report.assert_fully_resolved()
    shipped = report.raw["exports"]["releaseHash"]
    assert _release_hash_from_fw(tmp_path, values) == (shipped, shipped)
    if values["target"] == "lab":  # the lab's deployer addresses are part of it
        assert shipped != render_release(settings_from_values(values).firewall).hash


def test_a_lab_slot_held_by_another_checkout_is_refused_before_anything_is_registered(registry):
    registry.write_text(json.dumps({"slots": {"6": {
        "name": "lab-0a0a", "dir": "/elsewhere/.lab/lab-0a0a", "since": time.time(),
        "owner": {"stack": "lab", "checkout": "/elsewhere"}}}}))
    report = Report(run_program(STACK, {**VALUES, "lab": {"slot": 6}}))
    assert report.raw["registrations"] == [] and report.raw["wire"] == []
    assert report.raw["error"] == {"type": "RunError",
                                   "message": "the lab can't get its slot (see above); nothing was changed"}
    [error] = [log["message"] for log in report.raw["logs"] if log["level"] == "error"]
    # (Which slots are free also depends on this machine's running labs: any number will do.)
    assert re.fullmatch(rf"hardened-lightsail:lab\.slot: slot 6 is taken by lab lab-0a0a \(stack lab of /elsewhere\); "
                        rf"pick a free one: `scripts/pulumi config set --path hardened-lightsail:lab\.slot \d+ -s {STACK}` "
                        rf"\(free now: [\d, ]+\), or let `up` allocate one: `scripts/pulumi config rm --path "
                        rf"hardened-lightsail:lab\.slot -s {STACK}`", error), error
    assert "down" not in error
    # A free one (as the error listed them: other labs may run on this machine) is honoured:
    # handed to `hl-lab up`, and a new slot means a new lab. The highest: a lab another test starts
    # meanwhile takes the lowest usable one.
    free = re.search(r"\(free now: ([\d, ]+)\)", error).group(1).split(", ")[-1]
    honoured = Report(run_program(STACK, {**VALUES, "lab": {"slot": int(free)}}))
    honoured.assert_fully_resolved()
    assert honoured.inputs("lab-lab")["environment"]["HL_LAB_SLOT"] == free
    assert honoured.inputs("lab-lab")["triggers"][1] == free


def test_a_lab_fleet_is_one_lab_whose_servers_each_get_the_whole_host_chain():
    report = Report(run_program(STACK, {**VALUES, "server": {"count": 3}}))
    report.assert_fully_resolved()
    assert report.inputs("lab-lab")["environment"]["HL_LAB_SERVERS"] == "3"
    names = ["lab", "lab-1", "lab-2"]  # the first keeps a one-server lab's name: a lab that grows keeps it
    hosts = [report.inputs(f"{name}-firewall-deploy")["environment"]["HL_SSH_HOST"] for name in names]
    assert hosts == ["203.0.113.58", "203.0.113.59", "203.0.113.60"]
    for name, host in zip(names, hosts, strict=True):
        deploy = report.inputs(f"{name}-firewall-deploy")["environment"]
        assert json.loads(deploy["HL_ADDRESSES"])[0] == host  # each server verified from outside on its own
        # The fleet reaches its deploy steps as a file, not a changing input: a fleet that grows
        # or shrinks doesn't redeploy the servers it keeps (tests/test_scan_share.py).
        assert (deploy["HL_FLEET_FILE"], deploy["HL_FLEET_MEMBER"]) == (".build/fleets/labmock.json", name)
        assert report.inputs(f"{name}-firewall-host-state")["host"] == host
        assert report.options(f"{name}-firewall-ready")["depends_on"] == ["lab-cloud-firewall"]
        assert report.options(f"{name}-firewall-copy")["depends_on"] == [f"{name}-firewall-ready"]
    identities = {report.inputs(f"{name}-firewall-host-state")["serverIdentity"] for name in names}
    assert len(identities) == 3
    # Like separate machines, each server has a home of its own: their release copies never meet.
    homes = [report.inputs(f"{name}-firewall-copy")["remote_path"] for name in names]
    assert len(set(homes)) == 3 and all(home.startswith(str(PROJECT_DIR / ".lab")) for home in homes), homes
    assert [report.inputs(f"{name}-firewall-deploy")["environment"]["HL_REMOTE_DIR"].rsplit("/", 1)[0]
            for name in names] == homes
    # Each server has its own pinned host key, like separate instances: made by the program, handed
    # to `hl-lab up` as one secret list in server order, and checked by every connection to it.
    keys = [fake_host_key(f"{name}-host-key") for name in names]
    environment = report.inputs("lab-lab")["environment"]
    assert json.loads(unsecret(environment["HL_LAB_HOST_KEYS"])) == [list(key) for key in keys]
    assert "HL_LAB_HOST_KEY" not in environment and "HL_LAB_HOST_PUBLIC_KEY" not in environment
    for name, (_, public) in zip(names, keys, strict=True):
        assert report.options(f"{name}-host-key")["replacement_trigger"] == report.inputs("lab-lab")["triggers"]
        for step in ("ready", "deploy"):
            assert report.inputs(f"{name}-firewall-{step}")["environment"]["HL_SSH_HOST_KEY"] == public
        assert report.inputs(f"{name}-firewall-host-state")["hostKey"] == public
    servers = report.raw["exports"]["servers"]
    assert [(s["name"], s["publicIp"], s["labServerNamespace"]) for s in servers] == [
        ("lab", "203.0.113.58", "hl-mock-lab-srv"), ("lab-1", "203.0.113.59", "hl-mock-lab-srv1"),
        ("lab-2", "203.0.113.60", "hl-mock-lab-srv2")]
    assert [s["ipv6Addresses"] for s in servers] == [["2001:db8:c:30::10"], ["2001:db8:c:30::11"], ["2001:db8:c:30::12"]]
    assert report.raw["exports"]["publicIp"] == "203.0.113.58"
    labs = [entry["name"] for entry in report.raw["wire"] if entry["type"] == "hardened-lightsail:lab:LabServer"]
    assert labs == ["lab"]  # one lab (one edge) for the fleet, not one per server


def test_the_fleet_file_is_written_by_up_and_left_alone_by_a_preview():
    # A preview of another fleet size must not change what a running `up`'s deploy steps read.
    fleet = PROJECT_DIR / ".build" / "fleets" / f"{STACK}.json"
    fleet.unlink(missing_ok=True)
    previewed = run_program(STACK, {**VALUES, "server": {"count": 2}}, preview=True)
    assert previewed["error"] is None and previewed["registrations"], previewed["error"]  # the program ran
    assert not fleet.exists()
    assert run_program(STACK, {**VALUES, "server": {"count": 2}})["error"] is None
    assert json.loads(fleet.read_text()) == {"servers": ["lab", "lab-1"], "fleetScan": "split"}


def test_a_lab_fleet_larger_than_a_slot_is_refused_naming_the_key():
    report = Report(run_program(STACK, {**VALUES, "server": {"count": 14}}))
    assert report.raw["registrations"] == []
    errors = [log["message"] for log in report.raw["logs"] if log["level"] == "error"]
    assert errors == ["server.count: 14: a lab holds at most 13 servers (they share its slot's /28 of "
                      "203.0.113.0/24); use 1-13 in lab stacks"]
