"""The deploy step's stdout as the program reads it: progress lines, then EXPOSURE_MARKER and
the measured exposure. Its own module, so the program needn't import the step code itself."""
from __future__ import annotations

EXPOSURE_MARKER = "--- measured from outside ---"


def measured_exposure(step_output: str) -> str:
    """The exposure table out of the deploy step's stdout (what follows the marker)."""
    _, marker, table = step_output.partition(EXPOSURE_MARKER + "\n")
    return table.rstrip("\n") if marker else ""
