"""Pulumi components: servers (Lightsail or lab) and the host firewall pushed onto them.

The host layer for a Pulumi program of your own (any Linux server you reach over SSH):
`HostFirewall(name, HostFirewallArgs(target=SshTarget(...), release=checked_policy_release(policy)))`
with the policy from `policy_from_config` (a config value) or `hardened_lightsail.load_policy` (a
file); see examples/plain-ssh-server/.

The names below load on first use: the dynamic provider process that serves HostKey and
HostState imports `components.host_key` / `components.host_state` on every `up`, before the
lab or any host step can go on, and needs neither pulumi-command nor the policy core."""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hardened_lightsail.stack_config import checked_policy_release, policy_from_config

    from .connection import SshTarget
    from .host_firewall import HostFirewall, HostFirewallArgs

# name -> the module that defines it
_HOMES = {"HostFirewall": f"{__name__}.host_firewall", "HostFirewallArgs": f"{__name__}.host_firewall",
          "SshTarget": f"{__name__}.connection", "checked_policy_release": "hardened_lightsail.stack_config",
          "policy_from_config": "hardened_lightsail.stack_config"}

__all__ = ["HostFirewall", "HostFirewallArgs", "SshTarget", "checked_policy_release", "policy_from_config"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(home), name)
