"""The one description of "how to SSH into a server" that every later step uses."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

# pulumi-command's own dialing, for a server the readiness step already found answering: a blip
# is retried (upstream backs off from 100 ms, x1.5, about 11 s over 10 refused dials).
DIAL_ATTEMPTS, DIAL_TIMEOUT_SECONDS = 10, 15


@dataclass
class SshTarget:
    host: pulumi.Input[str]
    user: pulumi.Input[str]
    private_key: pulumi.Input[str]  # always a Pulumi secret
    host_key: pulumi.Input[str]  # the server's public host key, made by the program and pinned
    port: pulumi.Input[int] = 22
    # A fresh server serves its image's host key until its first-boot step installs the pinned
    # one: for at most this long after the first contact the readiness step waits for that
    # (never trusting the other key), then fails with the mismatch.
    first_boot_key_grace_seconds: int = 600
    # How long a new server may take to answer SSH, finish cloud-init and free the package lock.
    ready_timeout_seconds: int = 900
    # The login's home, where releases are copied to (None: /root for root, else /home/USER).
    home: str | None = None
    # A lab server: a network namespace of this machine, whose SSH traffic never leaves it; the
    # steps' connections then use a cheaper key exchange (ssh_session.ON_THIS_MACHINE_KEX).
    on_this_machine: bool = False

    def connection_args(self) -> command.remote.ConnectionArgs:
        # hostKey: pulumi-command accepts only this key and offers only its algorithm (ed25519).
        return command.remote.ConnectionArgs(
            host=self.host, port=self.port, user=self.user,
            private_key=pulumi.Output.secret(self.private_key), host_key=self.host_key,
            dial_error_limit=DIAL_ATTEMPTS, per_dial_timeout=DIAL_TIMEOUT_SECONDS)

    def home_dir(self) -> pulumi.Output[str]:
        if self.home is not None:
            return pulumi.Output.from_input(self.home)
        return pulumi.Output.from_input(self.user).apply(lambda user: "/root" if user == "root" else f"/home/{user}")
