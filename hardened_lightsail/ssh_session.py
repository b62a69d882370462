"""Runs one command on the server through the system ssh client, as a brand-new connection that
checks the server's pinned host key.

The private key (a Pulumi secret, handed over in an environment variable) and the known_hosts
line never touch a file system: each lives in an anonymous memory file (memfd, mode 0600) that
only this process holds, and ssh opens it as /proc/<this pid>/fd/N (ssh closes every descriptor
it inherits above stderr, so it can't be handed one). When the step ends, however it ends
(SIGKILL included), the kernel frees them: nothing is left to clean up."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from .documentation_routes import unrouted_documentation_address
from .host_keys import KNOWN_HOSTS_ALIAS, HostKeyError, PublicHostKey, offered_keys

EXIT_SSH_FAILED = 255  # ssh's own failure: connection refused, timed out, authentication failed
KEY_VARIABLE = "HL_SSH_KEY"  # the private key's environment variable (never passed on to ssh)
VANTAGE_KEY_VARIABLE = "HL_VERIFY_VANTAGE_KEY"  # the vantage's private key (verify.vantage)
SECRET_VARIABLES = (KEY_VARIABLE, VANTAGE_KEY_VARIABLE)
# "1": the server is a lab namespace on this machine (SshTarget.on_this_machine).
ON_THIS_MACHINE_VARIABLE = "HL_SSH_ON_THIS_MACHINE"
# The key exchange with such a server. Its SSH traffic never leaves this machine's kernel (veth
# pairs between namespaces): there is no wire to record, so the post-quantum half of OpenSSH's
# default (sntrup761x25519-sha512 in 9.x, against recording now and decrypting later) protects
# nothing there, and it costs the client about 0.1 s of CPU per connection (OpenSSH 9.2: 10
# connections 1.16 s with it, 0.12 s with curve25519), 4 connections per server and release, on
# the cores the lab's servers run on as well. Any other server keeps OpenSSH's default.
ON_THIS_MACHINE_KEX = "curve25519-sha256"
# What ssh prints when the server's key is not the pinned one (or it offers no key of its type).
HOST_KEY_FAILURES = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED",
                     "no matching host key type found")


class HostKeyMismatch(Exception):
    """The server answered with another host key than the pinned one; nothing was sent to it."""


@dataclass(frozen=True)
class SshEndpoint:
    host: str
    port: int
    user: str
    private_key: str
    host_key: str  # the pinned public key, "ssh-ed25519 AAAA..."
    on_this_machine: bool = False  # a lab server (ON_THIS_MACHINE_KEX)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> SshEndpoint:
        return cls(host=env["HL_SSH_HOST"], port=int(env.get("HL_SSH_PORT", "22")),
                   user=env["HL_SSH_USER"], private_key=env[KEY_VARIABLE], host_key=env["HL_SSH_HOST_KEY"],
                   on_this_machine=env.get(ON_THIS_MACHINE_VARIABLE) == "1")

    @property
    def pinned(self) -> PublicHostKey:
        return PublicHostKey.parse(self.host_key)

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def environment_without_secrets() -> dict[str, str]:
    """This process's environment minus the private keys: what every child process gets."""
    return {name: value for name, value in os.environ.items() if name not in SECRET_VARIABLES}


@contextmanager
def memory_file(content: str, name: str) -> Iterator[str]:
    """A 0600 anonymous memory file holding `content`; yields the path a child of this process
    opens it by. It is on no file system: it vanishes with this process, however it ends."""
    descriptor = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.fchmod(descriptor, 0o600)  # ssh refuses a private key others could read
        os.write(descriptor, content.encode())
        yield f"/proc/{os.getpid()}/fd/{descriptor}"
    finally:
        os.close(descriptor)


def ssh_options(pinned: PublicHostKey, known_hosts: str, connect_timeout: int, on_this_machine: bool = False
                ) -> list[str]:
    """The options of every connection: a new one each time, no agent, no prompts, the pinned key only."""
    kex = ["-o", f"KexAlgorithms={ON_THIS_MACHINE_KEX}"] if on_this_machine else []
    return ["-F", "/dev/null", *kex, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", "ControlMaster=no", "-o", "ControlPath=none",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"HostKeyAlias={KNOWN_HOSTS_ALIAS}",
            "-o", f"HostKeyAlgorithms={pinned.key_type}", "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no",
            "-o", "LogLevel=ERROR", "-o", f"ConnectTimeout={connect_timeout}", "-o", "ServerAliveInterval=5"]


def keyscan(host: str, port: int, timeout: int = 5, key_type: str | None = None) -> list[PublicHostKey]:
    """The host keys a server offers (no login, nothing sent): one key exchange per key type, so
    ask for one type where that is enough (the server counts every new SSH connection against
    its per-source rate limit, admins included)."""
    scan_type = "ecdsa" if (key_type or "").startswith("ecdsa") else (key_type or "").removeprefix("ssh-")
    types = ["-t", scan_type] if key_type else []
    if unrouted_documentation_address(host):
        return []  # a lab that is down: nothing answers, and nothing is sent
    try:
        result = subprocess.run(["ssh-keyscan", "-T", str(timeout), *types, "-p", str(port), host],
                                capture_output=True, text=True, timeout=timeout * 4 + 5, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return []
    return offered_keys(result.stdout)


def mismatch_message(endpoint: SshEndpoint, offered: Sequence[PublicHostKey]) -> str:
    what = ", ".join(map(str, offered)) if offered else "no key we could read"
    return (f"host key mismatch at {endpoint.where}: expected {endpoint.pinned} (the key this stack made for the "
            f"server and installed at its first boot), the server offered {what}. Refusing to connect: nothing "
            "was sent to it. Something else answers at this address, or the server's key was changed by hand: "
            "check the instance in its console; if it is this stack's server, put the pinned key back "
            "(or replace the server together with its host key resource)")


def run_remote(endpoint: SshEndpoint, remote_command: str, connect_timeout: int = 5,
               timeout: float = 120, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """One ssh process = one new TCP connection to the server with the pinned key.
    `stdin` is sent to the remote command (e.g. a release archive); stdout/stderr come back as
    text. Raises HostKeyMismatch when the server is not the one pinned."""
    refusal = unrouted_documentation_address(endpoint.host)
    if refusal:  # as ssh's own failure to connect: the callers treat it as an unreachable host
        return subprocess.CompletedProcess(["ssh", endpoint.host], EXIT_SSH_FAILED, "", f"ssh: {refusal}")
    try:
        pinned = endpoint.pinned
    except HostKeyError as error:
        raise HostKeyMismatch(f"the pinned host key of {endpoint.where} is not readable: {error}") from None
    key = endpoint.private_key if endpoint.private_key.endswith("\n") else endpoint.private_key + "\n"
    with ExitStack() as files:
        key_file = files.enter_context(memory_file(key, "hl-ssh-key"))
        known_hosts = files.enter_context(memory_file(pinned.known_hosts_line(), "hl-known-hosts"))
        argv = ["ssh", "-i", key_file, "-p", str(endpoint.port), *ssh_options(pinned, known_hosts, connect_timeout, endpoint.on_this_machine),
                f"{endpoint.user}@{endpoint.host}", remote_command]
        feed: dict[str, Any] = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
        env = environment_without_secrets()
        try:
            result: subprocess.CompletedProcess[bytes] = subprocess.run(argv, capture_output=True, timeout=timeout,
                                                                        env=env, **feed)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, EXIT_SSH_FAILED, "", f"ssh: no answer within {timeout} s")
    stderr = result.stderr.decode(errors="replace")
    if result.returncode == EXIT_SSH_FAILED and any(text in stderr for text in HOST_KEY_FAILURES):
        raise HostKeyMismatch(mismatch_message(endpoint, keyscan(endpoint.host, endpoint.port)))
    return subprocess.CompletedProcess(argv, result.returncode, result.stdout.decode(errors="replace"), stderr)
