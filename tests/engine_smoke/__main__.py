"""Engine smoke test: one local.Command whose output comes back through the engine."""
import pulumi
import pulumi_command as command

greeting = command.local.Command("greeting", create="echo engine-ok", delete="true",
                                 triggers=[pulumi.Config().get("round") or "1"])
pulumi.export("greeting", greeting.stdout)
