"""hardened-lightsail: one firewall policy rendered to the Lightsail cloud firewall and to the
host's iptables/ip6tables, checked before anything is touched (see README.md).

The policy core, for programs of your own (the Pulumi side is `components`: HostFirewall,
SshTarget): a policy from a dict or a file, its release (rules, ipsets, payload; named by the
hash of its content) and the analysis that refuses a policy that would lock you out."""
from . import release
from .analysis import analyse
from .config import ConfigError
from .findings import Finding, errors
from .policy import FirewallPolicy, Service
from .policy_loading import load_policy, policy_from_values
from .release import Release, render_release

__all__ = ["ConfigError", "Finding", "FirewallPolicy", "Release", "Service", "analyse", "errors", "load_policy",
           "policy_from_values", "release", "render_release"]
