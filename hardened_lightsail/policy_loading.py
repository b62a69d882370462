"""A firewall policy from plain data (the `firewall` mapping of a stack config, as a dict or a YAML
or JSON file), for programs that use the host layer on servers of their own."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, settings_from_values
from .policy import FirewallPolicy


def policy_from_values(values: Mapping[str, Any]) -> FirewallPolicy:
    """Validate the keys of `firewall:` in Pulumi.<stack>.yaml (adminCidrs, services, sshPort, ...);
    a ConfigError lists every bad value with its key path (`firewall.adminCidrs[0]: ...`)."""
    return settings_from_values({"firewall": values}).firewall


def load_policy(path: str | Path) -> FirewallPolicy:
    """The same, from a YAML (or JSON) file that holds that mapping."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError([f"{path}: {error}"]) from error
    return policy_from_values(values)
