"""The real engine (CLI + Python language host + command provider) on a tiny stack, and what
scripts/pulumi tells about it. With HL_COMMAND_PROVIDER=/path/to/pulumi-resource-command (e.g.
upstream's own build) these run against that provider; see tests/engine.py."""
import json
import os
import shutil

import pytest
import yaml

from engine import PROJECT_DIR, command_provider_under_test, engine_missing_reason, pulumi

SMOKE = PROJECT_DIR / "tests" / "engine_smoke"
PASSPHRASE = {"PULUMI_CONFIG_PASSPHRASE": "smoke-test-only"}  # Pulumi.smoke.yaml's salt was made with it
pytestmark = [pytest.mark.engine, pytest.mark.skipif(engine_missing_reason() is not None,
                                                     reason=engine_missing_reason() or "")]


def smoke(args, backend, check=True, **env):
    return pulumi([*args, "-s", "smoke", "--non-interactive"], backend, cwd=backend / "project",
                  env={**PASSPHRASE, "HL_PROJECT_DIR": str(PROJECT_DIR), **env}, check=check)


def up(backend, *config, check=True, **env):
    flags = [flag for setting in config for flag in ("--config", setting)]
    return smoke(["up", "--yes", "--skip-preview", *flags], backend, check=check, **env)


@pytest.fixture
def smoke_stack(tmp_path):
    """The smoke project copied next to a private backend: `--config` writes to the copy."""
    project = tmp_path / "project"
    project.mkdir()
    settings = yaml.safe_load((SMOKE / "Pulumi.yaml").read_text())
    settings["runtime"]["options"]["virtualenv"] = str(PROJECT_DIR / ".venv")
    (project / "Pulumi.yaml").write_text(yaml.safe_dump(settings))
    for name in ("__main__.py", "Pulumi.smoke.yaml"):
        shutil.copy(SMOKE / name, project / name)
    # Deployer-side steps run from the program's directory, as `scripts/hl-step` in the project.
    (project / "scripts").mkdir()
    (project / "scripts" / "hl-step").write_text('#!/bin/sh\nexec "$HL_PROJECT_DIR/scripts/hl-step" "$@"\n')
    (project / "scripts" / "hl-step").chmod(0o755)
    pulumi(["stack", "init", "smoke"], tmp_path, cwd=project, env=PASSPHRASE)
    yield tmp_path
    smoke(["destroy", "--yes", "--skip-preview"], tmp_path, check=False)


def test_preview_up_and_destroy_run_a_command_through_the_real_engine(smoke_stack):
    backend = smoke_stack
    preview = smoke(["preview"], backend)
    assert "+ 2 to create" in preview.stdout or "2 to create" in preview.stdout, preview.stdout
    up(backend)
    outputs = json.loads(smoke(["stack", "output", "--json"], backend).stdout)
    assert outputs == {"greeting": "engine-ok"}
    again = up(backend)
    assert "2 unchanged" in again.stdout, again.stdout
    smoke(["destroy", "--yes", "--skip-preview"], backend)
    state = json.loads(smoke(["stack", "export"], backend).stdout)
    assert not state["deployment"].get("resources"), "destroy left resources in the state"


def test_a_failed_up_ends_with_the_error_and_no_python_traceback(smoke_stack):
    failed = up(smoke_stack, "fail=true", check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert 'exit status 3: running "echo the step says why it failed; exit 3"' in output, output
    assert "the step says why it failed" in output
    for noise in ("Traceback", "KeyboardInterrupt", "_InactiveRpcError", "StatusCode.UNAVAILABLE",
                  "program exited with non-zero exit code"):
        assert noise not in output, f"{noise!r} in the output of a failed up:\n{output}"
    # The control: without the program's handler the same failure does print tracebacks, so the
    # check above can fail (the language host interrupts the program when the engine gives up).
    noisy = up(smoke_stack, "fail=true", "quietShutdown=false", "round=2", check=False)
    assert noisy.returncode != 0 and "Traceback" in noisy.stdout + noisy.stderr, noisy.stdout[-3000:]


def test_scripts_pulumi_says_which_cli_language_host_and_provider_run(smoke_stack):
    preview = smoke(["preview"], smoke_stack)
    line = next((line for line in preview.stderr.splitlines() if line.startswith("scripts/pulumi: CLI ")), "")
    assert str(PROJECT_DIR / ".tools" / "bin" / "pulumi") in line and "built by scripts/install-pulumi" in line, line
    assert "language host " + str(PROJECT_DIR / ".tools" / "bin" / "pulumi-language-python") in line, line
    provider = command_provider_under_test()
    expected = ("not ours: upstream or another build" if provider else "hardened-lightsail build")
    assert f"command provider {smoke_stack / 'home' / 'plugins' / 'resource-command-v1.2.1'}" in line, line
    assert expected in line and (str(provider or PROJECT_DIR / ".tools/bin/pulumi-resource-command") in line), line
    assert "warning: using pulumi-resource-command from $PATH" not in preview.stdout + preview.stderr


@pytest.mark.skipif(command_provider_under_test() is None,
                    reason="needs HL_COMMAND_PROVIDER: another build of pulumi-resource-command to compare with ours")
def test_a_stack_made_with_one_provider_shows_no_change_under_the_other(smoke_stack):
    ours, theirs = {"HL_COMMAND_PROVIDER": ""}, {"HL_COMMAND_PROVIDER": os.environ["HL_COMMAND_PROVIDER"]}
    for deployer, previewer in ((ours, theirs), (theirs, ours)):
        up(smoke_stack, "round=" + ("a" if deployer is ours else "b"), **deployer)
        preview = smoke(["preview", "--expect-no-changes", "--config", "round=" + ("a" if deployer is ours else "b")],
                        smoke_stack, check=False, **previewer)
        assert preview.returncode == 0 and "2 unchanged" in preview.stdout, preview.stdout + preview.stderr


def test_a_cloud_firewall_more_open_than_the_policy_fails_up_once_the_host_steps_are_done(smoke_stack):
    up(smoke_stack, "cloudStored=as-sent")
    failed = up(smoke_stack, "cloudStored=widened", check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert 'exit status 1: running "scripts/hl-step cloud-readback"' in output, output
    assert "web-0: the cloud firewall is MORE open than the policy (1 port info(s) as AWS stores them)" in output
    assert "tcp 22: ipv6Cidrs +::/0 (AWS's default" in output
    for noise in ("Traceback", "KeyboardInterrupt", "program exited with non-zero exit code"):
        assert noise not in output, f"{noise!r} in the output of a failed up:\n{output}"
    # The stand-in host step ran to its end first (it never waits for the check), and the failed
    # check was not recorded: the state still holds the verdict of the last `up` that passed.
    resources = {r["urn"].rsplit("::", 1)[1]: r  # (a replaced one waiting for deletion is left out)
                 for r in json.loads(smoke(["stack", "export"], smoke_stack).stdout)["deployment"]["resources"]
                 if not r.get("delete")}
    assert resources["web-0-firewall-deploy"]["outputs"]["stdout"] == "deployed"
    assert resources["web-0-firewall-deploy"]["inputs"]["triggers"] == ["widened"]
    recorded = json.loads(resources["cloud-firewall-readback"]["inputs"]["environment"]["HL_CLOUD_READBACK"])
    assert recorded == [{"server": "web-0", "stored_entries": 1, "more_open": [], "less_open": []}]
    # ... so the next `up`, with nothing changed, checks again and fails again.
    again = up(smoke_stack, "cloudStored=widened", check=False)
    assert again.returncode != 0 and "tcp 22: ipv6Cidrs +::/0" in again.stdout + again.stderr
