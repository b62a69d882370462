"""How scripts/pulumi runs the CLI (hardened_lightsail/engine_env.py): the user's own CLI left
alone, the lab passphrase only where it belongs and never silently. The wrapper is run for real,
with a stand-in `pulumi` on PATH that reports the environment it was given."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hardened_lightsail import engine_env

PROJECT_DIR = Path(__file__).resolve().parent.parent
SMOKE_SALT = (PROJECT_DIR / "tests" / "engine_smoke" / "Pulumi.smoke.yaml").read_text().split()[1]  # "smoke-test-only"

FAKE_CLI = """#!/bin/sh
exec "{python}" -c 'import json, os, sys; print(json.dumps({{"args": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}))' "$@"
"""


@pytest.fixture
def users_cli(tmp_path):
    """A `pulumi` of the user's own on PATH (not the one .tools/bin holds)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pulumi"
    fake.write_text(FAKE_CLI.format(python=sys.executable))
    fake.chmod(0o755)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PULUMI_", "HL_")) and key != "SSH_AUTH_SOCK"}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", PULUMI_HOME=str(tmp_path / "users-home"))

    def run(*args, **extra):
        result = subprocess.run([str(PROJECT_DIR / "scripts" / "pulumi"), *args], capture_output=True, text=True,
                                env={**env, **extra}, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout), result.stderr
    return run


def test_the_users_own_cli_keeps_its_home_plugin_downloads_and_backend(users_cli, tmp_path):
    seen, said = users_cli("preview", "-s", "dev")
    env = seen["env"]
    assert env["PULUMI_HOME"] == str(tmp_path / "users-home")
    for untouched in ("PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", "PULUMI_SKIP_UPDATE_CHECK", "PULUMI_BACKEND_URL",
                      "PULUMI_CONFIG_PASSPHRASE"):
        assert untouched not in env, f"{untouched} set for the user's own CLI"
    assert seen["args"] == ["preview", "-s", "dev"] and seen["cwd"] == str(PROJECT_DIR)
    assert not any(part.endswith(".tools/bin") for part in env["PATH"].split(":")), env["PATH"]
    assert "scripts/pulumi: CLI " in said and "(your own)" in said
    assert not (tmp_path / "users-home" / "plugins").exists(), "something was installed into the user's plugin cache"


def test_a_plain_pulumi_finds_the_same_state_as_scripts_pulumi():
    """The backend default is the project's, in Pulumi.yaml (a plain `pulumi` reads it too), and its
    directory exists in a fresh clone."""
    import yaml
    project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())
    assert project["backend"]["url"] == "file://.pulumi-state"
    tracked = subprocess.run(["git", "ls-files", ".pulumi-state"], cwd=PROJECT_DIR, capture_output=True, text=True)
    assert ".pulumi-state/README.md" in tracked.stdout.split()


def test_the_lab_passphrase_is_used_for_a_named_lab_stack_and_said_on_stderr(users_cli):
    seen, said = users_cli("up", "-s", "lab", "--yes")
    assert seen["env"]["PULUMI_CONFIG_PASSPHRASE"] == engine_env.LAB_PASSPHRASE
    assert "stack lab has target: lab, so its secrets use the lab passphrase" in said
    seen, said = users_cli("stack", "select", "--create", "lab")
    assert seen["env"]["PULUMI_CONFIG_PASSPHRASE"] == engine_env.LAB_PASSPHRASE and "lab passphrase" in said


@pytest.mark.parametrize("args", [
    ["stack", "init", "prod", "--copy-config-from", "lab"],  # prod is named, not lab
    ["preview"],  # no stack named: not even when lab is the selected one
    ["preview", "-s", "dev"],  # dev's target is lightsail
    ["config", "get", "hardened-lightsail:target", "--cwd", "lab"],  # a flag's value is not a stack
])
def test_the_lab_passphrase_is_never_given_to_another_stack(users_cli, args):
    seen, said = users_cli(*args)
    assert "PULUMI_CONFIG_PASSPHRASE" not in seen["env"]
    assert "lab passphrase" not in said and "passphrase of your own" not in said


def test_a_passphrase_of_your_own_always_wins(users_cli):
    seen, said = users_cli("up", "-s", "lab", PULUMI_CONFIG_PASSPHRASE="mine")
    assert seen["env"]["PULUMI_CONFIG_PASSPHRASE"] == "mine" and "lab passphrase" not in said
    seen, _ = users_cli("up", "-s", "lab", PULUMI_CONFIG_PASSPHRASE_FILE="/etc/hostname")
    assert "PULUMI_CONFIG_PASSPHRASE" not in seen["env"]


@pytest.fixture
def stacks(tmp_path, monkeypatch):
    """Stack files in a project directory of the test's own."""
    monkeypatch.setattr(engine_env, "PROJECT_DIR", tmp_path)
    monkeypatch.setattr(engine_env, "LAB_SALTS", tmp_path / "lab-salts")

    def write(name, target, salt=None):
        text = f"config:\n  hardened-lightsail:target: {target}\n" + (f"encryptionsalt: {salt}\n" if salt else "")
        (tmp_path / f"Pulumi.{name}.yaml").write_text(text)
    return write


def test_a_lab_stack_made_with_your_own_passphrase_keeps_it(stacks):
    """`stack init mylab` (your passphrase), then `target: lab` set: the lab passphrase would be
    'incorrect passphrase' for it, so it is not used, and stderr says what to do."""
    stacks("mylab", "lab", salt=SMOKE_SALT)
    passphrase, said = engine_env.lab_passphrase(["preview", "-s", "mylab"], {})
    assert passphrase is None
    assert "made with a passphrase of your own" in said and "PULUMI_CONFIG_PASSPHRASE" in said


def test_a_new_lab_stack_and_one_made_with_the_lab_passphrase_get_it(stacks):
    stacks("fresh", "lab")
    assert engine_env.lab_passphrase(["stack", "init", "fresh"], {})[0] == engine_env.LAB_PASSPHRASE
    lab_salt = re.search(r"^encryptionsalt:\s*(\S+)", (PROJECT_DIR / "Pulumi.lab.yaml").read_text(), re.M).group(1)
    stacks("labcopy", "lab", salt=lab_salt)
    assert engine_env.lab_passphrase(["up", "--stack=labcopy"], {})[0] == engine_env.LAB_PASSPHRASE
    stacks("web", "lightsail")
    assert engine_env.lab_passphrase(["up", "-s", "web"], {}) == (None, None)


def test_the_passphrase_check_reads_pulumis_encryption_salt():
    assert engine_env.made_with_passphrase(SMOKE_SALT, "smoke-test-only")
    assert not engine_env.made_with_passphrase(SMOKE_SALT, engine_env.LAB_PASSPHRASE)
    assert not engine_env.made_with_passphrase("v1:garbage", "x")


@pytest.mark.parametrize("args, stack", [
    (["up", "-s", "lab"], "lab"), (["up", "--stack=lab"], "lab"), (["--cwd", "x", "up", "--stack", "a"], "a"),
    (["stack", "init", "mylab"], "mylab"), (["stack", "init", "--secrets-provider", "passphrase", "mylab"], "mylab"),
    (["stack", "select", "--create", "mylab"], "mylab"), (["stack", "init", "prod", "--copy-config-from", "lab"], "prod"),
    (["stack", "rm", "lab"], None), (["preview"], None), (["config", "set", "--path", "x", "lab"], None),
])
def test_the_stack_a_command_names(args, stack):
    assert engine_env.named_stack(args) == stack


def test_a_stale_agent_socket_is_left_out_with_a_note(users_cli, tmp_path):
    seen, said = users_cli("up", "-s", "dev", SSH_AUTH_SOCK=str(tmp_path / "gone.sock"))
    assert "SSH_AUTH_SOCK" not in seen["env"]
    assert "is not a live agent socket" in said


@pytest.mark.skipif(not (engine_env.BUILT_BIN / "pulumi").exists(), reason="no built CLI (scripts/install-pulumi)")
def test_the_built_cli_gets_its_own_home_our_provider_and_no_tools_on_path(tmp_path):
    """The offline build: its own plugin cache with our provider in the command 1.2.1 slot, no
    downloads, and .tools/bin off PATH (the engine would load plugins from there and warn)."""
    environ = {"PATH": "/usr/bin:/bin", "HL_USE_BUILT_PULUMI": "1", "PULUMI_HOME": str(tmp_path / "home")}
    eng = engine_env.engine(environ)
    assert eng.built and eng.cli == engine_env.BUILT_BIN / "pulumi"
    assert eng.env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
    assert str(engine_env.BUILT_BIN) not in eng.env["PATH"].split(":")
    installed = engine_env.plugin_dir(tmp_path / "home") / "pulumi-resource-command"
    assert installed.exists() and engine_env.is_our_build(installed)
    described = engine_env.describe(eng)
    assert described[2] == (f"command provider {installed} (hardened-lightsail build, put there from "
                            f"{engine_env.BUILT_BIN / 'pulumi-resource-command'})")
