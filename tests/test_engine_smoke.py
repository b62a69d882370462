"""The real engine (CLI + Python language host + command provider) on a tiny stack."""
import json

import pytest

from engine import PROJECT_DIR, engine_missing_reason, pulumi

SMOKE = PROJECT_DIR / "tests" / "engine_smoke"
pytestmark = [pytest.mark.engine, pytest.mark.skipif(engine_missing_reason() is not None,
                                                     reason=engine_missing_reason() or "")]


def test_preview_up_and_destroy_run_a_command_through_the_real_engine(tmp_path):
    env = {"PULUMI_CONFIG_PASSPHRASE": "smoke-test-only"}
    pulumi(["stack", "init", "smoke"], tmp_path, cwd=SMOKE, env=env)
    preview = pulumi(["preview", "-s", "smoke", "--non-interactive"], tmp_path, cwd=SMOKE, env=env)
    assert "+ 2 to create" in preview.stdout or "2 to create" in preview.stdout, preview.stdout
    pulumi(["up", "-s", "smoke", "--yes", "--skip-preview", "--non-interactive"], tmp_path, cwd=SMOKE, env=env)
    outputs = json.loads(pulumi(["stack", "output", "-s", "smoke", "--json"], tmp_path, cwd=SMOKE, env=env).stdout)
    assert outputs == {"greeting": "engine-ok"}
    again = pulumi(["up", "-s", "smoke", "--yes", "--skip-preview", "--non-interactive"], tmp_path, cwd=SMOKE, env=env)
    assert "2 unchanged" in again.stdout, again.stdout
    pulumi(["destroy", "-s", "smoke", "--yes", "--skip-preview", "--non-interactive"], tmp_path, cwd=SMOKE, env=env)
    state = json.loads(pulumi(["stack", "export", "-s", "smoke"], tmp_path, cwd=SMOKE, env=env).stdout)
    assert not state["deployment"].get("resources"), "destroy left resources in the state"
