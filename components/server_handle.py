"""ServerHandle: the one shape the rest of the program sees of a server, whatever its kind
(Lightsail instance or lab): a name, an SSH target, a readiness resource, addresses, exports."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi


@dataclass
class ServerHandle:
    name: str
    target: object  # components.connection.SshTarget
    ready: pulumi.Resource  # later steps wait for it
    identity: pulumi.Output  # changes when the server is replaced
    public_ip: pulumi.Output
    ipv6_addresses: pulumi.Output
    probe_addresses: pulumi.Output  # every address the outside verification probes
    ssh_command: pulumi.Output
    extra_outputs: dict[str, Any] = field(default_factory=dict[str, Any])
    # The cloud firewall whose stored port infos are read back (Lightsail's InstancePublicPorts);
    # None where the program enforces the layer itself (the lab edge loads cloud-ports.json).
    cloud_firewall: pulumi.CustomResource | None = None
