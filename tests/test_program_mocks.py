"""The Pulumi program's resource graph under mocks: what the real __main__.py registers, with which
inputs and options, how the steps are chained and that the private key stays secret.

Each scenario runs the real program once, in its own process (tests/program_mocks_runner.py), with
the real SDKs (pulumi, pulumi-aws, pulumi-command) and a fake cloud; the tests assert on its JSON
report. The lightsail target only: the lab target shells out to root commands, so it is run here
only to show that its bad config is refused the same way. Guard against vacuous passes: every
value compared here was read through `Output.apply` in the runner, and every test also counts
the checks it made (an output that never resolved shows up as {"$unknown": true}, not as a pass)."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hardened_lightsail.cloud_layer import cloud_port_infos, to_provider_args
from hardened_lightsail.config import NAMESPACE, settings_from_values, values_from_stack_file
from hardened_lightsail.exposure import exposure_map, exposure_table
from hardened_lightsail.release import render_release
from hardened_lightsail.ssh_session import ON_THIS_MACHINE_VARIABLE

from program_mocks_runner import (
    ARCHIVE,
    HOST_KEY,
    HOST_STATE,
    SECRET,
    UNKNOWN,
    fake_host_key,
    fake_private_key,
    ipv6_address,
    static_ip,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "program_mocks_runner.py"

LIGHTSAIL = "aws:lightsail/"
LOCAL_COMMAND = "command:local:Command"
COPY = "command:remote:CopyToRemote"
# The HostFirewall chain, in order; `kind` is what each step is and whether it opens its own ssh.
# The persistence packages are installed by deploy's first SSH command (no step of their own:
# every resource costs each `up` of a fleet, even one with nothing to do).
STEPS = (("ready", LOCAL_COMMAND), ("copy", COPY), ("host-state", HOST_STATE), ("deploy", LOCAL_COMMAND))
REMOTE_STEPS = [step for step, kind in STEPS if kind == COPY]


def per_server(name: str) -> list[tuple[str, str]]:
    """(type, name) of everything one Lightsail server and its host firewall register."""
    return [("hardened-lightsail:server:LightsailServer", name),
            (f"{LIGHTSAIL}keyPair:KeyPair", f"{name}-key"),
            (HOST_KEY, f"{name}-host-key"),
            (f"{LIGHTSAIL}instance:Instance", f"{name}-instance"),
            (f"{LIGHTSAIL}staticIp:StaticIp", f"{name}-ip"),
            (f"{LIGHTSAIL}staticIpAttachment:StaticIpAttachment", f"{name}-ip-attachment"),
            (f"{LIGHTSAIL}instancePublicPorts:InstancePublicPorts", f"{name}-cloud-firewall"),
            ("hardened-lightsail:host:HostFirewall", f"{name}-firewall"),
            *[(kind, f"{name}-firewall-{step}") for step, kind in STEPS]]


# Once per stack: the step that fails `up` when a stored cloud firewall is more open than the policy.
READBACK = "cloud-firewall-readback"
PER_STACK = [(LOCAL_COMMAND, READBACK)]


# --- scenarios: one program run each, shared by the tests that read it

@dataclass(frozen=True)
class Scenario:
    stack: str
    values: dict  # `hardened-lightsail:*` values, without the namespace
    login_user: str  # the blueprint's default user (what every ssh step must log in as)
    other_config: tuple = (("aws:region", "ap-northeast-1"),)
    preview: bool = False
    cloud: str = "as-sent"  # what the fake AWS stores of each cloud firewall (runner's aws_stores)

    @property
    def settings(self):
        return settings_from_values(self.values)

    @property
    def servers(self) -> list[str]:
        return [f"web-{index}" for index in range(self.settings.server.count)]


FLEET_FIREWALL = {
    "adminCidrs": ["203.0.113.7/32", "2001:db8:7::/64"],
    "services": [{"name": "https", "protocol": "tcp", "ports": "443"},
                 {"name": "game", "protocol": "udp", "ports": "27015-27030",
                  "sources": ["198.51.100.0/24", "2001:db8:100::/48"]}],
    "blocklist": ["192.0.2.0/24", "2001:db8:bad::/48"],
    "ping": False,
    "confirmTimeoutSeconds": 120,
}
IPV4_FIREWALL = {
    "adminCidrs": ["198.51.100.23/32"],
    "sshPort": 2222,
    "services": [{"name": "http", "protocol": "tcp", "ports": "80", "sources": ["0.0.0.0/0"]}],
    "confirmTimeoutSeconds": 45,
}

SCENARIOS = {
    # The policy the repository ships (Pulumi.dev.yaml), exactly as the CLI would hand it over.
    "dev-yaml": Scenario("dev", values_from_stack_file(PROJECT_DIR / "Pulumi.dev.yaml"), "ubuntu"),
    "two-server-fleet": Scenario("prod", {
        "target": "lightsail", "firewall": FLEET_FIREWALL,
        "server": {"availabilityZone": "ap-northeast-1c", "blueprintId": "ubuntu_22_04", "bundleId": "micro_3_0",
                   "ipAddressType": "dualstack", "count": 2}}, "ubuntu"),
    "ipv4-custom-ssh-port": Scenario("prod", {
        "firewall": IPV4_FIREWALL,
        "server": {"availabilityZone": "ap-northeast-1d", "blueprintId": "debian_12", "bundleId": "small_3_0",
                   "ipAddressType": "ipv4"}}, "admin"),
}
WORKING = list(SCENARIOS)
# The same programs against a fake AWS that stores something else than it was sent (aws_stores).
V4_ADMIN_FLEET = {**SCENARIOS["two-server-fleet"].values, "firewall": {**FLEET_FIREWALL, "adminCidrs": ["203.0.113.7/32"]}}
CLOUD_SCENARIOS = {
    "aws-widens": Scenario("prod", V4_ADMIN_FLEET, "ubuntu", cloud="widens"),
    "aws-widens-preview": Scenario("prod", V4_ADMIN_FLEET, "ubuntu", cloud="widens", preview=True),
    "aws-narrows": Scenario("dev", SCENARIOS["dev-yaml"].values, "ubuntu", cloud="narrows"),
    "aws-quirks": Scenario("prod", SCENARIOS["two-server-fleet"].values, "ubuntu", cloud="quirks"),
}


def config_map(values: dict, other: tuple = ()) -> dict[str, str]:
    """Config as the engine hands it to a program: structured values as JSON strings."""
    encode = lambda value: value if isinstance(value, str) else json.dumps(value)  # noqa: E731
    return {**{f"{NAMESPACE}:{key}": encode(value) for key, value in values.items()}, **dict(other)}


def run_program(stack: str, values: dict, other_config: tuple = (), preview: bool = False,
                cloud: str = "as-sent", secret_keys: tuple = ()) -> dict:
    scenario = {"stack": stack, "config": config_map(values, other_config), "preview": preview, "cloud": cloud,
                "secret_keys": [f"{NAMESPACE}:{key}" for key in secret_keys]}
    result = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(scenario), capture_output=True,
                            text=True, timeout=180, cwd=PROJECT_DIR)
    assert result.returncode == 0, f"the mock runner failed:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout)


@functools.cache
def report_of(name: str) -> Report:
    scenario = {**SCENARIOS, **CLOUD_SCENARIOS}[name]
    release = render_release(scenario.settings.firewall)
    return Report(run_program(scenario.stack, scenario.values, scenario.other_config, scenario.preview,
                              scenario.cloud), release)


class Report:
    """Lookups into one runner report, and the guard that everything in it really resolved."""

    def __init__(self, raw: dict, release=None):
        self.raw = raw
        # The release the program should have shipped, rendered just before it ran (payload/hlfw
        # is part of the hash, so render it once rather than per test while someone edits it).
        self.release = release
        self.registrations = {r["name"]: r for r in raw["registrations"]}
        self.wire = {w["name"]: w for w in raw["wire"]}
        self.urns = {w["urn"]: w["name"] for w in raw["wire"]}

    def options(self, name: str) -> dict:
        return self.registrations[name]["options"]

    def inputs(self, name: str) -> dict:
        """The arguments the program passed, outputs resolved, secrets as {"$secret": value}."""
        return self.raw["program_inputs"][name]

    def outputs(self, name: str) -> dict:
        return self.raw["resource_outputs"][name]

    def dependencies(self, name: str) -> set[str]:
        """Names of everything the engine would wait for before this resource (wire request)."""
        return {self.urns[urn] for urn in self.wire[name]["dependencies"]}

    def assert_fully_resolved(self) -> int:
        """Every Output in the report went through its `apply` callback; returns how many did."""
        counters = self.raw["counters"]
        assert self.raw["error"] is None, self.raw["error"]
        assert counters["apply_callbacks"] == counters["outputs_seen"] > 0, counters
        assert UNKNOWN not in json.dumps(self.raw), "an output stayed unknown under mocks"
        return counters["apply_callbacks"]


def unsecret(value):
    assert isinstance(value, dict) and set(value) == {SECRET}, f"expected a secret, got {value!r}"
    return value[SECRET]


def private_key(server: str) -> str:
    return fake_private_key(f"{server}-key")


# --- resources and their inputs

@pytest.mark.parametrize("name", WORKING)
def test_program_registers_one_server_and_one_host_firewall_per_server(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    expected = [item for server in scenario.servers for item in per_server(server)] + PER_STACK
    assert sorted((r["type"], r["name"]) for r in report.raw["registrations"]) == sorted(expected)
    assert sorted((w["type"], w["name"]) for w in report.raw["wire"]) == sorted(expected)
    assert report.raw["counters"]["new_resource"] == len(expected)
    assert report.raw["invokes"] == []  # nothing is looked up at run time: the graph is static
    for server in scenario.servers:
        for _, child in per_server(server)[1:7]:
            assert report.options(child)["parent"] == server
        assert report.options(f"{server}-firewall")["parent"] is None
        for step, _ in STEPS:
            assert report.options(f"{server}-firewall-{step}")["parent"] == f"{server}-firewall"


@pytest.mark.parametrize("name", WORKING)
def test_program_freezes_what_it_loaded_so_its_exit_is_quick(name):
    # The engine waits for the program's exit on every `up`; frozen objects cost the exit nothing.
    assert report_of(name).raw["frozen"] > 10_000


@pytest.mark.parametrize("name", WORKING)
def test_instance_is_built_from_the_server_config_with_its_own_key_pair(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    server_settings = scenario.settings.server
    checked = 0
    for server in scenario.servers:
        instance = report.inputs(f"{server}-instance")
        assert instance == {
            "availability_zone": server_settings.availability_zone, "blueprint_id": server_settings.blueprint_id,
            "bundle_id": server_settings.bundle_id, "ip_address_type": server_settings.ip_address_type,
            "key_pair_name": f"{server}-key-generated",
            "tags": {"project": "hardened-lightsail", "stack": scenario.stack},
            # First-boot user data: the pinned host key (its own test below).
            "user_data": instance["user_data"]}
        wire = report.wire[f"{server}-instance"]["object"]
        assert (wire["availabilityZone"], wire["blueprintId"], wire["bundleId"], wire["ipAddressType"]) == (
            server_settings.availability_zone, server_settings.blueprint_id, server_settings.bundle_id,
            server_settings.ip_address_type)
        assert report.dependencies(f"{server}-instance") == {f"{server}-key", f"{server}-host-key"}
        assert report.inputs(f"{server}-key") == {} and report.inputs(f"{server}-ip") == {}
        assert report.inputs(f"{server}-ip-attachment") == {
            "static_ip_name": f"{server}-ip-generated", "instance_name": f"{server}-instance-generated"}
        checked += 1
    assert checked == len(scenario.servers) > 0


@pytest.mark.parametrize("name", WORKING)
def test_cloud_firewall_is_exactly_the_rendered_cloud_layer(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    rendered = cloud_port_infos(scenario.settings.firewall)
    assert rendered == json.loads(report.release.files["cloud-ports.json"])
    checked = 0
    for server in scenario.servers:
        ports = f"{server}-cloud-firewall"
        assert report.inputs(ports)["port_infos"] == to_provider_args(rendered)
        assert report.inputs(ports)["instance_name"] == f"{server}-instance-generated"
        # What reaches the provider is cloud-ports.json itself (camelCase, both CIDR lists explicit).
        assert report.wire[ports]["object"]["portInfos"] == rendered
        # ... and it reads back unchanged (the resource's own output, resolved through apply).
        assert report.outputs(ports)["port_infos"] == to_provider_args(rendered)
        checked += 1
    assert checked == len(scenario.servers) > 0


def test_cloud_firewall_of_the_dev_policy_opens_ssh_to_admins_and_web_to_everyone():
    report = report_of("dev-yaml")
    report.assert_fully_resolved()
    assert report.wire["web-0-cloud-firewall"]["object"]["portInfos"] == [
        {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrs": ["203.0.113.7/32"],
         "ipv6Cidrs": ["2001:db8:7::/64"], "cidrListAliases": []},
        {"protocol": "tcp", "fromPort": 80, "toPort": 80, "cidrs": ["0.0.0.0/0"], "ipv6Cidrs": ["::/0"],
         "cidrListAliases": []},
        {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrs": ["0.0.0.0/0"], "ipv6Cidrs": ["::/0"],
         "cidrListAliases": []},
        {"protocol": "icmp", "fromPort": 8, "toPort": 0, "cidrs": ["0.0.0.0/0"], "ipv6Cidrs": [],
         "cidrListAliases": []},
        {"protocol": "icmpv6", "fromPort": 128, "toPort": 0, "cidrs": [], "ipv6Cidrs": ["::/0"],
         "cidrListAliases": []},
    ]


@pytest.mark.parametrize("name", WORKING)
def test_cloud_firewall_is_deleted_before_it_is_replaced(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    checked = 0
    for server in scenario.servers:
        assert report.options(f"{server}-cloud-firewall")["delete_before_replace"] is True
        assert report.wire[f"{server}-cloud-firewall"]["deleteBeforeReplace"] is True
        checked += 1
    assert checked == len(scenario.servers) > 0
    # ... and only it: everything else is created before the old one goes (RPCs finish in any order).
    assert sorted(n for n, w in report.wire.items() if w["deleteBeforeReplace"]) == [
        f"{server}-cloud-firewall" for server in scenario.servers]


# --- ssh connections

@pytest.mark.parametrize("name", WORKING)
def test_every_ssh_step_connects_to_the_static_ip_as_the_blueprint_login_user(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    ssh_port = scenario.settings.firewall.ssh_port
    checked = 0
    for index, server in enumerate(scenario.servers):
        assert report.outputs(f"{server}-ip")["ip_address"] == static_ip(index)
        pinned = fake_host_key(f"{server}-host-key")[1]
        for step in (f"firewall-{s}" for s in REMOTE_STEPS):
            connection = report.inputs(f"{server}-{step}")["connection"]
            assert (connection["host"], connection["user"], connection["port"], connection["host_key"]) == (
                static_ip(index), scenario.login_user, ssh_port, pinned), step
            wire = unsecret(report.wire[f"{server}-{step}"]["object"]["connection"])
            assert (wire["host"], wire["user"], wire["port"], wire["hostKey"]) == (
                static_ip(index), scenario.login_user, ssh_port, pinned)
            checked += 1
        # The readiness and deploy steps dial on their own (new ssh processes): same host, user,
        # port and pinned key; so does the host state's read-back.
        for step in ("ready", "deploy"):
            environment = report.inputs(f"{server}-firewall-{step}")["environment"]
            assert (environment["HL_SSH_HOST"], environment["HL_SSH_USER"], environment["HL_SSH_PORT"],
                    environment["HL_SSH_HOST_KEY"]) == (static_ip(index), scenario.login_user, str(ssh_port), pinned)
            # A server on the internet keeps OpenSSH's default (post-quantum) key exchange.
            assert ON_THIS_MACHINE_VARIABLE not in environment
            checked += 1
        state = report.inputs(f"{server}-firewall-host-state")
        assert (state["host"], state["user"], state["port"], state["hostKey"]) == (
            static_ip(index), scenario.login_user, ssh_port, pinned)
        checked += 1
    assert checked == len(scenario.servers) * (3 + len(REMOTE_STEPS))


@pytest.mark.parametrize("name", WORKING)
def test_release_goes_into_the_login_users_home(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    home = f"/home/{scenario.login_user}"
    release_dir = f"{home}/.hardened-lightsail-{report.release.hash}"
    checked = 0
    for server in scenario.servers:
        assert report.inputs(f"{server}-firewall-copy")["remote_path"] == home
        assert report.inputs(f"{server}-firewall-deploy")["environment"]["HL_REMOTE_DIR"] == release_dir
        assert report.inputs(f"{server}-firewall-host-state")["remoteDir"] == release_dir
        checked += 1
    assert checked == len(scenario.servers) > 0


# --- the commit-confirm chain

@pytest.mark.parametrize("name", WORKING)
def test_host_firewall_steps_run_in_order_through_depends_on(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    checked = 0
    for server in scenario.servers:
        # The chain starts once the static IP points at the instance, which waits for the policy's
        # cloud firewall (recorded dependencies of the first step, the readiness wait).
        assert report.options(f"{server}-ip-attachment")["depends_on"] == [f"{server}-cloud-firewall"]
        assert f"{server}-cloud-firewall" in report.dependencies(f"{server}-ip-attachment")
        # The host state only records intent, so it runs beside the copy; deploy waits for both.
        ready, copy, state = (f"{server}-firewall-{step}" for step in ("ready", "copy", "host-state"))
        after = {"ready": [f"{server}-ip-attachment"], "copy": [ready], "host-state": [ready], "deploy": [copy, state]}
        for step, _ in STEPS:
            step_name = f"{server}-firewall-{step}"
            first = after[step]
            assert report.options(step_name)["depends_on"] == first, step
            assert set(first) <= report.dependencies(step_name), step
            checked += 1
    assert checked == len(scenario.servers) * len(STEPS)


@pytest.mark.parametrize("name", WORKING)
def test_every_step_is_keyed_on_the_release_hash_and_none_can_flush_the_firewall(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    release_hash = report.release.hash
    checked = 0
    for server in scenario.servers:
        # The readiness wait: created once per instance (its first contact, with the grace for
        # the image's key), updated (no grace) for every release, before anything is pushed.
        ready = report.inputs(f"{server}-firewall-ready")
        assert ready["triggers"] == [f"{server}-instance-id"]
        assert (ready["create"], ready["update"]) == ("scripts/hl-step ready --first-contact", "scripts/hl-step ready")
        assert ready["environment"]["HL_RELEASE"] == release_hash
        assert (ready["environment"]["HL_READY_TIMEOUT"], ready["environment"]["HL_FIRST_BOOT_KEY_GRACE"]) == (
            "900", "600")
        # Copy: the release, and the instance (a replaced instance, same static IP, gets the
        # release again).
        keyed = [release_hash, f"{server}-instance-id"]
        assert report.inputs(f"{server}-firewall-copy")["triggers"] == keyed
        assert report.wire[f"{server}-firewall-copy"]["object"]["triggers"] == keyed
        checked += 1
        # The host state records the release, the instance and "in sync"; its deployment token is
        # what the deploy step is keyed on, so any of those changing runs the whole unit.
        state = report.inputs(f"{server}-firewall-host-state")
        assert (state["release"], state["serverIdentity"], state["hostState"]) == (
            release_hash, f"{server}-instance-id", "in sync")
        deploy = report.inputs(f"{server}-firewall-deploy")
        assert deploy["triggers"] == [release_hash, f"{server}-firewall-host-state-deployment"]
        # Deleting or replacing a step runs nothing on the host: the live rules stay.
        for step, _ in STEPS:
            inputs = report.inputs(f"{server}-firewall-{step}")
            assert "delete" not in inputs and "delete" not in report.wire[f"{server}-firewall-{step}"]["object"]
            checked += 1
    assert checked == len(scenario.servers) * (1 + len(STEPS))


@pytest.mark.parametrize("name", WORKING)
def test_deploy_step_carries_the_release_and_the_configured_confirm_timeout(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    timeout = scenario.settings.firewall.confirm_timeout_seconds
    release_dir = f"/home/{scenario.login_user}/.hardened-lightsail-{report.release.hash}"
    checked = 0
    for server in scenario.servers:
        deploy = report.inputs(f"{server}-firewall-deploy")
        assert deploy["create"] == "scripts/hl-step deploy"
        environment = deploy["environment"]
        assert environment["HL_CONFIRM_TIMEOUT"] == str(timeout)
        assert (environment["HL_RELEASE"], environment["HL_REMOTE_DIR"]) == (report.release.hash, release_dir)
        checked += 1
    assert checked == len(scenario.servers) > 0


@pytest.mark.parametrize("name", WORKING)
def test_copied_release_directory_holds_exactly_the_rendered_release(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    release = report.release
    checked = 0
    for server in scenario.servers:
        source = Path(report.inputs(f"{server}-firewall-copy")["source"][ARCHIVE])
        # Relative to the project (the engine's working directory): no checkout path in the state.
        assert not source.is_absolute() and source.name == f".hardened-lightsail-{release.hash}"
        assert {p.name: p.read_bytes() for p in (PROJECT_DIR / source).iterdir()} == release.files
        deploy = report.inputs(f"{server}-firewall-deploy")
        assert deploy["environment"]["HL_RELEASE_DIR"] == str(source)
        assert "dir" not in deploy
        checked += 1
    assert checked == len(scenario.servers) > 0


@pytest.mark.parametrize("name", WORKING)
def test_outside_verification_probes_every_address_of_its_own_server(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    dual_stack = scenario.settings.server.ip_address_type != "ipv4"
    checked = 0
    for index, server in enumerate(scenario.servers):
        addresses = json.loads(report.inputs(f"{server}-firewall-deploy")["environment"]["HL_ADDRESSES"])
        assert addresses == [static_ip(index), *([ipv6_address(index)] if dual_stack else [])]
        checked += 1
    assert checked == len(scenario.servers) > 0


# --- secrets

def _key_occurrences(value, key: str, inside_secret: bool = False):
    """(inside a secret?) for every place `key` appears in a report value."""
    if isinstance(value, dict):
        for k, item in value.items():
            yield from _key_occurrences(item, key, inside_secret or k == SECRET)
    elif isinstance(value, list):
        for item in value:
            yield from _key_occurrences(item, key, inside_secret)
    elif isinstance(value, str) and key in value:
        yield inside_secret


@pytest.mark.parametrize("name", WORKING)
def test_private_key_is_a_secret_everywhere_it_flows(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    checked = 0
    for server in scenario.servers:
        key = private_key(server)
        # Lightsail's answer is kept secret in state, and the program marks it secret itself
        # wherever it passes it on (the mocks, unlike the engine, return it in the clear).
        kept_secret = {"privateKey", "encryptedPrivateKey"}
        assert kept_secret <= set(report.options(f"{server}-key")["additional_secret_outputs"])
        assert kept_secret <= set(report.wire[f"{server}-key"]["additionalSecretOutputs"])
        for step in (f"firewall-{s}" for s in REMOTE_STEPS):
            assert unsecret(report.inputs(f"{server}-{step}")["connection"]["private_key"]) == key, step
            checked += 1
        for step in ("ready", "deploy"):
            environment = report.inputs(f"{server}-firewall-{step}")["environment"]
            assert unsecret(environment["HL_SSH_KEY"]) == key
            assert unsecret(report.wire[f"{server}-firewall-{step}"]["object"]["environment"]["HL_SSH_KEY"]) == key
        assert unsecret(report.inputs(f"{server}-firewall-host-state")["privateKey"]) == key
        assert "privateKey" in report.wire[f"{server}-firewall-host-state"]["additionalSecretOutputs"]
        checked += 2
        # On the wire (what the engine would store and show), every copy of the key is wrapped.
        places = [inside for wire in report.raw["wire"] for inside in _key_occurrences(wire["object"], key)]
        assert places and all(places), f"{server}'s key reaches the engine unwrapped"
        # the remote steps, the host state's read-back, the readiness and deploy steps' environments
        assert len(places) == len(REMOTE_STEPS) + 3
        checked += len(places)
        # The server's private host key: a secret output of HostKey, and secret in the user data
        # that installs it (the only place it goes).
        host_key = fake_host_key(f"{server}-host-key")[0]
        assert "privateKey" in report.wire[f"{server}-host-key"]["additionalSecretOutputs"]
        assert host_key.strip() in unsecret(report.inputs(f"{server}-instance")["user_data"])
        places = [inside for wire in report.raw["wire"] for inside in _key_occurrences(wire["object"], host_key.strip())]
        assert places == [True], f"{server}'s host key reaches the engine unwrapped or twice"
        checked += 1
        assert not list(_key_occurrences(report.raw["exports"], "BEGIN FAKE KEY"))
    assert checked == len(scenario.servers) * (2 * (len(REMOTE_STEPS) + 2) + 2)


# --- exports

@pytest.mark.parametrize("name", WORKING)
def test_exports_name_the_first_server_the_release_and_the_exposure(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    exports, policy, release = report.raw["exports"], scenario.settings.firewall, report.release
    dual_stack = scenario.settings.server.ip_address_type != "ipv4"
    port = "" if policy.ssh_port == 22 else f"-p {policy.ssh_port} "
    assert exports["publicIp"] == "203.0.113.50"
    assert exports["ipv6Addresses"] == (["2001:db8:50::1"] if dual_stack else [])
    assert exports["sshCommand"] == f"ssh {port}{scenario.login_user}@203.0.113.50"
    assert exports["releaseHash"] == release.hash  # render_release(policy), rendered as the program ran
    assert exports["exposure"] == exposure_map(exposure_table(policy, release))
    assert exports["verifiedExposure"] == "verified exposure of web-0-firewall-deploy"
    assert exports["servers"] == [
        {"name": server, "publicIp": static_ip(index),
         "ipv6Addresses": [ipv6_address(index)] if dual_stack else [],
         "sshCommand": f"ssh {port}{scenario.login_user}@{static_ip(index)}",
         "verifiedExposure": f"verified exposure of {server}-firewall-deploy"}
        for index, server in enumerate(scenario.servers)]
    assert set(exports) == {"publicIp", "ipv6Addresses", "sshCommand", "releaseHash", "exposure",
                            "verifiedExposure", "servers"}


def test_exposure_export_names_every_row_of_the_dev_policy_so_diffs_show_each_one():
    report = report_of("dev-yaml")
    report.assert_fully_resolved()
    assert report.raw["exports"]["exposure"] == {
        "tcp/22 IPv4 from 203.0.113.7/32": "open",
        "tcp/22 IPv4 from anyone else": "closed",
        "tcp/22 IPv6 from 2001:db8:7::/64": "open",
        "tcp/22 IPv6 from anyone else": "closed",
        "tcp/80 IPv4 from anyone else": "open",
        "tcp/80 IPv6 from anyone else": "open",
        "tcp/443 IPv4 from anyone else": "open",
        "tcp/443 IPv6 from anyone else": "open",
        "ping IPv4 from anyone else": "open",
        "ping IPv6 from anyone else": "open",
        "any other port": "closed",
    }


def test_exposure_export_of_the_fleet_shows_the_udp_range_to_its_sources_only():
    report = report_of("two-server-fleet")
    report.assert_fully_resolved()
    rows = report.raw["exports"]["exposure"]
    assert rows["udp/27015-27030 IPv4 from 198.51.100.0/24"] == "open"
    assert rows["udp/27015-27030 IPv6 from 2001:db8:100::/48"] == "open"
    assert rows["udp/27015-27030 IPv4 from anyone else"] == "closed"
    assert rows["ping IPv4 from anyone else"] == "closed" and rows["ping IPv6 from anyone else"] == "closed"


# --- fleets and variants

def test_the_host_layers_are_built_once_the_servers_are_registered():
    # So the servers' children (their host keys first) are on their way to the engine, which starts
    # the host keys' provider process while the host layers are built (components/early_registration.py).
    # When each child's request leaves is up to the SDK's threads: the benchmark measures the effect.
    report = report_of("two-server-fleet")
    first_host_layer = next(built for built in report.raw["constructed"]
                            if built["type"] == "hardened-lightsail:host:HostFirewall")
    registered_before = {sent["name"] for sent in report.raw["wire"][:first_host_layer["registered_before"]]}
    assert {"web-0", "web-1"} <= registered_before
    assert {sent["name"] for sent in report.raw["wire"] if sent["type"].endswith(":HostKey")} == \
        {"web-0-host-key", "web-1-host-key"}


def test_two_servers_get_two_independent_chains():
    report = report_of("two-server-fleet")
    report.assert_fully_resolved()
    checked = 0
    for index, (server, other) in enumerate((("web-0", "web-1"), ("web-1", "web-0"))):
        for _, name in per_server(server):
            # Nothing of one server waits for (or reads from) the other.
            assert not any(dep.startswith(f"{other}-") or dep == other for dep in report.dependencies(name)), name
            assert not any(other_name == other or other_name.startswith(f"{other}-")
                           for other_name in report.options(name)["depends_on"])
            checked += 1
        environment = report.inputs(f"{server}-firewall-deploy")["environment"]
        assert environment["HL_SSH_HOST"] == static_ip(index)
        assert unsecret(environment["HL_SSH_KEY"]) == private_key(server)
    assert checked == 2 * len(per_server("web-0"))
    # Same policy, same release on both; each keyed on its own instance and its own host state.
    assert [report.inputs(f"web-{i}-firewall-deploy")["triggers"] for i in (0, 1)] == [
        [report.release.hash, f"web-{i}-firewall-host-state-deployment"] for i in (0, 1)]
    assert [report.inputs(f"web-{i}-firewall-host-state")["serverIdentity"] for i in (0, 1)] == \
        ["web-0-instance-id", "web-1-instance-id"]


def test_ipv4_only_instance_has_no_ipv6_address_to_probe_and_ssh_on_the_custom_port():
    report = report_of("ipv4-custom-ssh-port")
    report.assert_fully_resolved()
    assert report.inputs("web-0-instance")["ip_address_type"] == "ipv4"
    assert report.outputs("web-0-instance")["ipv6_addresses"] == []
    port_infos = report.wire["web-0-cloud-firewall"]["object"]["portInfos"]
    assert [info for info in port_infos if info["protocol"] == "tcp" and info["fromPort"] != 80] == [
        {"protocol": "tcp", "fromPort": 2222, "toPort": 2222, "cidrs": ["198.51.100.23/32"], "ipv6Cidrs": [],
         "cidrListAliases": []}]
    assert report.inputs("web-0-firewall-ready")["environment"]["HL_SSH_PORT"] == "2222"
    assert report.raw["exports"]["sshCommand"] == "ssh -p 2222 admin@203.0.113.50"
    # sshd on a fresh image listens on 22: first-boot user data moves it to the policy's port.
    user_data = unsecret(report.inputs("web-0-instance")["user_data"])
    assert "printf 'Port 2222\\n' > /etc/ssh/sshd_config.d/10-hardened-lightsail-port.conf" in user_data
    dev = unsecret(report_of("dev-yaml").inputs("web-0-instance")["user_data"])
    assert "Port" not in dev, "default port: sshd stays on 22"


@pytest.mark.parametrize("name", WORKING)
def test_first_boot_installs_the_pinned_host_key_and_serves_only_it(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    checked = 0
    for server in scenario.servers:
        private, public = fake_host_key(f"{server}-host-key")
        user_data = unsecret(report.inputs(f"{server}-instance")["user_data"])
        assert user_data.startswith("#!/bin/sh\n") and "set -eu" in user_data
        assert f"<<'HARDENED_LIGHTSAIL_HOST_KEY'\n{private.strip()}\nHARDENED_LIGHTSAIL_HOST_KEY\n" in user_data
        assert f"printf '%s\\n' '{public}' > /etc/ssh/ssh_host_ed25519_key.pub" in user_data
        assert "printf 'HostKey /etc/ssh/ssh_host_ed25519_key\\n' > " \
               "/etc/ssh/sshd_config.d/05-hardened-lightsail-host-key.conf" in user_data
        assert "rm -f /etc/ssh/ssh_host_rsa_key" in user_data
        # A new instance (other zone, image or size) gets a new key: the key is replaced with it.
        key = report.registrations[f"{server}-host-key"]
        assert report.inputs(f"{server}-host-key")["server"] == server
        settings = scenario.settings.server
        assert key["options"]["replacement_trigger"] == [settings.availability_zone, settings.blueprint_id,
                                                         settings.bundle_id]
        checked += 1
    assert checked == len(scenario.servers) > 0


def test_preview_registers_the_same_graph_as_an_update():
    scenario = SCENARIOS["two-server-fleet"]
    preview = Report(run_program(scenario.stack, scenario.values, scenario.other_config, preview=True))
    update = report_of("two-server-fleet")
    update.assert_fully_resolved()
    assert preview.raw["error"] is None
    shape = lambda report: sorted(  # noqa: E731
        (r["type"], r["name"], r["options"]["parent"], tuple(r["options"]["depends_on"]))
        for r in report.raw["registrations"])
    # Nothing is created inside an apply (it would vanish from previews), so both register the same.
    assert shape(preview) == shape(update)
    assert len(preview.raw["registrations"]) == 2 * len(per_server("web-0")) + len(PER_STACK)
    # The preview really had unknowns (the addresses Lightsail hands out), and still went through.
    assert preview.raw["exports"]["publicIp"] == {UNKNOWN: True}
    assert preview.raw["exports"]["releaseHash"] == update.release.hash
    assert preview.raw["counters"]["apply_callbacks"] < preview.raw["counters"]["outputs_seen"]


# --- refused configs: nothing registered

def _refused(values: dict, stack: str = "dev") -> Report:
    report = Report(run_program(stack, values))
    assert report.raw["registrations"] == [] and report.raw["wire"] == []
    assert report.raw["counters"]["new_resource"] == 0
    assert report.raw["exports"] == {}
    return report


BAD_PORT = {"adminCidrs": ["203.0.113.7/32"], "services": [{"name": "web", "protocol": "tcp", "ports": "70000"}]}
BAD_PORT_LINE = 'firewall.services[0].ports: "70000" is not a port (1-65535)'


@pytest.mark.parametrize("target", ["lightsail", "lab"])
def test_invalid_config_stops_the_run_before_anything_is_registered(target):
    report = _refused({"target": target, "firewall": BAD_PORT})
    assert report.raw["error"] == {
        "type": "RunError", "message": "invalid stack config: 1 problem(s), listed above; nothing was changed"}
    assert report.raw["logs"] == [{"level": "error", "message": BAD_PORT_LINE}]


def test_every_config_problem_is_logged_as_its_own_error_line():
    report = _refused({"firewall": {**BAD_PORT, "sshPort": 0}, "server": {"count": 21}, "lab": {"slot": 99}})
    assert report.raw["error"] == {
        "type": "RunError", "message": "invalid stack config: 4 problem(s), listed above; nothing was changed"}
    assert report.raw["logs"] == [{"level": "error", "message": line} for line in [
        "firewall.sshPort: 0 is out of range (1-65535)",
        BAD_PORT_LINE,
        "server.count: 21 is out of range (1-20)",
        "lab.slot: 99 is out of range (0-15)",
    ]]


LOCKOUT = {"adminCidrs": ["203.0.113.7/32"], "blocklist": ["203.0.113.0/24"]}
LOCKOUT_PROBLEMS = ["firewall.blocklist[0] 203.0.113.0/24 blocks (part of) admin CIDR 203.0.113.7/32",
                    "host rules (rules.v4) refuse SSH (tcp/22) from admin CIDR 203.0.113.7/32"]


def test_lockout_policy_is_refused_before_anything_is_registered():
    report = _refused({"firewall": LOCKOUT})
    assert report.raw["error"] == {
        "type": "RunError", "message": "firewall policy refused: 2 problem(s), listed above; nothing was changed"}
    refuse = ("Refusing to ship it: fix firewall.adminCidrs/blocklist, or set firewall.allowLockout: true "
              "for a rollback drill")
    assert report.raw["logs"] == [{"level": "error", "message": f"lock-out: {problem}. {refuse}"}
                                  for problem in LOCKOUT_PROBLEMS]


def test_allow_lockout_ships_the_policy_with_a_loud_warning():
    drill = {**LOCKOUT, "allowLockout": True, "confirmTimeoutSeconds": 30}
    report = Report(run_program("dev", {"firewall": drill}))
    report.assert_fully_resolved()
    assert report.raw["logs"] == [
        {"level": "warning", "message": f"LOCK-OUT ALLOWED (firewall.allowLockout: true): {problem}; "
                                        "the host will roll back by itself 30 s after apply"}
        for problem in LOCKOUT_PROBLEMS]
    assert sorted(w["name"] for w in report.raw["wire"]) == sorted(name for _, name in per_server("web-0") + PER_STACK)
    # The drill still goes through commit-confirm: the rollback is armed with the configured deadline.
    assert report.inputs("web-0-firewall-deploy")["environment"]["HL_CONFIRM_TIMEOUT"] == "30"


# --- the cloud firewall read back (what AWS stores against the policy)

def readback_verdicts(report: Report) -> list[dict]:
    """The per-server verdicts the program handed to the read-back step (each went through the
    `apply` on that server's stored port infos: the runner counts every callback)."""
    return json.loads(report.inputs(READBACK)["environment"]["HL_CLOUD_READBACK"])


def run_readback_step(report: Report) -> subprocess.CompletedProcess:
    """The step exactly as pulumi-command runs it: `scripts/hl-step cloud-readback`, from the
    project directory, with the environment the program gave it."""
    step = report.inputs(READBACK)
    return subprocess.run(["sh", "-c", step["create"]], cwd=PROJECT_DIR, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", **step["environment"]})


@pytest.mark.parametrize("name", WORKING)
def test_readback_step_runs_after_every_host_firewall_and_nothing_waits_for_it(name):
    report, scenario = report_of(name), SCENARIOS[name]
    report.assert_fully_resolved()
    assert report.inputs(READBACK)["create"] == "scripts/hl-step cloud-readback"
    assert "delete" not in report.inputs(READBACK)
    assert report.options(READBACK)["depends_on"] == [f"{server}-firewall" for server in scenario.servers]
    checked = 0
    for server in scenario.servers:
        # A dependency on the component is one on each of its steps: the check starts after the last.
        assert {f"{server}-firewall-{step}" for step, _ in STEPS} <= report.dependencies(READBACK)
        # ... and no step of any server waits for it, so a failed check never stops a host layer.
        for _, resource in per_server(server):
            assert READBACK not in report.dependencies(resource)
            assert READBACK not in report.options(resource)["depends_on"]
        checked += 1
    assert checked == len(scenario.servers) > 0


@pytest.mark.parametrize("name", [*WORKING, "aws-quirks"])
def test_stored_cloud_firewall_that_lets_in_what_the_policy_does_passes_the_readback(name):
    report, scenario = report_of(name), {**SCENARIOS, **CLOUD_SCENARIOS}[name]
    report.assert_fully_resolved()
    verdicts = readback_verdicts(report)
    stored = [len(report.outputs(f"{server}-cloud-firewall")["port_infos"]) for server in scenario.servers]
    assert verdicts == [{"server": server, "stored_entries": count, "more_open": [], "less_open": []}
                        for server, count in zip(scenario.servers, stored, strict=True)]
    if name == "aws-quirks":  # really written differently: reordered, ranges split, icmp code -1, no /32
        assert stored[0] > len(report.release.port_infos)
    step = run_readback_step(report)
    assert step.returncode == 0, step.stderr
    assert step.stdout.splitlines() == [f"{server}: the cloud firewall matches the policy ({count} port info(s) "
                                        "as AWS stores them)" for server, count in zip(scenario.servers, stored, strict=True)]
    assert not [log for log in report.raw["logs"] if "cloud firewall" in log["message"]]


WIDENED_SSH = ("tcp 22: ipv6Cidrs +::/0 (AWS's default: the policy leaves ipv6Cidrs empty here and pulumi-aws "
               "sends no empty list, so `up` can't clear it)")


def test_aws_that_widens_ipv6_fails_up_naming_each_server_and_the_rows():
    report = report_of("aws-widens")
    report.assert_fully_resolved()
    # The fake AWS filled in ::/0 for the SSH rule, sent without IPv6 admins (and its own order).
    stored = report.outputs("web-1-cloud-firewall")["port_infos"]
    assert [info["ipv6_cidrs"] for info in stored if info["from_port"] == 22] == [["::/0"]]
    verdicts = readback_verdicts(report)
    assert [(v["server"], len(v["more_open"]), v["less_open"]) for v in verdicts] == [("web-0", 1, []), ("web-1", 1, [])]
    step = run_readback_step(report)
    assert (step.returncode, step.stdout) == (1, "")
    assert step.stderr.splitlines() == [
        line for server in ("web-0", "web-1") for line in (
            f"{server}: the cloud firewall is MORE open than the policy (3 port info(s) as AWS stores them); "
            "AWS lets in what the policy does not:", f"  {WIDENED_SSH}")] + [
        "The host firewall was deployed and still filters what gets through. To close these rows, give a rule the "
        "policy leaves empty in a family sources of its own there (e.g. an IPv6 admin CIDR); anything else the "
        "cloud firewall holds beyond the policy goes back with `pulumi up --refresh`."]
    assert "Traceback" not in step.stdout + step.stderr
    # In an update the step alone says it (once, at the end); the program adds no line of its own.
    assert not [log for log in report.raw["logs"] if "cloud firewall" in log["message"]]


def test_preview_of_a_stored_cloud_firewall_that_is_more_open_warns_that_up_will_fail():
    report = report_of("aws-widens-preview")
    assert report.raw["error"] is None
    warnings = sorted((log for log in report.raw["logs"] if log["level"] == "warning"), key=lambda log: log["message"])
    assert warnings == [{"level": "warning", "message": "\n".join([
        f"{server}: the cloud firewall is MORE open than the policy (3 port info(s) as AWS stores them); "
        "AWS lets in what the policy does not:", f"  {WIDENED_SSH}",
        "`up` will fail on this once the host firewalls are deployed, unless the cloud firewall changes"])}
        for server in ("web-0", "web-1")]


def test_aws_that_narrows_is_a_warning_and_up_goes_on():
    report = report_of("aws-narrows")
    report.assert_fully_resolved()
    less_open = ["tcp 22: ipv6Cidrs -2001:db8:7::/64", "tcp 443: cidrs -0.0.0.0/0", "tcp 443: ipv6Cidrs -::/0"]
    assert report.raw["logs"] == [{"level": "warning", "message": "\n".join([
        "web-0: the cloud firewall AWS stores is less open than the policy; it keeps closed what the policy opens:",
        *(f"  {row}" for row in less_open)])}]
    [verdict] = readback_verdicts(report)
    assert (verdict["server"], verdict["more_open"], len(verdict["less_open"])) == ("web-0", [], 3)
    step = run_readback_step(report)
    assert (step.returncode, step.stderr) == (0, "")
    assert step.stdout == "web-0: the cloud firewall is less open than the policy (4 port info(s) as AWS stores them)\n"


def test_a_service_name_that_would_split_a_rules_line_is_refused_before_anything_is_registered():
    hostile = {"adminCidrs": ["203.0.113.7/32"],
               "services": [{"name": "web\n-A INPUT -j ACCEPT", "protocol": "tcp", "ports": "443"}]}
    report = _refused({"firewall": hostile})
    assert report.raw["error"] == {
        "type": "RunError", "message": "invalid stack config: 1 problem(s), listed above; nothing was changed"}
    assert report.raw["logs"] == [{"level": "error", "message": (
        'firewall.services[0].name: "web\\n-A INPUT -j ACCEPT" is not a service name (lowercase letters, digits, '
        "'-', up to 24 characters, e.g. \"https\")")}]


# --- verification from a vantage outside the admin CIDRs

VANTAGE_PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nZmFrZSB2YW50YWdl\n-----END OPENSSH PRIVATE KEY-----\n"
VANTAGE_HOST_KEY = fake_host_key("vantage")[1]


def _with_vantage(**vantage) -> dict:
    values = SCENARIOS["dev-yaml"].values
    return {**values, "verify": {"vantage": {"host": "198.51.100.7", "user": "probe", "hostKey": VANTAGE_HOST_KEY,
                                             "privateKey": VANTAGE_PRIVATE_KEY, **vantage}}}


def test_a_vantage_reaches_the_deploy_step_with_its_key_kept_secret():
    report = Report(run_program("dev", _with_vantage(port=2200), secret_keys=("verify",)))
    report.assert_fully_resolved()
    deploy = report.inputs("web-0-firewall-deploy")["environment"]
    assert deploy["HL_VERIFY_SCAN"] == "quick"  # the deployer's own link to a cloud address
    assert json.loads(deploy["HL_VERIFY_VANTAGE"]) == {"host": "198.51.100.7", "port": 2200, "user": "probe",
                                                       "hostKey": " ".join(VANTAGE_HOST_KEY.split()[:2]), "scan": "full"}
    assert unsecret(deploy["HL_VERIFY_VANTAGE_KEY"]) == VANTAGE_PRIVATE_KEY
    assert VANTAGE_PRIVATE_KEY not in json.dumps(report.raw["exports"]) + json.dumps(report.raw["logs"])
    plain = Report(run_program("dev", SCENARIOS["dev-yaml"].values))
    assert "HL_VERIFY_VANTAGE" not in plain.inputs("web-0-firewall-deploy")["environment"]


def test_a_vantage_key_in_plain_text_stops_the_program_before_anything_is_registered():
    report = Report(run_program("dev", _with_vantage()))
    assert report.raw["error"]["message"] == "invalid stack config: 1 problem(s), listed above; nothing was changed"
    assert report.raw["registrations"] == []
    assert any(log["message"].startswith("verify.vantage.privateKey: is stored in plain text") for log in
               report.raw["logs"]), report.raw["logs"]
