"""pyproject.toml: its pins agree with requirements.txt, and a built wheel works outside the checkout
(the payload every release ships comes from the installed package)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from hardened_lightsail.release import payload_files

PROJECT_DIR = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())
# requirements.txt's sections ("# Runtime ---", "# Tests ---", ...) -> pyproject's lists
SECTIONS = {"Runtime": ("dependencies",), "Tests": ("optional-dependencies", "test"),
            "Checks": ("optional-dependencies", "lint")}
# The virtualenv's own pip: pinned for scripts/setup and `pulumi install`, no dependency of the package
REQUIREMENTS_ONLY = {"Toolchain"}


def _requirements_by_section() -> dict[str, set[str]]:
    sections: dict[str, set[str]] = {}
    current = None
    for line in (PROJECT_DIR / "requirements.txt").read_text().splitlines():
        heading = re.match(r"# (\w+)\b.*-{5,}$", line)
        if heading:
            current = heading.group(1)
            sections[current] = set()
        elif line.strip() and not line.startswith("#"):
            assert current, f"requirements.txt: {line!r} comes before any section heading"
            sections[current].add(line.split("#")[0].strip())
    return sections


def _pyproject_list(*keys: str) -> set[str]:
    value = PYPROJECT["project"]
    for key in keys:
        value = value[key]
    return set(value)


def test_pyproject_pins_the_same_packages_as_requirements_txt():
    sections = _requirements_by_section()
    assert set(sections) == set(SECTIONS) | REQUIREMENTS_ONLY, f"requirements.txt sections: {sorted(sections)}"
    for section, keys in SECTIONS.items():
        assert _pyproject_list(*keys) == sections[section], f"pyproject {'.'.join(keys)} != requirements.txt {section}"
    assert all("==" in pin for pins in sections.values() for pin in pins)


def test_built_wheel_renders_a_release_outside_the_checkout(tmp_path):
    # As a user builds it: pip's isolated build with the setuptools pyproject.toml pins.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--disable-pip-version-check", "-w", str(tmp_path / "wheel"), str(PROJECT_DIR)],
                   check=True, capture_output=True, timeout=300, cwd=tmp_path)
    [wheel] = (tmp_path / "wheel").glob("hardened_lightsail-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                    "--target", str(tmp_path / "site"), str(wheel)], check=True, capture_output=True, timeout=300)
    program = (
        "import json, hardened_lightsail as hl\n"
        "policy = hl.policy_from_values({'adminCidrs': ['198.51.100.7/32'],\n"
        "    'services': [{'name': 'https', 'protocol': 'tcp', 'ports': '443'}]})\n"
        "release = hl.render_release(policy)\n"
        "print(json.dumps({'module': hl.__file__, 'payload': str(hl.release.PAYLOAD_DIR),\n"
        "                  'files': sorted(release.files), 'hlfw': release.files['hlfw'].decode()}))\n")
    # cwd outside the checkout and only the installed copy on the path: the checkout can't be imported
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert rendered["module"].startswith(str(tmp_path / "site"))
    assert rendered["payload"] == str(tmp_path / "site" / "hardened_lightsail" / "payload")
    assert set(payload_files()) <= set(rendered["files"])
    assert {"rules.v4", "rules.v6", "manifest.sha256", "RELEASE"} <= set(rendered["files"])
    assert rendered["hlfw"] == payload_files()["hlfw"].decode()
