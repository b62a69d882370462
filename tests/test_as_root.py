"""scripts/lab-up and scripts/test run as root: from a root shell without sudo they just run, from a
user shell they run themselves again through sudo (keeping PATH and the Pulumi settings), and a
user shell without sudo gets one line saying what to do."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
AS_ROOT = PROJECT_DIR / "scripts" / "lib" / "as-root.sh"
NOBODY = 65534


@pytest.fixture
def world_readable_dir():
    """A directory `nobody` can read (pytest's tmp_path is root's only)."""
    directory = Path(tempfile.mkdtemp(prefix="hl-as-root-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def _script(directory: Path) -> Path:
    """A script that uses as_root the way scripts/lab-up does, and tools on a PATH without sudo."""
    shutil.copy(AS_ROOT, directory / "as-root.sh")
    script = directory / "needs-root"
    script.write_text(f'#!/bin/sh\nset -eu\n. "{directory}/as-root.sh"\nas_root "it makes namespaces" "$@"\n'
                      'echo "ran as $(id -u) with: $*"\n')
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    for tool in ("id", "basename", "env"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    for path in (script, directory / "as-root.sh", bin_dir):
        path.chmod(0o755)
    return script


def _run(script: Path, as_nobody: bool) -> subprocess.CompletedProcess:
    prefix = [shutil.which("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if as_nobody else []
    return subprocess.run([*prefix, "/bin/sh", str(script), "a b", "c"], capture_output=True, text=True, timeout=30,
                          env={"PATH": str(script.parent / "bin"), "PULUMI_BACKEND_URL": "file:///somewhere"})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as root and as nobody")
def test_a_root_shell_without_sudo_just_runs_the_script(world_readable_dir):
    result = _run(_script(world_readable_dir), as_nobody=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ran as 0 with: a b c\n", "")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as nobody")
def test_a_user_shell_without_sudo_is_told_to_use_a_root_shell(world_readable_dir):
    result = _run(_script(world_readable_dir), as_nobody=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("needs-root: it makes namespaces, which needs root, and sudo is not installed: run it "
                             "from a root shell\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as nobody")
def test_a_user_shell_runs_the_script_again_through_sudo_keeping_path_and_pulumi_settings(world_readable_dir):
    script = _script(world_readable_dir)
    fake_sudo = script.parent / "bin" / "sudo"
    fake_sudo.write_text('#!/bin/sh\nfor arg in "$@"; do printf "[%s]" "$arg"; done\necho\n')
    fake_sudo.chmod(fake_sudo.stat().st_mode | stat.S_IXOTH | stat.S_IXGRP | stat.S_IXUSR)
    result = _run(script, as_nobody=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "needs-root: it makes namespaces, which needs root: running it again through sudo\n"
    assert result.stdout.startswith("[--preserve-env=PULUMI_BACKEND_URL,PULUMI_HOME,")
    assert result.stdout.rstrip().endswith(f"[env][PATH={script.parent / 'bin'}][{script}][a b][c]")


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_root_scripts_are_shellcheck_clean():
    scripts = [PROJECT_DIR / "scripts" / name for name in ("lab-up", "test", "hl-lab")] + [AS_ROOT]
    result = subprocess.run(["shellcheck", "-x", *map(str, scripts)], capture_output=True, text=True, cwd=PROJECT_DIR)
    assert result.returncode == 0, result.stdout
