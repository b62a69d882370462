"""Chooses the server kind for the stack's target and gives the rest of the program one shape
for either: a name, an SSH target, a readiness resource, addresses and extra exports."""
from __future__ import annotations

import pulumi

from hardened_lightsail.policy import StackSettings
from hardened_lightsail.release import Release

from .server_handle import ServerHandle


def make_servers(settings: StackSettings, release: Release) -> list[ServerHandle]:
    tags = {"project": "hardened-lightsail", "stack": pulumi.get_stack()}
    if settings.target == "lab":
        from .lab_server import make_lab_servers
        return make_lab_servers(settings, release)
    from .lightsail_server import LightsailServer, LightsailServerArgs
    handles = []
    for index in range(settings.server.count):
        name = f"web-{index}"
        server = LightsailServer(name, LightsailServerArgs(settings.server, release.port_infos, tags,
                                                           ssh_port=settings.firewall.ssh_port))
        addresses = pulumi.Output.all(server.public_ip, server.ipv6_addresses).apply(
            lambda values: [values[0], *(values[1] or [])])
        handles.append(ServerHandle(
            name=name, target=server.target, ready=server.ready, identity=server.identity, public_ip=server.public_ip,
            ipv6_addresses=server.ipv6_addresses, probe_addresses=addresses,
            ssh_command=pulumi.Output.concat("ssh ", _port_flag(settings.firewall.ssh_port), server.target.user,
                                             "@", server.public_ip),
            cloud_firewall=server.public_ports, component=server))
    return handles


def _port_flag(ssh_port: int) -> str:
    return "" if ssh_port == 22 else f"-p {ssh_port} "
