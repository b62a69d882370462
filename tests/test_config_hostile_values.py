"""Every value of the config, fed what would break a rules file or a shell: control characters,
quotes, `$( )`, newlines, 10,000 characters. Each is refused with its key named, `scripts/fw`
exits 2 without a traceback, every message stays one printable line, and nothing is rendered.

The fields come from walking the config model (hardened_lightsail/policy.py, through the key
names config.py derives from it), so a field added there is fed the same values here."""
from __future__ import annotations

import copy
import re
import subprocess
import types
import typing
from pathlib import Path

import pytest
import yaml

from hardened_lightsail import cli
from hardened_lightsail.config import NAMESPACE, config_keys, config_values, settings_from_values
from hardened_lightsail.policy import StackSettings

PROJECT_DIR = Path(__file__).resolve().parent.parent

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2h3HbdTKM1w3WQ3Hd2X1b3lXmZQ9u5Yy6yYtq0f6S"
ENCRYPTED = {"secure": "v1:aGFyZGVuZWQ=:bGlnaHRzYWls"}  # how a stack file holds a secret
# A config with every list holding an item, so every field has a path to feed.
SAMPLE = config_values(settings_from_values({
    "target": "lightsail",
    "firewall": {"adminCidrs": ["203.0.113.0/24"], "blocklist": ["198.51.100.0/24"],
                 "deployerAddresses": ["203.0.113.8/32"],
                 "services": [{"name": "web", "protocol": "tcp", "ports": "443", "sources": ["0.0.0.0/0"]}]},
    "verify": {"scan": "full", "vantage": {"host": "198.51.100.7", "user": "probe", "hostKey": HOST_KEY,
                                           "privateKey": ENCRYPTED}},
    "lab": {"slot": 3},
}))
SAMPLE["verify"]["vantage"]["privateKey"] = ENCRYPTED  # a secret: never in the settings, kept in the file


def _unoptional(hint):
    """Vantage | None -> Vantage: the walk goes into an optional part of the config too."""
    arguments = [a for a in typing.get_args(hint) if a is not type(None)]
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)  # Optional[X] or X | None
    return arguments[0] if is_union and len(arguments) == 1 else hint


def config_fields(model=StackSettings, sample=SAMPLE, path=""):
    """(path, sample value) of every value the config holds: the model's fields, by their config
    keys, into nested settings and the first item of each list."""
    hints = {name: _unoptional(hint) for name, hint in typing.get_type_hints(model).items()}
    for key, name in config_keys(model).items():
        here, value = f"{path}.{key}" if path else key, sample[key]
        if isinstance(value, dict):
            yield from config_fields(hints[name], value, here)
        elif isinstance(value, list):
            assert value, f"{here}: SAMPLE needs an item in this list"
            item_type = typing.get_args(hints[name])[0]
            if isinstance(value[0], dict):
                yield from config_fields(item_type, value[0], f"{here}[0]")
            else:
                yield f"{here}[0]", value[0]
        else:
            yield here, value


FIELDS = dict(config_fields())
HOSTILE = {
    "trailing newline": lambda v: f"{v}\n",
    "a rules line": lambda v: f"{v}\n-A INPUT -j ACCEPT",
    "carriage return": lambda v: f"{v}\r",
    "NUL": lambda v: f"{v}\x00",
    "terminal escape": lambda v: f"{v}\x1b[2J",
    "tab": lambda v: f"{v}\t",
    "double quote": lambda v: f'{v}"',
    "single quote": lambda v: f"{v}'",
    "command substitution": lambda v: f"{v}$(touch /tmp/hl-pwned)",
    "backticks": lambda v: f"{v}`id`",
    "10,000 digits": lambda v: "9" * 10_000,
    "10,000 more characters": lambda v: f"{v}{'a' * 10_000}",
}


def test_the_walk_finds_every_kind_of_field():
    # A guard against a walk that quietly finds nothing: these must all be among the fields fed.
    assert {"target", "firewall.adminCidrs[0]", "firewall.services[0].name", "firewall.services[0].protocol",
            "firewall.services[0].ports", "firewall.services[0].sources[0]", "firewall.dropLog.prefix",
            "firewall.sshRateLimit.perMinute", "firewall.blocklist[0]", "firewall.deployerAddresses[0]",
            "server.availabilityZone", "server.blueprintId", "server.bundleId", "server.ipAddressType",
            "lab.slot", "verify.scan", "verify.vantage.host", "verify.vantage.user", "verify.vantage.hostKey",
            "verify.vantage.port", "verify.vantage.scan", "verify.fleetScan"} <= set(FIELDS)
    # ... and every leaf of the model: a field added to policy.py shows up here by itself.
    assert len(FIELDS) >= 28, sorted(FIELDS)


def with_value(path: str, value) -> dict:
    config = copy.deepcopy(SAMPLE)
    *parents, last = [int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", path)]
    holder = config
    for part in parents:
        holder = holder[part]
    holder[last] = value
    return config


def stack_file(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "Pulumi.hostile.yaml"
    path.write_text(yaml.safe_dump({"config": {f"{NAMESPACE}:{key}": value for key, value in config.items()}}))
    return path


def assert_refused(path: str, code: int, stdout: str, stderr: str) -> None:
    assert code == 2, stdout + stderr
    assert stdout == "" and "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), lines
    assert lines[0].isprintable() and len(lines[0]) < 400, lines[0]


@pytest.mark.parametrize("how", HOSTILE)
@pytest.mark.parametrize("path", FIELDS)
def test_a_hostile_value_is_refused_with_its_key_named_and_nothing_rendered(path, how, tmp_path, capsys):
    value = HOSTILE[how](str(FIELDS[path]))
    config = stack_file(tmp_path, with_value(path, value))
    assert yaml.safe_load(config.read_text())["config"]  # the YAML carries the value as it is
    out = tmp_path / "release"
    for argv in (["check", "--config", str(config)], ["render", "--config", str(config), "--out", str(out)]):
        code = cli.main(argv)
        captured = capsys.readouterr()
        assert_refused(path, code, captured.out, captured.err)
    assert not out.exists()


def test_scripts_fw_refuses_a_rules_line_in_any_field_with_exit_2(tmp_path):
    """The real command (its own process): one run per field, with a rules line after the value."""
    checked = 0
    for path, sample in FIELDS.items():
        config = stack_file(tmp_path, with_value(path, HOSTILE["a rules line"](str(sample))))
        result = subprocess.run([str(PROJECT_DIR / "scripts" / "fw"), "check", "--config", str(config)],
                                capture_output=True, text=True, timeout=60)
        assert_refused(path, result.returncode, result.stdout, result.stderr)
        checked += 1
    assert checked == len(FIELDS)


def test_the_sample_config_itself_is_accepted(tmp_path, capsys):
    assert cli.main(["check", "--config", str(stack_file(tmp_path, SAMPLE))]) == 0
    assert "error" not in capsys.readouterr().err


@pytest.mark.parametrize("key", ["admin\nCidrs", "x" * 10_000, "$(id)", "fire\x1bwall"])
def test_a_hostile_key_is_named_escaped_on_one_line(key, tmp_path, capsys):
    config = {**SAMPLE, "firewall": {**SAMPLE["firewall"], key: 1}}
    assert cli.main(["check", "--config", str(stack_file(tmp_path, config))]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: firewall") and "unknown key" in line
    assert line.isprintable() and len(line) < 600, line


@pytest.mark.parametrize("value", ["203.0.113.7/32\n", "fe80::1%eth0/128", "2001:db8::%$(id)/128",
                                   "2001:db8::%x\n-A INPUT -j ACCEPT/128", " 203.0.113.7/32", "２０３.0.113.7/32",
                                   "203.0.113.7\x00/32"])
def test_a_cidr_is_only_digits_dots_colons_and_a_length(value):
    """ipaddress alone takes an IPv6 zone ("%eth0", which may hold spaces and newlines) and
    strips nothing; the policy takes neither."""
    from hardened_lightsail.config import ConfigError
    with pytest.raises(ConfigError) as refused:
        settings_from_values({"firewall": {"adminCidrs": [value]}})
    [problem] = refused.value.problems
    assert problem.startswith("firewall.adminCidrs[0]: ") and problem.isprintable()
