"""hardened-lightsail: one firewall policy rendered to the Lightsail cloud firewall and to the
host's iptables/ip6tables, checked before anything is touched (see README.md).

The policy core, for programs of your own (the Pulumi side is `components`: HostFirewall,
SshTarget): a policy from a dict or a file, its release (rules, ipsets, payload; named by the
hash of its content) and the analysis that refuses a policy that would lock you out.

The names below load on first use: every process that only needs one module of the package
(scripts/pulumi, the dynamic provider serving HostKey and HostState, each deploy step) starts
without importing the whole policy core first."""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import release
    from .analysis import analyse
    from .config import ConfigError
    from .findings import Finding, errors
    from .policy import FirewallPolicy, Service
    from .policy_loading import load_policy, policy_from_values
    from .release import Release, render_release

# name -> the module that defines it (a module itself when the name is the module's)
_HOMES = {"ConfigError": "config", "Finding": "findings", "FirewallPolicy": "policy", "Release": "release",
          "Service": "policy", "analyse": "analysis", "errors": "findings", "load_policy": "policy_loading",
          "policy_from_values": "policy_loading", "release": "release", "render_release": "release"}

__all__ = ["ConfigError", "Finding", "FirewallPolicy", "Release", "Service", "analyse", "errors", "load_policy",
           "policy_from_values", "release", "render_release"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = import_module(f".{home}", __name__)
    return module if name == home else getattr(module, name)
