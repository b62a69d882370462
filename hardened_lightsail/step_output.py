"""The steps' stdout: timed progress lines, and for the deploy step then EXPOSURE_MARKER and the
measured exposure. Its own small module, so neither the program nor a step that only waits (hl-step
ready) imports the deploy code to write or read it."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

EXPOSURE_MARKER = "--- measured from outside ---"
Progress = Callable[[str], None]


def timed_progress(stream: TextIO = sys.stdout) -> Progress:
    """Progress lines, timed from now (pulumi-command shows a step's output while it runs)."""
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:5.1f} s] {message}", file=stream, flush=True)
    return say


def measured_exposure(step_output: str) -> str:
    """The exposure table out of the deploy step's stdout (what follows the marker)."""
    _, marker, table = step_output.partition(EXPOSURE_MARKER + "\n")
    return table.rstrip("\n") if marker else ""
