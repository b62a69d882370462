"""The settings `pulumi up` really renders: the stack config plus what its target adds. The
program and `scripts/fw` (check, render, diff) both call effective_settings, so their findings
and release hashes agree for every target.

The lab adds its deployer addresses, so the lock-out check proves the deployer keeps SSH. They
are this machine's end of every lab slot's uplink (lab.topology.DEPLOYER_CIDRS), known without
the slot a lab gets at `up`: the release is a function of the stack file alone."""
from __future__ import annotations

import dataclasses

from .networks import parse_cidr
from .policy import StackSettings


def effective_settings(settings: StackSettings) -> StackSettings:
    if settings.target != "lab":
        return settings
    from lab.topology import DEPLOYER_CIDRS  # pure address arithmetic, nothing that touches the machine
    known = settings.firewall.deployer_addresses
    added = tuple(network for network in map(parse_cidr, DEPLOYER_CIDRS) if network not in known)
    firewall = dataclasses.replace(settings.firewall, deployer_addresses=(*known, *added))
    return dataclasses.replace(settings, firewall=firewall)
