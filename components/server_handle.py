"""ServerHandle: the one shape the rest of the program sees of a server, whatever its kind
(Lightsail instance or lab): a name, an SSH target, a readiness resource, addresses, exports."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulumi

from .connection import SshTarget

if TYPE_CHECKING:
    import pulumi_aws as aws  # only Lightsail servers have one; the lab never loads the AWS SDK


@dataclass
class ServerHandle:
    name: str
    target: SshTarget
    ready: pulumi.Resource  # later steps wait for it
    identity: pulumi.Output[str]  # changes when the server is replaced
    public_ip: pulumi.Output[str]
    ipv6_addresses: pulumi.Output[Sequence[str]]
    probe_addresses: pulumi.Output[Sequence[str]]  # every address the outside verification probes
    ssh_command: pulumi.Output[str]
    extra_outputs: dict[str, Any] = field(default_factory=dict)  # stack outputs of the first server (the lab's namespaces)
    details: dict[str, Any] = field(default_factory=dict)  # more of this server for its `servers` entry
    # The cloud firewall whose stored port infos are read back (Lightsail's InstancePublicPorts);
    # None where the program enforces the layer itself (the lab edge loads cloud-ports.json).
    cloud_firewall: aws.lightsail.InstancePublicPorts | None = None
    # A network namespace on this machine outside the admin CIDRs (the lab's internet), from which
    # the outside verification also probes; None: only verify.vantage, if set, measures that view.
    outside_namespace: pulumi.Output[str] | None = None
    # The component the server's resources are children of (its host key among them): once it is
    # registered, they can be (components/early_registration.py).
    component: pulumi.Resource | None = None
