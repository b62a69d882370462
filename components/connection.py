"""The one description of "how to SSH into a server" that every later step uses."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

# Bounded dialing: about 2.5 minutes before a step gives up on an unreachable host.
DIAL_ATTEMPTS, DIAL_TIMEOUT_SECONDS = 10, 15


@dataclass
class SshTarget:
    host: pulumi.Input[str]
    user: pulumi.Input[str]
    private_key: pulumi.Input[str]  # always a Pulumi secret
    port: pulumi.Input[int] = 22

    def connection_args(self) -> command.remote.ConnectionArgsDict:
        return command.remote.ConnectionArgs(
            host=self.host, port=self.port, user=self.user,
            private_key=pulumi.Output.secret(self.private_key),
            dial_error_limit=DIAL_ATTEMPTS, per_dial_timeout=DIAL_TIMEOUT_SECONDS)

    def home_dir(self) -> pulumi.Output[str]:
        return pulumi.Output.from_input(self.user).apply(lambda user: "/root" if user == "root" else f"/home/{user}")
