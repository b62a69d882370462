"""Ends the program quietly when the Pulumi engine stops it, so a failed `up` shows its useful
error lines and no Python traceback.

When an update fails (a step errors, a policy is refused) or is cancelled, the engine stops the
program while some of its RPCs are still in flight: the language host (ours and upstream's alike)
sends SIGINT when the engine drops the Run call, the engine's plugin shutdown interrupts the
process group, and calls to the closed resource monitor or engine fail with gRPC UNAVAILABLE.
Python would print each of those as a traceback (KeyboardInterrupt, `_InactiveRpcError`,
"Resource monitor has terminated"), around the one line that says what went wrong. Whatever the
engine wanted to say it has said by then, so the program just leaves.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from types import TracebackType

import grpc
import pulumi

# The exit code that tells the language host the user has already been shown the error, so it
# adds no "program exited with non-zero exit code" line (pulumi-language-python-exec uses it too).
EXIT_ALREADY_REPORTED = 32
MONITOR_GONE = "Resource monitor has terminated"


def end_quietly_when_the_engine_stops() -> None:
    """Install the handlers; call once, first thing in the program."""
    signal.signal(signal.SIGINT, _leave)
    previous_hook, previous_thread_hook = sys.excepthook, threading.excepthook

    def hook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        if engine_stopped(error):
            _leave()
        previous_hook(kind, error, trace)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if not engine_stopped(args.exc_value):
            previous_thread_hook(args)

    sys.excepthook, threading.excepthook = hook, thread_hook


def engine_stopped(error: BaseException | None) -> bool:
    """Whether error (or one it was raised from, or while handling) means the engine went away."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, KeyboardInterrupt):
            return True
        if isinstance(error, grpc.RpcError) and callable(getattr(error, "code", None)) and \
                error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            return True
        if isinstance(error, pulumi.RunError) and str(error).startswith(MONITOR_GONE):
            return True
        error = error.__cause__ or error.__context__
    return False


def _leave(*_signal: object) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(EXIT_ALREADY_REPORTED)  # no cleanup to run: the engine has already ended the update
