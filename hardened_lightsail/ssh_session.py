"""Runs one command on the server through the system ssh client, as a brand-new connection.

The private key arrives in an environment variable (a Pulumi secret); it is written to a 0600
file in a private temporary directory for the life of one call and never printed."""
from __future__ import annotations

import os
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping

EXIT_SSH_FAILED = 255  # ssh's own failure: connection refused, timed out, authentication failed


@dataclass(frozen=True)
class SshEndpoint:
    host: str
    port: int
    user: str
    private_key: str

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> "SshEndpoint":
        return cls(host=env["HL_SSH_HOST"], port=int(env.get("HL_SSH_PORT", "22")),
                   user=env["HL_SSH_USER"], private_key=env["HL_SSH_KEY"])


@contextmanager
def _key_file(private_key: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="hl-ssh-") as directory:
        path = os.path.join(directory, "key")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(private_key if private_key.endswith("\n") else private_key + "\n")
        yield path


def run_remote(endpoint: SshEndpoint, remote_command: str, connect_timeout: int = 5,
               timeout: float = 120, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """One ssh process = one new TCP connection (no multiplexing, no agent, no prompts).
    `stdin` is sent to the remote command (e.g. a release archive); stdout/stderr come back as text."""
    with _key_file(endpoint.private_key) as key:
        argv = ["ssh", "-i", key, "-p", str(endpoint.port),
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", "ControlMaster=no", "-o", "ControlPath=none",
                # The cloud firewall already limits who can reach the port; host keys of a
                # fresh server (or the lab) are unknown to the deployer, as with pulumi-command.
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", f"ConnectTimeout={connect_timeout}", "-o", "ServerAliveInterval=5",
                f"{endpoint.user}@{endpoint.host}", remote_command]
        feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
        try:
            result = subprocess.run(argv, capture_output=True, timeout=timeout, **feed)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, EXIT_SSH_FAILED, "", f"ssh: no answer within {timeout} s")
        return subprocess.CompletedProcess(argv, result.returncode, result.stdout.decode(errors="replace"),
                                           result.stderr.decode(errors="replace"))
