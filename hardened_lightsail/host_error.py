"""HostError on its own, so that the CLI can catch it without importing the SSH reading code
(live_host and what it pulls in) on every render and check, which never read a host."""
from __future__ import annotations


class HostError(Exception):
    """The host could not be read; the message says why and what to do."""
