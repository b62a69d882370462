"""scripts/setup's long steps (apt, pip, Go builds) say what they do and keep saying it while they
run (scripts/lib/progress.sh), instead of minutes of silence on a cold machine."""
import re
import subprocess
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROGRESS = PROJECT_DIR / "scripts" / "lib" / "progress.sh"
SETUP_SCRIPTS = ["setup", "install-pulumi", "build-language-host", "build-command-provider"]


def step(command: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(["bash", "-c", f'. "{PROGRESS}"; {command}'], capture_output=True, text=True,
                            timeout=30, env={"PATH": "/usr/bin:/bin", "HL_PROGRESS_SECONDS": "1"})
    return result, time.monotonic() - started


def test_a_long_step_reports_while_it_runs_and_when_it_ends():
    result, _ = step('step "building the thing" sleep 3.5')
    lines = result.stdout.splitlines()
    assert result.returncode == 0
    assert lines[0] == "building the thing..."
    ticks = [line for line in lines if re.fullmatch(r"  \.\.\. building the thing: \d+ s so far", line)]
    assert len(ticks) >= 2, lines
    assert re.fullmatch(r"building the thing: done in [34] s", lines[-1]), lines


def test_a_failed_step_says_so_and_keeps_its_exit_code():
    result, elapsed = step('step "compiling" sh -c "exit 7"; echo "code=$?"')
    assert "compiling: failed after 0 s (exit 7)" in result.stderr
    assert result.stdout.splitlines()[-1] == "code=7"
    assert elapsed < 3, "the ticker must not hold the step up"


def test_quietly_drops_output_but_not_errors():
    result, _ = step('quietly sh -c "echo noise; echo problem >&2"')
    assert result.stdout == "" and result.stderr.strip() == "problem"


def test_every_long_command_of_setup_runs_as_a_step():
    """go build/install/mod download, pip install, apt-get update/install: each inside `step`."""
    long_command = re.compile(r"^\s*(?:\(?cd [^&]*&&\s*)?(go (build|install|mod download)|\S*python3? -m (pip|venv)|apt-get (update|install))\b")
    for name in SETUP_SCRIPTS:
        text = (PROJECT_DIR / "scripts" / name).read_text()
        bare = [line for line in re.sub(r"\\\n", " ", text).splitlines() if long_command.search(line)
                and not line.lstrip().startswith("#")]
        assert not bare, f"scripts/{name} runs a long command without `step` (silent while it runs): {bare}"
