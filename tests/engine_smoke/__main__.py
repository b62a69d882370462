"""Engine smoke test: one local.Command whose output comes back through the engine.

With config `fail: true` a second command fails while a slow one still runs and a third waits on
the failed one: the engine then stops the program mid-flight, as in a failed `up` of the real
program. `quietShutdown: false` leaves out the project's handler for that (the tests' control)."""
import os
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
