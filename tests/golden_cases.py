"""The golden cases shared by the render, analysis and netfilter tests: each directory
tests/golden/<case>/ holds the policy (stack.yaml, Pulumi stack-file format) and its rendering."""
from __future__ import annotations

from pathlib import Path

from hardened_lightsail.config import load_stack_file
from hardened_lightsail.policy import StackSettings
from hardened_lightsail.release import Release, render_release

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
STACK_FILE = "stack.yaml"
# Release files kept as golden copies, most telling first. The payload script itself is not
# copied (it has its own tests), but its hash is pinned through manifest.sha256 and RELEASE.
GOLDEN_FILES = ("rules.v4", "rules.v6", "cloud-ports.json", "ipsets", "policy.json", "docker-hook.v4",
                "docker-hook.v6", "manifest.sha256", "RELEASE")


def case_names() -> list[str]:
    return sorted(d.name for d in GOLDEN_DIR.iterdir() if (d / STACK_FILE).is_file())


def load_case(name: str) -> tuple[StackSettings, Release]:
    settings = load_stack_file(GOLDEN_DIR / name / STACK_FILE)
    return settings, render_release(settings.firewall)
