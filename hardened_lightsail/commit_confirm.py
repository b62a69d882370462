"""The deployer's half of commit-confirm, over SSH: apply (rollback armed), confirm over a NEW
connection with the apply's nonce, verify on the host, and read back what the host runs.

Each call is its own ssh process, i.e. its own TCP connection: conntrack would keep an old
session alive even under rules that lock every new one out, so only a new one proves anything."""
from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import shlex
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from .ssh_session import EXIT_SSH_FAILED, HostKeyMismatch, SshEndpoint, run_remote
from .step_output import Progress

# hlfw's exit codes (payload/hlfw): the deployer reacts to each differently.
EXIT_ROLLED_BACK, EXIT_REFUSED = 3, 5
EXIT_RELEASE_MISSING = 66  # our own pre-check: the release directory is not on the host
EXIT_PACKAGES_FAILED = 67  # `hlfw install-deps` failed before the apply: nothing was applied
INSTALL_DEPS_PREFIX = "install-deps:"  # how `hlfw install-deps` starts the lines it prints
STATE_DIR = "/var/lib/hardened-lightsail"  # hlfw's default state directory (its stored releases)
ROLLBACK_GRACE_SECONDS = 5
IN_SYNC = "in sync"
PAUSE_BEFORE_CONFIRM = "HL_TEST_PAUSE_BEFORE_CONFIRM"  # seconds; tests only (see deploy)


class DeployError(Exception):
    """A step failed; the message is what the operator reads at the end of `up`."""


@dataclass(frozen=True)
class RemoteRelease:
    endpoint: SshEndpoint
    remote_dir: str  # where CopyToRemote put the release (the login user's home)
    release: str  # its hash

    @property
    def hlfw(self) -> str:
        return f"sh {shlex.quote(self.remote_dir)}/hlfw"


def _release_archive(local_dir: Path) -> bytes:
    """The release directory as a gzip'd tar, for a host that lost its copy."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(local_dir.iterdir()):
            archive.add(path, arcname=path.name)
    return buffer.getvalue()


def apply(target: RemoteRelease, local_dir: Path, timeout_seconds: int, nonce: str, say: Progress) -> str:
    """Install the persistence packages if missing (iptables-persistent / iptables-services; a
    no-op when present), then load the release with the rollback armed; returns hlfw's state
    line (pending/active). One SSH command for both: each connection costs a key exchange, and
    every server of a fleet runs this on every release."""
    directory = shlex.quote(target.remote_dir)
    command = (f"[ -f {directory}/RELEASE ] || exit {EXIT_RELEASE_MISSING}; "
               f"{target.hlfw} install-deps || exit {EXIT_PACKAGES_FAILED}; "
               f"{target.hlfw} apply --release {directory} --timeout {timeout_seconds} "
               f"--nonce-sha256 {hashlib.sha256(nonce.encode()).hexdigest()}")
    result = run_remote(target.endpoint, command, connect_timeout=10, timeout=600)
    if result.returncode == EXIT_RELEASE_MISSING:
        say(f"release {target.release} is no longer in {target.remote_dir} on the host: sending it again")
        pushed = run_remote(target.endpoint, f"mkdir -p {directory} && tar -xzf - -C {directory}",
                            connect_timeout=10, timeout=600, stdin=_release_archive(local_dir))
        if pushed.returncode != 0:
            raise DeployError(f"could not copy release {target.release} to the host: {pushed.stderr.strip()}")
        result = run_remote(target.endpoint, command, connect_timeout=10, timeout=600)
    if result.returncode == EXIT_SSH_FAILED:
        raise DeployError(f"apply: cannot reach the host over SSH: {result.stderr.strip()}; nothing was applied")
    if result.returncode == EXIT_PACKAGES_FAILED:
        raise DeployError(f"installing the persistence packages failed on the host; nothing was applied:\n"
                          f"{result.stderr.strip()}")
    if result.returncode != 0:
        raise DeployError(f"apply of release {target.release} failed on the host (exit {result.returncode}):\n"
                          f"{result.stderr.strip()}")
    lines = result.stdout.strip().splitlines()
    for line in lines[:-1]:
        say(line if line.startswith(INSTALL_DEPS_PREFIX) else f"apply: {line}")
    return lines[-1] if lines else ""


def confirm(target: RemoteRelease, timeout_seconds: int, nonce: str, applied_at: float, say: Progress) -> None:
    """Open NEW ssh connections until one confirms the release (or the deadline passes)."""
    attempts = 0
    command = f"{target.hlfw} confirm --release {target.release} --nonce {nonce}"
    while time.monotonic() - applied_at < timeout_seconds - 1:
        attempts += 1
        remaining = timeout_seconds - (time.monotonic() - applied_at)
        result = run_remote(target.endpoint, command, connect_timeout=max(1, min(5, int(remaining))))
        if result.returncode == 0:
            say(f"confirm: {result.stdout.strip() or 'confirmed'} (new SSH connection, attempt {attempts}, "
                f"{time.monotonic() - applied_at:.1f} s after apply)")
            return
        if result.returncode == EXIT_ROLLED_BACK:
            raise DeployError(result.stderr.strip())
        if result.returncode == EXIT_REFUSED:
            raise DeployError(f"the host refused the confirm: {result.stderr.strip()}")
        if result.returncode != EXIT_SSH_FAILED:
            raise DeployError(f"hlfw confirm failed on the host (exit {result.returncode}):\n{result.stderr.strip()}")
        if attempts == 1 or attempts % 5 == 0:
            say(f"confirm: no new SSH connection yet ({result.stderr.strip() or 'no answer'}); "
                f"{remaining:.0f} s left before the host rolls back")
        time.sleep(1)
    # No new connection got through: the new rules shut the deployer out. The host rolls back on
    # its own at the deadline; wait for that and check that it really happened.
    time.sleep(max(0.0, timeout_seconds + ROLLBACK_GRACE_SECONDS - (time.monotonic() - applied_at)))
    status = run_remote(target.endpoint, f"{target.hlfw} status", connect_timeout=10)
    message = f"rules were rolled back: new SSH connections failed within {timeout_seconds} s"
    if status.returncode == 0:
        message += f"\nthe host is reachable again with its previous rules:\n{status.stdout.strip()}"
    else:
        message += (f"\nand the host still does not answer after the rollback deadline ({status.stderr.strip()});"
                    " check the cloud firewall and the instance console")
    raise DeployError(message)


def stale_copies_removed(target: RemoteRelease) -> str:
    """Shell that removes the copies of earlier releases beside this one (`PREFIX<hash>`
    directories in the login home: CopyToRemote never deletes what it copied, so every policy
    change left one behind, megabytes each with a long blocklist). Only once a release is
    confirmed: the host keeps its own checked copies of the releases a rollback needs (hlfw's
    state directory). Symlinks and other names are left alone; a failure changes nothing else."""
    home, _, name = target.remote_dir.rpartition("/")
    prefix = name.removesuffix(target.release)
    if not home or not prefix or prefix == name:
        return ":"  # not the layout HostFirewall makes: nothing here is known to be ours
    hex_digits = "[0-9a-f]" * len(target.release)
    return (f"for d in {shlex.quote(home)}/{shlex.quote(prefix)}*; do case \"${{d##*/}}\" in "
            f"{shlex.quote(name)}) ;; {shlex.quote(prefix)}{hex_digits}) "
            f"[ -d \"$d\" ] && [ ! -L \"$d\" ] && rm -rf -- \"$d\" ;; esac; done")


def verify_on_host(target: RemoteRelease) -> str:
    """`hlfw verify` over a new connection; its report starts with the client address it saw.
    The same connection removes the home's copies of earlier releases (it runs only after a
    confirm); its exit status stays verify's."""
    result = run_remote(target.endpoint, f'echo "client: ${{SSH_CLIENT%% *}}"; '
                                         f"{target.hlfw} verify --release {target.release}; status=$?; "
                                         f"{{ {stale_copies_removed(target)}; }} >/dev/null 2>&1; exit $status",
                        connect_timeout=10)
    if result.returncode != 0:
        raise DeployError(f"verify on the host: release {target.release} is not what the host runs "
                          f"(exit {result.returncode}):\n{result.stdout.strip()}\n{result.stderr.strip()}")
    # Other tools' rules in front of the policy are named on stderr: keep them with the report.
    warnings = [line.removeprefix("hlfw: ") for line in result.stderr.splitlines() if line.startswith("hlfw: warning:")]
    return "\n".join([result.stdout.rstrip("\n"), *warnings]) + "\n"


def deploy(target: RemoteRelease, local_dir: Path, timeout_seconds: int, say: Progress) -> str:
    """apply -> confirm (new connection, this apply's nonce) -> verify on the host. Returns the
    host's report for the outside check; raises DeployError at the first step that fails."""
    nonce = secrets.token_hex(16)
    applied_at = time.monotonic()
    try:
        state = apply(target, local_dir, timeout_seconds, nonce, say)
    except HostKeyMismatch as error:  # never retried: another key is not a network blip
        raise DeployError(str(error)) from None
    say(f"apply: {state or 'release loaded, rollback armed'}")
    # Fault injection for tests: a pause in which a test can cut the network, as a blip would.
    time.sleep(float(os.environ.get(PAUSE_BEFORE_CONFIRM, "0")))
    try:
        confirm(target, timeout_seconds, nonce, applied_at, say)
    except HostKeyMismatch as error:
        raise DeployError(f"{error}\nrelease {target.release} was applied just before; unconfirmed, the host rolls "
                          f"it back by itself within {timeout_seconds} s of the apply") from None
    try:
        return verify_on_host(target)
    except HostKeyMismatch as error:
        raise DeployError(str(error)) from None


# `hlfw drift`'s warning about another tool's rule in front of the project's jump in INPUT.
FOREIGN_WARNING = re.compile(r"^warning: v(?P<family>[46]): a rule before the project's jump in INPUT [^:]*: "
                             r"(?P<rule>-A INPUT .*)$")


def read_host_state(target: RemoteRelease) -> str:
    """`in sync`, or a short reason why the host does not run the release confirmed: drift of the
    live rules, ipsets or persisted files, an unconfirmed or rolled-back state, another tool's
    rule in front of the policy that changes what is open, or no answer."""
    stored = shlex.quote(f"{STATE_DIR}/releases/{target.release}")
    home = shlex.quote(target.remote_dir)
    # The home copy is readable by the login user; the stored one only by root (through sudo).
    # The release's rules come back too, to judge other tools' rules in front of ours.
    command = (f"if [ -f {home}/hlfw ]; then d={home}; s=; elif [ \"$(id -u)\" = 0 ]; then d={stored}; s=; "
               f"else d={stored}; s='sudo -n'; fi; "
               f"$s sh \"$d/hlfw\" drift --release {target.release} 2>/dev/null; echo \"--- exit $?\"; "
               f"for f in rules.v4 rules.v6; do echo \"--- $f\"; $s cat \"$d/$f\" 2>/dev/null; done")
    try:
        result = run_remote(target.endpoint, command, connect_timeout=10, timeout=120)
    except HostKeyMismatch as error:
        return f"unreachable: {error}"
    if result.returncode == EXIT_SSH_FAILED:
        return f"unreachable: {result.stderr.strip() or 'no answer'}"
    report, _, files = result.stdout.partition("--- exit ")
    status, _, files = files.partition("\n")
    rules = {int(name[-1]): text for name, text in
             zip(*[iter(re.split(r"^--- rules\.v([46])\n", files, flags=re.M)[1:])] * 2, strict=True)}
    reasons = [line[len("drift:"):].strip() for line in report.splitlines() if line.startswith("drift:")]
    if "in_sync=" not in report:
        return f"drift: release {target.release} is not on this host (or its hlfw does not run: exit {status.strip()})"
    foreign: dict[int, list[str]] = {}
    for line in report.splitlines():
        found = FOREIGN_WARNING.match(line)
        if found:
            foreign.setdefault(int(found["family"]), []).append(found["rule"])
    # Only a read-back judges other tools' rules: the deploy step, which imports this module on
    # every server of every release, needn't load the rule evaluator for it.
    from .foreign_rules import exposure_changes
    reasons += exposure_changes(rules, foreign)
    if reasons:
        return "drift: " + "; ".join(reasons)
    if "in_sync=yes" not in report:
        return f"unknown: hlfw drift exited {status.strip()}"
    return IN_SYNC
