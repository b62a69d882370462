"""hardened-lightsail: a web server hardened by two firewall layers rendered from one policy.

Reads like a table of contents: config -> policy/release -> servers -> host firewalls -> exports."""
import pulumi

from components.cloud_readback import read_back_cloud_firewalls
from components.early_registration import let_registrations_start
from components.engine_shutdown import end_quietly_when_the_engine_stops
from components.host_firewall import HostFirewall, HostFirewallArgs, fleet_scan_plan
from components.process_exit import freeze_loaded_objects
from components.servers import make_servers
from hardened_lightsail.effective_settings import effective_settings
from hardened_lightsail.exposure import exposure_map, exposure_table
from hardened_lightsail.stack_config import checked_release, read_stack_settings

# 0. A failed or cancelled `up` ends with the engine's error lines, not Python tracebacks. What is
#    loaded (the SDK, the policy core) stays out of the garbage collector's sight until the exit.
end_quietly_when_the_engine_stops()
freeze_loaded_objects()

# 1. Config: validated before anything is registered; errors name the key and stop the run.
#    The target's additions (the lab's deployer addresses) are the same ones `fw check` sees.
settings = effective_settings(read_stack_settings())

# 2. Policy -> release (rules.v4, rules.v6, ipsets, cloud ports), refused on lock-out/mismatch.
release = checked_release(settings)

# 3. Servers: Lightsail instances (or the local lab) with the cloud layer of the same policy.
servers = make_servers(settings, release)


async def host_layers_and_exports() -> None:
    # The servers' registrations go out first: the engine starts the provider of their host keys
    # while the host layers are built (components/early_registration.py).
    await let_registrations_start([server.component for server in servers if server.component is not None])

    # 4. Host layer: push, apply with rollback armed, confirm over a new connection, verify. A
    #    fleet's full scans are split among its servers (hardened_lightsail/scan_share.py).
    fleet_file = fleet_scan_plan(pulumi.get_stack(), [server.name for server in servers], settings.verify.fleet_scan)
    firewalls = [
        HostFirewall(f"{server.name}-firewall", HostFirewallArgs(
            target=server.target, release=release,
            confirm_timeout_seconds=settings.firewall.confirm_timeout_seconds,
            public_addresses=server.probe_addresses, server_identity=server.identity, ready=server.ready,
            verify_scan=settings.verify.deployer_scan(settings.target), verify=settings.verify,
            outside_namespace=server.outside_namespace, fleet=(str(fleet_file), server.name)))
        for server in servers
    ]

    # 5. Cloud layer read back: what AWS stores for each cloud firewall must not let in more than the
    #    policy (checked after every host layer is deployed; none of them waits for it).
    read_back_cloud_firewalls(servers, firewalls, release.port_infos)

    # 6. Exports: the first server's addresses at the top level, every server under `servers`.
    pulumi.export("publicIp", servers[0].public_ip)
    pulumi.export("ipv6Addresses", servers[0].ipv6_addresses)
    pulumi.export("sshCommand", servers[0].ssh_command)
    pulumi.export("releaseHash", release.hash)
    pulumi.export("exposure", exposure_map(exposure_table(settings.firewall, release)))
    pulumi.export("verifiedExposure", firewalls[0].exposure)
    pulumi.export("servers", [{"name": s.name, "publicIp": s.public_ip, "ipv6Addresses": s.ipv6_addresses,
                               "sshCommand": s.ssh_command, "verifiedExposure": f.exposure, **s.details}
                              for s, f in zip(servers, firewalls, strict=True)])
    for key, value in servers[0].extra_outputs.items():
        pulumi.export(key, value)

    # 7. So does everything the program built: the engine waits for this process's exit.
    freeze_loaded_objects()


pulumi.run(host_layers_and_exports)
