"""scripts/lab-up as a user runs it, with the engine and the lab replaced by stand-ins that record
their arguments: its `up` reads the hosts back first, and --help just prints the usage."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
RECORDER = '#!/bin/sh\necho "$(basename "$0") $*" >> "$(dirname "$0")/../calls"\n'


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout whose scripts/setup, scripts/pulumi and scripts/fw only record their arguments
    (`stack export` answers an empty stack); the project's own Python code and virtualenv."""
    (tmp_path / "scripts" / "lib").mkdir(parents=True)
    for path in ("scripts/lab-up", "scripts/lib/as-root.sh", "Pulumi.lab.yaml"):
        shutil.copy(PROJECT_DIR / path, tmp_path / path)
    for package in (".venv", "hardened_lightsail", "lab"):
        (tmp_path / package).symlink_to(PROJECT_DIR / package)
    for tool in ("setup", "pulumi", "fw"):
        (tmp_path / "scripts" / tool).write_text(RECORDER)
        (tmp_path / "scripts" / tool).chmod(0o755)
    return tmp_path


def _lab_up(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(checkout / "scripts" / "lab-up"), *args], capture_output=True,
                          text=True, timeout=60, cwd=checkout)


def _calls(checkout: Path) -> list[str]:
    calls = checkout / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.skipif(os.geteuid() != 0, reason="lab-up runs itself again through sudo outside a root shell")
def test_lab_up_reads_the_hosts_back_before_it_prints_the_verified_exposure(checkout):
    """A hand edit on a lab host since the last `up` (an ACCEPT inserted in HL-INPUT, another tool's
    DROP in front of the jump) must be repaired or fail the `up`; a plain `up` trusts the recorded
    state and lab-up would print the old "verified" for a host that no longer matches it."""
    result = _lab_up(checkout, "mylab")
    assert result.returncode == 0, result.stderr
    ups = [call for call in _calls(checkout) if call.startswith("pulumi up ")]
    assert ups == ["pulumi up -s mylab --yes --skip-preview --refresh"]


def test_help_prints_the_usage_and_touches_nothing(checkout):
    for flag in ("--help", "-h"):
        result = _lab_up(checkout, flag)
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout.startswith("usage: scripts/lab-up [STACK]")
    assert _calls(checkout) == [] and not (checkout / "Pulumi.--help.yaml").exists()
