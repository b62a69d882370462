"""Hints for the config mistakes a new Pulumi user makes: a nested key set without --path, and a
list given to `config set` as text. Each hint is the exact commands that fix it, for the right
stack; the engine test runs them through the real CLI and the preview then passes."""
from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from hardened_lightsail.config import ConfigError, settings_from_values

from engine import PROJECT_DIR, engine_missing_reason, pulumi

ADMIN = ["192.0.2.0/24", "2001:db8:a::/48"]


def problems_of(values: dict, stack: str = "dev") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings_from_values(values, stack)
    return caught.value.problems


def test_a_nested_key_set_without_path_says_to_use_path_with_the_exact_commands():
    assert problems_of({"firewall.sshPort": 2222, "firewall": {"adminCidrs": ADMIN}}) == [
        'firewall.sshPort: is a top-level key named "firewall.sshPort", not a path into firewall: it was set without '
        "--path. Move it: `scripts/pulumi config rm hardened-lightsail:firewall.sshPort -s dev` then "
        "`scripts/pulumi config set --path hardened-lightsail:firewall.sshPort 2222 -s dev`"]


def test_every_nested_key_set_without_path_is_one_line_and_firewall_is_not_also_called_missing():
    problems = problems_of({"firewall.adminCidrs[0]": "203.0.113.7/32", "lab.slot": 3, "server.count": 2})
    assert [problem.split(":")[0] for problem in problems] == ["firewall.adminCidrs[0]", "lab.slot", "server.count"]
    assert "`scripts/pulumi config set --path 'hardened-lightsail:firewall.adminCidrs[0]' 203.0.113.7/32 -s dev`" \
        in problems[0]
    assert "`scripts/pulumi config set --path hardened-lightsail:server.count 2 -s dev`" in problems[2]


def test_a_list_given_as_json_text_is_set_item_by_item():
    problems = problems_of({"firewall": {"adminCidrs": '["203.0.113.7/32", "2001:db8::/64"]'}}, stack="mylab")
    assert problems == [
        'firewall.adminCidrs: "["203.0.113.7/32", "2001:db8::/64"]" is text, not a list of CIDRs (`config set` '
        "stores a list given on the command line as text): set the items one index at a time: `scripts/pulumi config "
        "rm --path hardened-lightsail:firewall.adminCidrs -s mylab` then `scripts/pulumi config set --path "
        "'hardened-lightsail:firewall.adminCidrs[0]' 203.0.113.7/32 -s mylab` then `scripts/pulumi config set --path "
        "'hardened-lightsail:firewall.adminCidrs[1]' 2001:db8::/64 -s mylab`"]


def test_an_empty_list_as_text_shows_an_example_item_and_for_optional_lists_the_removal():
    [admins] = problems_of({"firewall": {"adminCidrs": "[]"}})
    assert admins.startswith('firewall.adminCidrs: "[]" is text, not a list of CIDRs')
    assert "'hardened-lightsail:firewall.adminCidrs[0]' 203.0.113.7/32 -s dev`" in admins
    assert "for none" not in admins  # SSH must stay open to someone
    [blocklist] = problems_of({"firewall": {"adminCidrs": ADMIN, "blocklist": "[]"}})
    assert blocklist.endswith("; for none, only `scripts/pulumi config rm --path hardened-lightsail:firewall.blocklist"
                              " -s dev`")


def test_fw_check_names_the_stack_of_the_file_in_its_hints(tmp_path):
    stack_file = tmp_path / "Pulumi.mylab.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {
        "hardened-lightsail:target": "lab", "hardened-lightsail:firewall.ping": "false",
        "hardened-lightsail:firewall": {"adminCidrs": ADMIN}}}))
    result = subprocess.run([str(PROJECT_DIR / "scripts" / "fw"), "check", "--config", str(stack_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (
        'error: firewall.ping: is a top-level key named "firewall.ping", not a path into firewall: it was set '
        "without --path. Move it: `scripts/pulumi config rm hardened-lightsail:firewall.ping -s mylab` then "
        "`scripts/pulumi config set --path hardened-lightsail:firewall.ping false -s mylab`\n")


@pytest.mark.engine
@pytest.mark.skipif(engine_missing_reason() is not None, reason=engine_missing_reason() or "")
def test_the_real_cli_mistakes_get_hints_whose_commands_fix_them(tmp_path):
    """`config set` without --path, and a list given as text, through the real CLI: the preview
    names the fix, and running exactly the commands it names makes the preview pass."""
    stack = f"hints{os.getpid()}"
    stack_file = PROJECT_DIR / f"Pulumi.{stack}.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {"hardened-lightsail:target": "lab",
                                                     "hardened-lightsail:firewall": {"adminCidrs": ADMIN}}}))
    try:
        pulumi(["stack", "init", stack], tmp_path)
        for mistake in (["config", "set", "hardened-lightsail:firewall.ping", "false"],
                        ["config", "set", "--path", "hardened-lightsail:firewall.blocklist", '["198.51.100.0/24"]']):
            pulumi([*mistake, "-s", stack], tmp_path)
            refused = pulumi(["preview", "-s", stack, "--non-interactive"], tmp_path, check=False)
            assert refused.returncode != 0
            hint = next(line for line in refused.stdout.splitlines() if "then `scripts/pulumi config set --path" in line)
            assert "Traceback" not in refused.stdout + refused.stderr
            for command in re.findall(r"`scripts/pulumi ([^`]+)`", hint):
                pulumi([word.strip("'") for word in command.split()], tmp_path)
            fixed = pulumi(["preview", "-s", stack, "--non-interactive"], tmp_path, check=False)
            assert fixed.returncode == 0, fixed.stdout[-3000:] + fixed.stderr[-2000:]
        config = yaml.safe_load(stack_file.read_text())["config"]
        assert config["hardened-lightsail:firewall"] == {"adminCidrs": ADMIN, "ping": False,
                                                         "blocklist": ["198.51.100.0/24"]}
    finally:
        pulumi(["stack", "rm", stack, "--yes", "--force"], tmp_path, check=False)
        stack_file.unlink(missing_ok=True)
