"""The one error type of the lab: a message for the operator, printed by the CLI as one line.

Anything that goes wrong in a way a user can act on (a bad name, a missing tool, a busy slot,
a command that failed inside a namespace) is raised as LabError, never as a bare traceback."""


class LabError(Exception):
    """A lab problem the operator can act on; str() is a one-line message."""
