"""Engine smoke test: one local.Command whose output comes back through the engine.

With config `fail: true` a second command fails while a slow one still runs and a third waits on
the failed one: the engine then stops the program mid-flight, as in a failed `up` of the real
program. `quietShutdown: false` leaves out the project's handler for that (the tests' control).
With `cloudStored: as-sent|widened` the program's own cloud firewall read back runs against a
stand-in for InstancePublicPorts (what AWS stores: the SSH rule as sent, or with AWS's ::/0
filled in) and a slow stand-in for a host firewall's deploy step."""
import json
import os
import shlex
import sys

import pulumi
import pulumi_command as command

config = pulumi.Config()
if config.get_bool("quietShutdown") is not False:
    sys.path.insert(0, os.environ["HL_PROJECT_DIR"])  # the project, for its components
    from components.engine_shutdown import end_quietly_when_the_engine_stops
    end_quietly_when_the_engine_stops()

greeting = command.local.Command("greeting", create="echo engine-ok", delete="true",
                                 triggers=[config.get("round") or "1"])
pulumi.export("greeting", greeting.stdout)

if config.get_bool("fail"):
    failing = command.local.Command("failing-step", create="echo the step says why it failed; exit 3")
    command.local.Command("slow-step", create="sleep 3; echo done")
    waiting = command.local.Command("waiting-step", create=failing.stdout.apply(lambda out: f"echo {out!r}"))
    pulumi.export("waiting", waiting.stdout)

stored = config.get("cloudStored")
if stored:
    from components.cloud_readback import read_back_cloud_firewalls
    from components.server_handle import ServerHandle
    policy = [{"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrs": ["203.0.113.7/32"], "ipv6Cidrs": [],
               "cidrListAliases": []}]
    aws = [{**policy[0], "ipv6Cidrs": ["::/0"]}] if stored == "widened" else policy
    cloud_firewall = command.local.Command("web-0-cloud-firewall", create=f"echo {shlex.quote(json.dumps(aws))}",
                                           triggers=[stored])
    cloud_firewall.port_infos = cloud_firewall.stdout.apply(json.loads)  # as InstancePublicPorts' outputs
    host_deploy = command.local.Command("web-0-firewall-deploy", create="sleep 2; echo deployed", triggers=[stored],
                                        opts=pulumi.ResourceOptions(depends_on=[cloud_firewall]))
    unused = pulumi.Output.from_input("")
    read_back_cloud_firewalls([ServerHandle("web-0", None, cloud_firewall, unused, unused, unused, unused, unused,
                                            cloud_firewall=cloud_firewall)], [host_deploy], policy)
