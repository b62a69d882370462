"""ServerHandle: the one shape the rest of the program sees of a server, whatever its kind
(Lightsail instance or lab): a name, an SSH target, a readiness resource, addresses, exports."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

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
    extra_outputs: dict = field(default_factory=dict)  # stack outputs of the first server (the lab's namespaces)
    details: dict = field(default_factory=dict)  # more of this server for its `servers` entry
    # The cloud firewall whose stored port infos are read back (Lightsail's InstancePublicPorts);
    # None where the program enforces the layer itself (the lab edge loads cloud-ports.json).
    cloud_firewall: Optional[pulumi.CustomResource] = None
    # A network namespace on this machine outside the admin CIDRs (the lab's internet), from which
    # the outside verification also probes; None: only verify.vantage, if set, measures that view.
    outside_namespace: Optional[pulumi.Output] = None
