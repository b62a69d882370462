"""Harden a plain SSH server (a VPS, an EC2 instance, a machine at home) with hardened-lightsail's host
layer: the policy's iptables/ip6tables rules pushed over SSH with commit-confirm, then verified on the
host and from here. No Lightsail, no cloud firewall (see step 2 for where one plugs in).

Config (this project's namespace, `plain-ssh-server:`):
  host        the server's address (IPv4 or IPv6)
  user        the SSH user: root, or one with passwordless sudo
  port        the SSH port (default 22)
  hostKey     the server's public host key, pinned (`ssh-keyscan -t ed25519 HOST`; compare its
              fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the server)
  privateKey  secret: `pulumi config set --secret privateKey < ~/.ssh/id_ed25519`
  firewall    the policy: the keys of hardened-lightsail's `firewall:` (adminCidrs, services, ping,
              deployerAddresses, ...). Put your own address in deployerAddresses: the lock-out check
              then proves you keep SSH before anything is pushed."""
import pulumi

from components import HostFirewall, HostFirewallArgs, SshTarget, checked_policy_release, policy_from_config
from hardened_lightsail.exposure import exposure_map, exposure_table

config = pulumi.Config()

# 1. Policy -> release (rules.v4, rules.v6, ipsets and the host payload, named by their hash); a
#    bad value or a policy that would lock you out stops the run here, before anything is touched.
policy = policy_from_config(config.require_object("firewall"))
release = checked_policy_release(policy)

# 2. The cloud firewall would go here. On another cloud, make it from the same policy:
#    `release.port_infos` lists what the policy lets in from outside (protocol, fromPort, toPort,
#    cidrs, ipv6Cidrs), e.g. one AWS security group ingress rule or one Hetzner firewall rule per
#    entry. Pass that resource as `ready=` below, so the host rules are pushed once it is in place.
cloud_firewall = None

# 3. The host layer: ready (pinned host key) -> copy -> apply with rollback armed -> confirm over a
#    NEW ssh connection -> verify on the host and from here.
host = config.require("host")
server = SshTarget(
    host=host, user=config.require("user"), port=config.get_int("port") or 22,
    private_key=config.require_secret("privateKey"), host_key=config.require("hostKey"),
    # A running server already serves its own key: any other key is someone else, at once.
    first_boot_key_grace_seconds=0, ready_timeout_seconds=120)
firewall = HostFirewall("server-firewall", HostFirewallArgs(
    target=server, release=release, confirm_timeout_seconds=policy.confirm_timeout_seconds,
    public_addresses=[host], ready=cloud_firewall))

pulumi.export("releaseHash", release.hash)
pulumi.export("exposure", exposure_map(exposure_table(policy, release)))  # what the policy lets in
pulumi.export("verifiedExposure", firewall.exposure)  # what the deploy step measured from here
