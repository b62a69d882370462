"""Pulumi components: servers (Lightsail or lab) and the host firewall pushed onto them.

The host layer for a Pulumi program of your own (any Linux server you reach over SSH):
`HostFirewall(name, HostFirewallArgs(target=SshTarget(...), release=checked_policy_release(policy)))`
with the policy from `policy_from_config` (a config value) or `hardened_lightsail.load_policy` (a
file); see examples/plain-ssh-server/."""
from hardened_lightsail.stack_config import checked_policy_release, policy_from_config

from .connection import SshTarget
from .host_firewall import HostFirewall, HostFirewallArgs

__all__ = ["HostFirewall", "HostFirewallArgs", "SshTarget", "checked_policy_release", "policy_from_config"]
