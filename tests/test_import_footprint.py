"""What the processes of every `up` import: the dynamic provider serving HostKey/HostState and
scripts/pulumi load only the modules they use (their start is on the path of every `up`, also
one with nothing to change), and the packages' public names still resolve."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
# The policy core, pulumi-command and the deployer's step tools: none is needed to diff a HostKey
# or a HostState, nor to choose the CLI and its environment.
HEAVY = ("pulumi_command", "hardened_lightsail.stack_config", "hardened_lightsail.policy",
         "hardened_lightsail.release", "hardened_lightsail.commit_confirm", "hardened_lightsail.steps",
         "components.host_firewall")


def loaded_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True,
                          check=True, timeout=60)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("statement", [
    # What the dynamic provider's unpickling of HostKeyProvider / HostStateProvider imports.
    "import components.host_key, components.host_state",
    # scripts/pulumi: `python -m hardened_lightsail.engine_env` imports the package first.
    "import hardened_lightsail.engine_env",
])
def test_per_up_helpers_load_without_the_policy_core(statement):
    loaded = loaded_after(statement)
    assert statement.split()[1].split(",")[0] in loaded  # the check ran on a real import
    assert sorted(loaded & set(HEAVY)) == []


# The deployer's steps start once per server and release (a fleet of 10: 20 Python start-ups per
# change, on the cores the lab's servers run on too): each loads only what its own job needs.
POLICY_CORE = ("hardened_lightsail.policy", "hardened_lightsail.config", "hardened_lightsail.release",
               "hardened_lightsail.commit_confirm", "hardened_lightsail.evaluate", "hardened_lightsail.port_scan")


@pytest.mark.parametrize("statement, unwanted", [
    # `hl-step ready` waits for SSH, cloud-init and the package lock: no policy, no scanner.
    ("from hardened_lightsail.steps import main; from hardened_lightsail.server_readiness import ready_step",
     POLICY_CORE),
    # `hl-step cloud-readback` judges a verdict the program computed.
    ("from hardened_lightsail.steps import main, cloud_readback_step", POLICY_CORE),
    # `hl-step deploy` needs the policy core, but not YAML (it reads policy.json) nor the lab package.
    ("from hardened_lightsail.deploy_step import deploy_step", ("yaml", "lab", "foreign_rules", "pulumi")),
])
def test_each_step_loads_only_what_it_uses(statement, unwanted):
    loaded = loaded_after(statement)
    assert "hardened_lightsail.steps" in loaded or "hardened_lightsail.deploy_step" in loaded  # the check ran
    assert sorted(name for name in loaded if name in unwanted or name.endswith(tuple(f".{u}" for u in unwanted))) == []


def test_the_packages_public_names_still_resolve():
    import components
    import hardened_lightsail
    from components.host_firewall import HostFirewall
    from hardened_lightsail import release
    from hardened_lightsail.release import render_release

    assert hardened_lightsail.render_release is render_release and hardened_lightsail.release is release
    assert components.HostFirewall is HostFirewall
    for package in (hardened_lightsail, components):
        assert all(getattr(package, name) is not None for name in package.__all__)
        with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
            package.nothing_here  # noqa: B018 (the attribute access is the test)


# How the SDK's plugin starts the dynamic provider (its script, which scripts/setup puts in .tools/bin
# from the SDK's Go module): `python -u -m pulumi.dynamic`, so `__main__` is that module.
AS_THE_DYNAMIC_PROVIDER = ("import importlib.machinery, sys\n"
                           "sys.modules['__main__'].__spec__ = importlib.machinery.ModuleSpec('pulumi.dynamic.__main__', None)\n")


def frozen_after(statement: str) -> int:
    code = f"import gc\n{statement}\nprint(gc.get_freeze_count())"
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True,
                          check=True, timeout=60)
    return int(done.stdout)


def test_the_sdk_starts_the_dynamic_provider_as_module_pulumi_dynamic():
    script = (PROJECT_DIR / ".tools" / "bin" / "pulumi-resource-pulumi-python").read_text()
    assert "-m pulumi.dynamic" in script


@pytest.mark.parametrize("module", ["components.host_key", "components.host_state"])
def test_the_dynamic_provider_process_freezes_what_it_loaded_and_no_other_process_does(module):
    # Frozen objects are skipped by the collector at the provider's exit, which the engine waits for.
    assert frozen_after(AS_THE_DYNAMIC_PROVIDER + f"import {module}") > 10_000
    assert frozen_after(f"import {module}") == 0
