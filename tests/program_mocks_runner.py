"""Runs the real __main__.py once under Pulumi mocks and prints, as JSON, everything it registered.

One scenario per process (`python tests/program_mocks_runner.py < scenario.json`), so every run
starts from a fresh Pulumi runtime (settings, config, root stack); tests/test_program_mocks.py
asserts on the report. Scenario: {"stack": "dev", "config": {"hardened-lightsail:firewall": "<json>",
...}, "preview": false, "cloud": "as-sent"} ("cloud": what the fake AWS stores of the cloud
firewall, see aws_stores). The report holds, per registration, both what the program passed
(`registrations`: inputs resolved through `Output.apply`, and the ResourceOptions mocks never see)
and what the engine would have received (`wire`: the serialized request, secrets still wrapped)."""
from __future__ import annotations

import gc
import json
import logging
import os
import re
import runpy
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROJECT, PROGRAM = "hardened-lightsail", PROJECT_DIR / "__main__.py"

# Markers in the report (a dict with one of these keys stands for the value it describes).
SECRET, UNKNOWN, RESOURCE, ARCHIVE = "$secret", "$unknown", "$resource", "$archive"
# Pulumi's wire signatures (sdk/go/common/resource/sig); the wire report maps them to the markers.
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG, ARCHIVE_SIG, RESOURCE_SIG = ("1b47061264138c4ac30d75fd1eb44270", "0def7320c3a5731c473e5ecbe6d01bc7",
                                         "5cf8f73096256a8f31e491e813e4eb8e")
UNKNOWN_VALUE = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def fake_private_key(name: str) -> str:
    return f"-----BEGIN FAKE KEY-----\n{name}\n-----END FAKE KEY-----\n"


def server_index(resource_name: str) -> int:
    """web-1-ip -> 1: each server of a fleet gets its own addresses (0 for an unexpected name)."""
    match = re.match(r"[a-z]+-(\d+)-", resource_name)
    return int(match.group(1)) if match else 0


HOST_STATE = "pulumi-python:dynamic/hardened-lightsail:HostState"
HOST_KEY = "pulumi-python:dynamic/hardened-lightsail:HostKey"
FAKE_HOST_KEY_BLOB = "AAAAC3NzaC1lZDI1NTE5AAAAIAvIofaJdTmhMB6/V5NLfz+IAK4um5r76VMCXt+qvudP"


def fake_host_key(name: str) -> tuple[str, str]:
    """(private, public) host key of HostKey `name` under mocks (a valid public key line)."""
    return fake_private_key(name), f"ssh-ed25519 {FAKE_HOST_KEY_BLOB} hardened-lightsail {name}"


def static_ip(index: int) -> str:
    return f"203.0.113.{50 + index}"


def ipv6_address(index: int) -> str:
    return f"2001:db8:{50 + index}::1"


MOCK_LAB_SLOT = 3
PUBLIC_PORTS = "aws:lightsail/instancePublicPorts:InstancePublicPorts"


def aws_stores(port_infos: list[dict], behaviour: str) -> list[dict]:
    """What the fake AWS keeps of the port infos it was sent: the resource's outputs, as the
    provider reads them back after a create or a refresh. `behaviour`:
    as-sent   exactly the list sent;
    widens    pulumi-aws leaves an empty list out of the request and AWS fills in its default
              (0.0.0.0/0, ::/0) for that family; entries come back in AWS's own order;
    narrows   the https rule (443) is gone and SSH lost its IPv6 sources;
    quirks    the same rules, written differently: another order, a port range stored as two,
              the ping rules with code -1, a /32 without its prefix, the other family's default
              on the icmp rules (which can't carry it)."""
    sent = [dict(info) for info in port_infos]
    if behaviour == "widens":
        return [{**info, "cidrs": info["cidrs"] or ["0.0.0.0/0"], "ipv6Cidrs": info["ipv6Cidrs"] or ["::/0"]}
                for info in reversed(sent)]
    if behaviour == "narrows":
        return [{**info, "ipv6Cidrs": []} if info["fromPort"] == 22 else info
                for info in sent if info["fromPort"] != 443]
    if behaviour == "quirks":
        stored = []
        for info in reversed(sent):
            if info["protocol"] in ("icmp", "icmpv6"):
                stored.append({**info, "toPort": -1, "cidrs": info["cidrs"] or ["0.0.0.0/0"],
                               "ipv6Cidrs": info["ipv6Cidrs"] or ["::/0"]})
            elif info["toPort"] - info["fromPort"] >= 2:
                middle = (info["fromPort"] + info["toPort"]) // 2
                stored += [{**info, "toPort": middle}, {**info, "fromPort": middle + 1}]
            else:
                stored.append({**info, "cidrs": [c.removesuffix("/32") for c in info["cidrs"]]})
        return stored
    assert behaviour == "as-sent", behaviour
    return sent


def command_stdout(name: str, inputs: dict) -> str:
    if name == "lab-lab":  # `hl-lab up`: the lab's description (HL_LAB_SERVERS servers) and the deployer key
        from lab.topology import LabTopology
        environment = inputs.get("environment") or {}
        if environment.get(SIG_KEY) == SECRET_SIG:  # a map holding a secret (the host keys) comes wrapped whole
            environment = environment["value"]
        servers = int(environment.get("HL_LAB_SERVERS", 1))
        return json.dumps({**LabTopology("mock-lab", MOCK_LAB_SLOT, "/tmp/mock-lab", servers).describe(),
                           "privateKey": fake_private_key(name)})
    if name.endswith("-ready"):
        return "ready"
    if name.endswith("-deploy"):
        return f"[  0.1 s] apply: ...\n--- measured from outside ---\nverified exposure of {name}\n"
    return f"{name}: done"


def main() -> None:
    scenario = json.load(sys.stdin)
    os.chdir(PROJECT_DIR)
    sys.path.insert(0, str(PROJECT_DIR))
    report = run_scenario(scenario)
    json.dump(report, sys.stdout, indent=1, sort_keys=True)


def run_scenario(scenario: dict) -> dict:
    import pulumi
    from google.protobuf import json_format
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    counters = {"apply_callbacks": 0, "outputs_seen": 0, "new_resource": 0}
    logs: list[dict] = []
    invokes: list[str] = []

    class FakeCloud(pulumi.runtime.Mocks):
        """AWS Lightsail and pulumi-command as a deterministic fake: every output a later step reads."""

        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            counters["new_resource"] += 1
            name, inputs = args.name, dict(args.inputs)
            if args.typ == PUBLIC_PORTS:
                # After a create, or (in a preview) as a refresh left an unchanged resource's state.
                return f"{name}-id", {**inputs, "portInfos": aws_stores(inputs["portInfos"],
                                                                         scenario.get("cloud", "as-sent"))}
            if scenario.get("preview"):
                # As the engine previews a create: inputs come back, computed outputs are unknown.
                return f"{name}-id", inputs
            if args.typ == "aws:lightsail/keyPair:KeyPair":
                # Returned in the clear, as a mock does: the program itself must keep it secret.
                return f"{name}-id", {**inputs, "name": f"{name}-generated", "privateKey": fake_private_key(name),
                                      "publicKey": "ssh-ed25519 AAAAFAKE", "fingerprint": "fa:ke"}
            if args.typ == "aws:lightsail/instance:Instance":
                index = server_index(name)
                v6 = [] if inputs.get("ipAddressType") == "ipv4" else [ipv6_address(index)]
                return f"{name}-id", {**inputs, "name": f"{name}-generated", "ipv6Addresses": v6,
                                      "publicIpAddress": f"198.51.100.{50 + index}", "username": "ubuntu"}
            if args.typ == "aws:lightsail/staticIp:StaticIp":
                return f"{name}-id", {**inputs, "name": f"{name}-generated",
                                      "ipAddress": static_ip(server_index(name))}
            if args.typ == "aws:lightsail/staticIpAttachment:StaticIpAttachment":
                return f"{name}-id", {**inputs, "ipAddress": static_ip(server_index(name))}
            if args.typ in ("command:remote:Command", "command:local:Command"):
                return f"{name}-id", {**inputs, "stdout": command_stdout(name, inputs), "stderr": ""}
            if args.typ == HOST_KEY:
                private, public = fake_host_key(name)
                return f"{name}-id", {**inputs, "privateKey": private, "publicKey": public, "fingerprint": "SHA256:fake"}
            if args.typ == HOST_STATE:
                return f"{name}-id", {**inputs, "deployment": f"{name}-deployment"}
            return f"{name}-id", inputs

        def call(self, args: pulumi.runtime.MockCallArgs):
            invokes.append(args.token)
            return {}

    wire: list[dict] = []

    class RecordingMonitor(MockMonitor):
        """Keeps each RegisterResource request as the engine would receive it."""

        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                wire.append({
                    "type": request.type, "name": request.name, "custom": request.custom,
                    "urn": response.urn, "parent": request.parent,
                    "object": wire_value(json_format.MessageToDict(request.object)),
                    "dependencies": sorted(request.dependencies),
                    "propertyDependencies": {key: sorted(deps.urns)
                                             for key, deps in request.propertyDependencies.items()},
                    "deleteBeforeReplace": request.deleteBeforeReplace,
                    "additionalSecretOutputs": sorted(request.additionalSecretOutputs),
                })
            return response

    class LogCapture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logs.append({"level": record.levelname.lower(), "message": record.getMessage()})

    logger = logging.getLogger("hardened-lightsail-mocks")
    logger.propagate = False
    logger.setLevel(logging.INFO)  # the SDK logs every RPC at debug
    logger.addHandler(LogCapture())

    os.environ.pop("PULUMI_CONFIG", None)  # only the scenario's config
    pulumi.runtime.set_all_config(scenario["config"], scenario.get("secret_keys"))
    mocks = FakeCloud()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=scenario["stack"],
                             preview=scenario.get("preview", False), logger=logger,
                             monitor=RecordingMonitor(mocks))

    # Record every Resource the program constructs, with the options it was given (after the
    # root stack, which set_mocks registered itself).
    registered: list[tuple] = []
    constructed: list[dict] = []
    names: dict[int, str] = {}
    original_init = pulumi.Resource.__init__

    def recording_init(self, t, name, custom, props=None, opts=None, *args, **kwargs):
        names[id(self)] = name
        # How many registrations had reached the monitor when the program built this resource.
        constructed.append({"type": t, "name": name, "registered_before": len(wire)})
        registered.append((self, t, name, custom, props, opts))
        return original_init(self, t, name, custom, props, opts, *args, **kwargs)

    pulumi.Resource.__init__ = recording_init

    # And the arguments the program gave each provider resource, before the provider SDK wraps
    # them (pulumi-command marks the whole `connection` secret itself, which would hide whether
    # the program keeps the private key secret on its own).
    program_inputs: dict[str, dict] = {}
    import pulumi_aws as aws
    import pulumi_command as command
    for cls in (aws.lightsail.KeyPair, aws.lightsail.Instance, aws.lightsail.StaticIp,
                aws.lightsail.StaticIpAttachment, aws.lightsail.InstancePublicPorts,
                command.remote.Command, command.remote.CopyToRemote, command.local.Command):
        def recording_internal_init(self, resource_name, opts=None, *args, _original=cls._internal_init, **kwargs):
            program_inputs[resource_name] = kwargs
            return _original(self, resource_name, opts, *args, **kwargs)
        cls._internal_init = recording_internal_init
    # Dynamic resources (HostState, HostKey) get their props as one dict: record it before the SDK adds
    # the serialized provider.
    import pulumi.dynamic
    original_dynamic_init = pulumi.dynamic.Resource.__init__

    def recording_dynamic_init(self, provider, resource_name, props, opts=None):
        program_inputs[resource_name] = dict(props)
        return original_dynamic_init(self, provider, resource_name, props, opts)
    pulumi.dynamic.Resource.__init__ = recording_dynamic_init

    async def resolve(value):
        """Plain JSON for any input: every Output is read through `apply` (counted), secrets and
        unknowns are kept as markers."""
        if isinstance(value, pulumi.Output):
            counters["outputs_seen"] += 1

            def seen(resolved):
                counters["apply_callbacks"] += 1
                return resolved

            applied = value.apply(seen)
            secret = await applied.is_secret()
            if not await applied.is_known():
                return {UNKNOWN: True}
            inner = await resolve(await applied.future())
            return {SECRET: inner} if secret else inner
        if isinstance(value, pulumi.Resource):
            return {RESOURCE: names.get(id(value), repr(value))}
        if isinstance(value, pulumi.Archive):
            return {ARCHIVE: str(getattr(value, "path", value))}
        if isinstance(value, dict):
            return {str(k): await resolve(v) for k, v in list(value.items()) if v is not None}
        if isinstance(value, (list, tuple)):
            return [await resolve(item) for item in value]
        if hasattr(type(value), "_pulumi_input_type") or hasattr(type(value), "_pulumi_output_type"):
            fields = value if isinstance(value, dict) else vars(value)
            return {k: await resolve(v) for k, v in list(fields.items()) if v is not None}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return {"$repr": repr(value)}

    def resource_names(value) -> list:
        if value is None:
            return []
        items = value if isinstance(value, (list, tuple)) else [value]
        return [names.get(id(item), repr(item)) for item in items]

    def options(opts) -> dict:
        if opts is None:
            return {"parent": None, "depends_on": []}
        return {"parent": names.get(id(opts.parent)) if opts.parent is not None else None,
                "depends_on": resource_names(opts.depends_on),
                "delete_before_replace": opts.delete_before_replace,
                "additional_secret_outputs": list(opts.additional_secret_outputs or []),
                "protect": opts.protect, "retain_on_delete": opts.retain_on_delete,
                "ignore_changes": list(opts.ignore_changes or []),
                "replace_on_changes": list(opts.replace_on_changes or []),
                "replacement_trigger": opts.replacement_trigger}

    report: dict = {"error": None}
    # The program's async entrypoint (`pulumi.run`), awaited after its module code as the SDK's
    # run_in_stack does (under mocks nothing else would run it).
    entrypoints: list = []
    pulumi.run = entrypoints.append

    async def program_then_report():
        try:
            runpy.run_path(str(PROGRAM), run_name="__main__")
            for entrypoint in entrypoints:
                await entrypoint()
        except Exception as error:  # noqa: BLE001 - the report says what stopped the program
            report["error"] = {"type": type(error).__name__, "message": str(error)}
        report["registrations"] = [
            {"type": t, "name": name, "custom": custom, "options": options(opts),
             "inputs": await resolve(props) if props is not None else {}}
            for _, t, name, custom, props, opts in registered]
        # What the program would read back from each provider resource (the mocks' answers).
        report["resource_outputs"] = {
            name: {attr: await resolve(value) for attr, value in list(vars(resource).items())
                   if isinstance(value, pulumi.Output) and not attr.startswith("_")}
            for resource, _, name, custom, _, _ in registered if custom}
        report["program_inputs"] = {name: await resolve(kwargs) for name, kwargs in list(program_inputs.items())}
        root = pulumi.runtime.get_root_resource()
        report["exports"] = {key: await resolve(value) for key, value in list(root.outputs.items())}

    _sync_await(run_pulumi_func(program_then_report))
    # Objects the program put out of the garbage collector's sight (components/process_exit.py).
    report.update(wire=wire, constructed=constructed, logs=logs, invokes=invokes, counters=counters, frozen=gc.get_freeze_count())
    return report


def wire_value(value):
    """A serialized property value, with Pulumi's signatures turned into the report's markers."""
    if isinstance(value, dict):
        signature = value.get(SIG_KEY)
        if signature == SECRET_SIG:
            return {SECRET: wire_value(value["value"])}
        if signature == ARCHIVE_SIG:
            return {ARCHIVE: value.get("path")}
        if signature == RESOURCE_SIG:
            return {RESOURCE: value.get("urn")}
        return {key: wire_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [wire_value(item) for item in value]
    if value == UNKNOWN_VALUE:
        return {UNKNOWN: True}
    if isinstance(value, float) and value.is_integer():
        return int(value)  # protobuf Struct numbers are doubles
    return value


if __name__ == "__main__":
    main()
