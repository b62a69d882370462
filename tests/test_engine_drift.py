"""Drift of every kind the project owns (a v4 rule, a v6 rule, an ipset member, a persisted boot
file, a flushed INPUT chain, the release copy gone), through the real engine against a lab stack:
it shows on `preview --refresh` as a change of the server's host state, with the reason, and a
plain `up` after a refresh repairs it through the full commit-confirm and verification."""
from __future__ import annotations

import pytest
from host_truth_stack import BASE, MARKS, host_truth_stack

pytestmark = MARKS


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from host_truth_stack("hostdrift", tmp_path_factory)


# (host command, what the reason must name), one per kind of drift of what the project owns.
DRIFTS = [
    pytest.param("iptables -I HL-INPUT 1 -p tcp --dport 80 -j DROP", "live v4", id="v4 rule"),
    pytest.param("ip6tables -I HL-INPUT 1 -p tcp --dport 443 -j ACCEPT", "live v6", id="v6 rule"),
    pytest.param("ipset add hl-blocklist-v4 203.0.113.251", "hl-blocklist-v4", id="ipset member"),
    pytest.param("echo '# edited by hand' >> /etc/iptables/rules.v4", "/etc/iptables/rules.v4", id="persisted file"),
    # INPUT's policy stays ACCEPT (the project's chain ends with the DROP), so the host stays
    # reachable and the lost jump shows.
    pytest.param("iptables -F INPUT", "live v4", id="flushed INPUT"),
    # The deployer's copy in the login home is gone too: the refresh reads the payload's own
    # stored copy, and the repair sends the release again.
    pytest.param("rm -rf /root/.hardened-lightsail-*; iptables -I HL-INPUT 1 -p tcp --dport 443 -j DROP", "live v4",
                 id="release copy removed"),
]


@pytest.mark.parametrize("command,reason", DRIFTS)
def test_drift_shows_on_preview_refresh_and_up_repairs_it(stack, command, reason):
    stack.write(BASE)
    stack.pulumi(stack.up)
    clean = stack.pulumi(stack.preview_refresh)
    assert "hostState" not in clean.stdout, clean.stdout

    stack.on_host(command)
    preview = stack.pulumi(stack.preview_refresh)
    changed = [line for line in preview.stdout.splitlines() if "hostState" in line]
    assert changed and "drift:" in changed[0] and reason in changed[0] and '"in sync"' in changed[0], preview.stdout
    assert "lab-firewall-deploy" in preview.stdout

    # refresh alone records it; a plain `up` then repairs it through commit-confirm.
    stack.pulumi(["refresh", "-s", stack.name, "--yes", "--non-interactive"])
    repaired = stack.pulumi(stack.up)
    assert "lab-firewall-deploy" in repaired.stdout
    drift = stack.on_host("sh /var/lib/hardened-lightsail/releases/$(sed -n 's/^release=//p' "
                          "/var/lib/hardened-lightsail/state)/hlfw drift --release "
                          f"{stack.outputs()['releaseHash']}")
    assert "in_sync=yes" in drift.stdout, drift.stdout
    after = stack.pulumi(stack.preview_refresh)
    assert "hostState" not in after.stdout, after.stdout
    stack.assert_confirmed_after_the_deadline()


