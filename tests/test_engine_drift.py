"""Drift of the live rules the project owns (a v4 rule, a v6 rule, a flushed INPUT chain),
through the real engine against a lab stack: it shows on `preview --refresh` as a change of the
server's host state, with the reason, and a plain `up` after a refresh repairs it through the
full commit-confirm and verification. Drift of the host's stored state (ipset members, persisted
files, the release copy): tests/test_engine_drift_state.py, a stack of its own run beside."""
from __future__ import annotations

import pytest
from host_truth_stack import MARKS, drift_shows_and_up_repairs_it, host_truth_stack

pytestmark = MARKS


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from host_truth_stack("hostdrift", tmp_path_factory)


# (host command, what the reason must name, wait past the confirm deadline).
@pytest.mark.parametrize("command,reason,past_the_deadline", [
    pytest.param("iptables -I HL-INPUT 1 -p tcp --dport 80 -j DROP", "live v4", True, id="v4 rule"),
    pytest.param("ip6tables -I HL-INPUT 1 -p tcp --dport 443 -j ACCEPT", "live v6", False, id="v6 rule"),
    # INPUT's policy stays ACCEPT (the project's chain ends with the DROP), so the host stays
    # reachable and the lost jump shows.
    pytest.param("iptables -F INPUT", "live v4", False, id="flushed INPUT"),
])
def test_drift_of_live_rules_shows_on_preview_refresh_and_up_repairs_it(stack, command, reason, past_the_deadline):
    drift_shows_and_up_repairs_it(stack, command, reason, past_the_deadline)
