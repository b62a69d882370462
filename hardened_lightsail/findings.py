"""What every check reports: a Finding is one line for the operator, at a level that says
whether it stops the command (error: exit 2) or only warns."""
from __future__ import annotations

from dataclasses import dataclass

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    level: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == ERROR]


def errors_first(findings: list[Finding]) -> list[Finding]:
    """Errors before warnings, each group in the order it was found (a stable sort)."""
    return sorted(findings, key=lambda f: f.level != ERROR)
