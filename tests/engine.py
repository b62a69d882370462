"""Runs the real Pulumi CLI (through scripts/pulumi) for engine tests, or says why it can't.

The engine and lab tests run with the command provider this project builds, or with the binary
HL_COMMAND_PROVIDER names (e.g. upstream pulumi-command v1.2.1 built from its source:
`HL_COMMAND_PROVIDER=/path/to/pulumi-resource-command scripts/test -m engine`); scripts/pulumi
puts it into each test's private plugin cache."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
BUILT_CLI = PROJECT_DIR / ".tools" / "bin" / "pulumi"


def engine_missing_reason() -> str | None:
    """None when the engine can run; else the reason engine tests are skipped."""
    if not (BUILT_CLI.exists() or shutil.which("pulumi")):
        return ("engine tests skipped: no Pulumi CLI (scripts/install-pulumi builds it from the Go module "
                "proxy; see its output for the module that failed)")
    for plugin in ("pulumi-language-python", "pulumi-resource-command"):
        if not (BUILT_CLI.parent / plugin).exists() and not shutil.which(plugin):
            return f"engine tests skipped: {plugin} is not built (run scripts/install-pulumi)"
    return None


def command_provider_under_test() -> str | None:
    """The provider binary HL_COMMAND_PROVIDER names, None for this project's own build."""
    return os.environ.get("HL_COMMAND_PROVIDER") or None


def pulumi(args: list[str], backend: Path, cwd: Path | None = None, timeout: float = 600,
           env: dict | None = None, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`scripts/pulumi ARGS` with a private file backend; output is returned, never printed raw.
    `stdin` feeds e.g. `config set --secret KEY` (a secret never goes on a command line)."""
    environment = {**os.environ, "PULUMI_BACKEND_URL": f"file://{backend}",
                   "PULUMI_HOME": str(backend / "home"), "HL_USE_BUILT_PULUMI": "1", **(env or {})}
    argv = [str(PROJECT_DIR / "scripts" / "pulumi"), *(["--cwd", str(cwd)] if cwd else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=environment, input=stdin)
    if check and result.returncode != 0:
        raise AssertionError(f"pulumi {' '.join(args)} failed ({result.returncode}):\n{diagnostics(result.stdout)}"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def diagnostics(stdout: str) -> str:
    """The engine's Diagnostics section (why it failed), which a long Outputs section after it
    would push out of the tail an error shows."""
    _, found, rest = stdout.partition("\nDiagnostics:\n")
    return f"Diagnostics:\n{re.split(r'^(?:Outputs|Resources):$', rest, maxsplit=1, flags=re.M)[0][:6000]}\n" \
        if found else ""


def remove_lab_stack(stack: str, backend: Path) -> None:
    """A lab stack of this checkout gone however far it got: destroyed, removed, its stack file
    deleted and its lab taken down (by the lab's own name and directory, never by a pattern)."""
    from lab.identity import stack_lab  # (the lab package needs the project on sys.path, as tests have)
    lab = stack_lab(PROJECT_DIR, stack)
    try:
        pulumi(["destroy", "-s", stack, "--yes", "--skip-preview", "--non-interactive"], backend, check=False)
        pulumi(["stack", "rm", stack, "--yes", "--force"], backend, check=False)
    finally:
        (PROJECT_DIR / f"Pulumi.{stack}.yaml").unlink(missing_ok=True)
        subprocess.run([str(PROJECT_DIR / "scripts" / "hl-lab"), "down"], check=False, capture_output=True,
                       env={**os.environ, "HL_LAB_NAME": lab.name, "HL_LAB_DIR": str(lab.state_dir)})
