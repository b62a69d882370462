"""The Go unit tests of our own engine plugins (language host, command provider) run with the
rest of the suite, so a change there can't land untested."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools" / "go"


@pytest.mark.skipif(shutil.which("go") is None, reason="Go is not installed: the engine plugins can't be tested")
@pytest.mark.parametrize("module", ["pulumi-language-python", "pulumi-resource-command"])
def test_go_unit_tests_pass(module):
    env = {**os.environ, "GOFLAGS": "-mod=mod -buildvcs=false", "GOTOOLCHAIN": "local"}
    result = subprocess.run(["go", "test", "-count=1", "./..."], cwd=TOOLS / module, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "ok " in result.stdout, result.stdout  # some package really ran tests
