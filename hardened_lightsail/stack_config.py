"""Reads the stack config inside the Pulumi program and stops the run cleanly when it is bad.

The messages are the same lines `scripts/fw check` prints, shown as Pulumi errors without a
traceback, before any resource is registered."""
from __future__ import annotations

from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from .analysis import analyse, errors
from .config import NAMESPACE, ConfigError, parse_value, settings_from_values
from .policy import FirewallPolicy, StackSettings
from .policy_loading import policy_from_values
from .release import Release, render_release


def _config_values() -> dict[str, Any]:
    """Every `hardened-lightsail:*` value the engine handed us (unknown keys included)."""
    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    prefix = NAMESPACE + ":"
    return {key[len(prefix):]: parse_value(value) for key, value in merged.items() if key.startswith(prefix)}


def _stop(problems: list[str], what: str) -> None:
    for problem in problems:
        pulumi.log.error(problem)
    raise pulumi.RunError(f"{what}: {len(problems)} problem(s), listed above; nothing was changed")


def _secret_keys() -> frozenset[str]:
    """The config keys the engine holds as secrets (a nested secret makes its top-level key one)."""
    listed = set(runtime_config.get_config_secret_keys_env())
    keys = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return frozenset(key for key in keys if key in listed or runtime_config.is_config_secret(key))


def read_stack_settings() -> StackSettings:
    try:
        return settings_from_values(_config_values(), pulumi.get_stack(), secret_keys=_secret_keys())
    except ConfigError as error:
        _stop(error.problems, "invalid stack config")
        raise  # unreachable: _stop raises


def policy_from_config(values: Any) -> FirewallPolicy:
    """A program's own `firewall` config value (the keys of this project's `firewall:`) as a
    policy; when it is bad, every problem is a Pulumi error and the run stops untouched."""
    try:
        return policy_from_values(values)
    except ConfigError as error:
        _stop(error.problems, "invalid firewall policy")
        raise  # unreachable: _stop raises


def checked_release(settings: StackSettings) -> Release:
    return checked_policy_release(settings.firewall)


def checked_policy_release(policy: FirewallPolicy) -> Release:
    """Render the release and refuse it when the analysis finds errors (lock-out, mismatch)."""
    release = render_release(policy)
    findings = analyse(policy, release)
    for finding in findings:
        if finding.level != "error":
            pulumi.log.warn(finding.message)
    if errors(findings):
        _stop([f.message for f in errors(findings)], "firewall policy refused")
    return release
