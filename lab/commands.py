"""Running an external tool for the lab: text output captured, no stdin, and every failure
(missing tool, timeout, non-zero exit) turned into a one-line LabError naming the command."""
from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from .errors import LabError


def run_command(argv: Sequence[str], *, input: str | None = None, timeout: float = 30,
                check: bool = True, env: Mapping[str, str] | None = None,
                what: str | None = None) -> subprocess.CompletedProcess:
    """Run `argv`; `what` names it in messages (default: the command line)."""
    what = what or " ".join(argv)
    try:
        result = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout,
                                env=env, stdin=subprocess.DEVNULL if input is None else None)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed (the lab needs it; see lab/README.md)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{what} did not finish within {timeout} s") from None
    if check and result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise LabError(f"{what} failed (exit {result.returncode})" + (f": {lines[-1]}" if lines else ""))
    return result
