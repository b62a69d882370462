"""The readiness step (`hl-step ready`): before anything is pushed to a server, wait until it
answers SSH on its port with its pinned host key, cloud-init has finished and the package manager
is idle, with a progress line as it goes and one clear message when it gives up.

A booting server goes through: nothing answers; sshd on 22 with the image's own host keys; the
first-boot step (user data) installs the pinned key and moves sshd to firewall.sshPort; cloud-init
and unattended-upgrades finish and free the package lock. Waiting here, with our own deadline,
means no remote step depends on how long the command provider keeps dialing (upstream gives up
after about 11 s of "connection refused").

A host key that is not the pinned one is never logged in to (only `ssh-keyscan` talks to it). On
the first contact with a new server it may be the image's key, served until the first-boot step
runs, so the step waits for the pinned one for a bounded grace period, saying so; at any later
contact, and after the grace, it fails at once with the mismatch."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .documentation_routes import UnroutedDocumentationAddress
from .reachability import OPEN, tcp_probe
from .ssh_session import EXIT_SSH_FAILED, HostKeyMismatch, SshEndpoint, keyscan, mismatch_message, run_remote
from .step_output import Progress, timed_progress

IMAGE_SSH_PORT = 22  # where a fresh image's sshd listens until the first-boot step moves it
POLL_SECONDS = 2.0
PROGRESS_EVERY_SECONDS = 10.0

# One poll of the first-boot work, as the login user (sudo -n for what needs root). Each poll is
# a new SSH connection, so the wait never hangs on one session and reports as it goes.
BOOT_STATUS = r"""as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
if command -v cloud-init >/dev/null 2>&1; then
  status=$(cloud-init status 2>/dev/null | sed -n 's/^status: *//p' | head -n 1)
  echo "cloud-init=${status:-unknown}"
else
  echo "cloud-init=absent"
fi
if command -v fuser >/dev/null 2>&1; then
  set --
  for lock in /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/run/dnf.pid; do
    [ -e "$lock" ] && set -- "$@" "$lock"
  done
  # One fuser for every lock: each run reads the open files of every process on the machine.
  # It names each file someone holds open on stderr ("PATH:"), the holders' PIDs on stdout.
  held=
  [ $# -eq 0 ] || held=$(as_root fuser "$@" 2>&1 >/dev/null | sed -n 's|^\(/[^:]*\):.*| \1|p' | tr -d '\n')
  echo "package-lock=${held:- free}"
else
  echo "package-lock= unknown (no fuser)"
fi
"""
CLOUD_INIT_FINISHED = ("done", "disabled", "absent", "degraded done")


class NotReady(Exception):
    """The server did not get ready in time; the message says where it stood."""


@dataclass(frozen=True)
class BootStatus:
    cloud_init: str  # running, done, error, absent, ...
    package_lock: str  # "free", "unknown (no fuser)" or the lock files held

    @classmethod
    def parse(cls, text: str) -> BootStatus:
        values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        return cls(values.get("cloud-init", "unknown").strip(), values.get("package-lock", "unknown").strip())

    @property
    def finished(self) -> bool:
        return self.cloud_init in CLOUD_INIT_FINISHED + ("error",) and self.package_lock in ("free", "unknown (no fuser)")

    def __str__(self) -> str:
        lock = "free" if self.package_lock == "free" else f"held ({self.package_lock})"
        return f"cloud-init {self.cloud_init}, package lock {lock}"


class Clock:
    """Progress lines at most every PROGRESS_EVERY_SECONDS unless the news changed."""

    def __init__(self, say: Progress, timeout: float):
        self.say, self.started, self.deadline = say, time.monotonic(), time.monotonic() + timeout
        self._last: tuple[str, float] = ("", 0.0)

    def report(self, news: str) -> None:
        text, at = self._last
        if news != text or time.monotonic() - at >= PROGRESS_EVERY_SECONDS:
            self.say(f"ready: {news}")
            self._last = (news, time.monotonic())

    @property
    def left(self) -> float:
        return self.deadline - time.monotonic()


def wait_for_sshd(endpoint: SshEndpoint, clock: Clock) -> None:
    """Until a TCP connection to the SSH port is accepted."""
    while True:
        state, detail = tcp_probe(endpoint.host, endpoint.port, timeout=min(3.0, max(clock.left, 0.5)))
        if state == OPEN:
            return
        news = f"{endpoint.where} {detail}: sshd is not there yet"
        if endpoint.port != IMAGE_SSH_PORT:
            _boot_state, boot_detail = tcp_probe(endpoint.host, IMAGE_SSH_PORT, timeout=1.0)
            news += (f" (port {IMAGE_SSH_PORT}: {boot_detail}; a fresh server's sshd is on {IMAGE_SSH_PORT} "
                     f"until its first-boot step moves it to {endpoint.port})")
        clock.report(news)
        if clock.left <= 0:
            raise NotReady(f"nothing accepts SSH connections at {endpoint.where} ({detail})")
        time.sleep(POLL_SECONDS)


def wait_for_pinned_key(endpoint: SshEndpoint, clock: Clock, grace_until: float | None) -> None:
    """Until the server offers the pinned key. Another key: a HostKeyMismatch, except on a first
    contact before `grace_until` (monotonic time), where the image's key is expected for a while."""
    pinned = endpoint.pinned
    while True:
        timeout = max(1, min(5, int(clock.left)))
        # The pinned key's type first (one connection); every type only to say what is there instead.
        offered = keyscan(endpoint.host, endpoint.port, timeout, pinned.key_type) or \
            keyscan(endpoint.host, endpoint.port, timeout)
        if pinned in offered:
            clock.say(f"ready: {endpoint.where} offers the pinned host key {pinned}")
            return
        if offered and (grace_until is None or time.monotonic() >= grace_until):
            raise HostKeyMismatch(mismatch_message(endpoint, offered))
        if offered and grace_until is not None:  # (None: raised just above)
            clock.report(f"{endpoint.where} offers {', '.join(map(str, offered))}, not the pinned {pinned}: a new "
                         "server serves its image's key until its first-boot step installs the pinned one; waiting "
                         f"(nothing is sent to it) up to {grace_until - time.monotonic():.0f} s more")
        else:
            clock.report(f"{endpoint.where} accepts connections but completes no key exchange yet")
        if clock.left <= 0:
            raise NotReady(f"{endpoint.where} offered no host key" if not offered else
                           mismatch_message(endpoint, offered))
        time.sleep(POLL_SECONDS)


def wait_for_first_boot(endpoint: SshEndpoint, clock: Clock) -> BootStatus:
    """Until cloud-init is finished and no package manager holds its lock (one login per poll)."""
    while True:
        result = run_remote(endpoint, BOOT_STATUS, connect_timeout=max(1, min(10, int(clock.left))), timeout=60)
        if result.returncode == 0:
            status = BootStatus.parse(result.stdout)
            if status.finished:
                return status
            clock.report(f"{status}: waiting")
            news = str(status)
        else:
            why = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
            news = f"can't log in yet ({why[0]})" if result.returncode == EXIT_SSH_FAILED else why[0]
            clock.report(news)
        if clock.left <= 0:
            raise NotReady(news)
        time.sleep(POLL_SECONDS)


def wait_until_ready(endpoint: SshEndpoint, timeout: float, first_contact_grace: float | None,
                     say: Progress) -> BootStatus:
    """Every phase against one deadline; raises NotReady, HostKeyMismatch, or
    UnroutedDocumentationAddress (its lab is down: nothing is sent, and no wait would help)."""
    clock = Clock(say, timeout)
    grace_until = None if first_contact_grace is None else clock.started + first_contact_grace
    wait_for_sshd(endpoint, clock)
    if grace_until is not None:  # a first contact: the image's own key may be served for a while
        wait_for_pinned_key(endpoint, clock, grace_until)
    # Later contacts go straight to the login, which checks the pinned key itself and stops at
    # another one (HostKeyMismatch, with both fingerprints) before any login is offered: one key
    # exchange fewer per server and release (about 0.1 s of CPU with OpenSSH 9.2's default kex).
    status = wait_for_first_boot(endpoint, clock)
    if status.cloud_init == "error":
        say("ready: warning: cloud-init reports an error (see /var/log/cloud-init-output.log on the server)")
    return status


def ready_step(argv: list[str], env: Mapping[str, str] = os.environ) -> int:
    """`hl-step ready [--first-contact]`: progress on stdout, the reason alone on stderr."""
    say = timed_progress()
    endpoint = SshEndpoint.from_environment(env)
    timeout = float(env.get("HL_READY_TIMEOUT", "900"))
    grace = float(env.get("HL_FIRST_BOOT_KEY_GRACE", "600")) if "--first-contact" in argv else None
    try:
        status = wait_until_ready(endpoint, timeout, grace, say)
    except (HostKeyMismatch, UnroutedDocumentationAddress) as error:  # waiting longer changes neither
        print(str(error), file=sys.stderr)
        return 1
    except NotReady as error:
        print(f"the server at {endpoint.where} was not ready within {timeout:.0f} s: {error}. Nothing was pushed; "
              "the next `pulumi up` waits again (check the instance's console and /var/log/cloud-init-output.log)",
              file=sys.stderr)
        return 1
    say(f"ready: {endpoint.where} answers with its pinned host key; {status}")
    return 0
