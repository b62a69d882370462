"""payload/hlfw as text: the whole program (hlfw and every part it sources) is POSIX sh that
shellcheck passes and dash parses, so it runs on Debian's /bin/sh. No namespaces, no root."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from hardened_lightsail.release import PAYLOAD_DIR, PAYLOAD_ENTRY, payload_files


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (scripts/setup)")
def test_the_payload_is_shellcheck_clean_as_posix_sh():
    # -x follows the `. hlfw-*.sh` lines, -a reports what it finds in them too.
    result = subprocess.run(["shellcheck", "-s", "sh", "-x", "-a", str(PAYLOAD_DIR / PAYLOAD_ENTRY)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(payload_files()))
def test_every_payload_file_parses_in_dash(name):
    result = subprocess.run(["dash", "-n", str(PAYLOAD_DIR / name)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_help_runs_from_any_directory_and_a_missing_part_is_named(tmp_path):
    for name, content in payload_files().items():
        (tmp_path / name).write_bytes(content)
    shown = subprocess.run(["dash", "hlfw", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Usage (as root") and "  hlfw boot-load " in shown.stdout.splitlines()[-1]
    (tmp_path / "hlfw-confirm.sh").unlink()
    broken = subprocess.run(["dash", str(tmp_path / "hlfw"), "status"], capture_output=True, text=True, timeout=30)
    assert broken.returncode == 2
    assert broken.stderr == (f"hlfw: error: {tmp_path}/hlfw-confirm.sh is missing: this copy of hlfw is "
                             "incomplete; render and copy the release again\n")
