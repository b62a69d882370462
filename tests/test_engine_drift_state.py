"""Drift of the host's stored state (an ipset member, a persisted boot file, the release copy in
the login home gone), through the real engine against a lab stack of its own: shown on `preview
--refresh` with the reason, repaired by refresh + `up`. Live rules: tests/test_engine_drift.py."""
from __future__ import annotations

import pytest
from host_truth_stack import MARKS, drift_shows_and_up_repairs_it, host_truth_stack

pytestmark = MARKS


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from host_truth_stack("hoststate", tmp_path_factory)


@pytest.mark.parametrize("command,reason,past_the_deadline", [
    pytest.param("ipset add hl-blocklist-v4 203.0.113.251", "hl-blocklist-v4", True, id="ipset member"),
    pytest.param("echo '# edited by hand' >> /etc/iptables/rules.v4", "/etc/iptables/rules.v4", False,
                 id="persisted file"),
    # The deployer's copy in the login home is gone too: the refresh reads the payload's own
    # stored copy, and the repair sends the release again. (Each lab server has a login home
    # of its own, so this is this server's copy only.)
    pytest.param("rm -rf \"$HOME\"/.hardened-lightsail-{release}; iptables -I HL-INPUT 1 -p tcp --dport 443 -j DROP", "live v4",
                 False, id="release copy removed"),
])
def test_drift_of_stored_state_shows_on_preview_refresh_and_up_repairs_it(stack, command, reason, past_the_deadline):
    drift_shows_and_up_repairs_it(stack, command, reason, past_the_deadline)
