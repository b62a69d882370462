"""Another tool's rule in front of the project's jump counts as drift only when it changes what
the server exposes (hardened_lightsail/foreign_rules.py), judged on the release's own rules."""
import pytest

from hardened_lightsail.foreign_rules import exposure_changes

from golden_cases import load_case


@pytest.fixture(scope="module")
def release_rules():
    _, release = load_case("minimal-web")  # SSH from admins, http and https from anyone
    return {family: release.files[f"rules.v{family}"].decode() for family in (4, 6)}


@pytest.mark.parametrize("family,rule,row", [
    (4, "-A INPUT -p tcp -m tcp --dport 80 -j DROP", "tcp/80 from anyone else open -> closed"),
    (6, "-A INPUT -p tcp -m tcp --dport 443 -j REJECT --reject-with tcp-reset", "tcp/443 from anyone else open -> closed"),
    (4, "-A INPUT -p tcp -m tcp --dport 5432 -j ACCEPT", "tcp/5432 from anyone else closed -> open"),
    (6, "-A INPUT -s 2001:db8:66::/48 -p tcp -m tcp --dport 22 -j ACCEPT", "tcp/22 from 2001:db8:66::/48 closed -> open"),
])
def test_a_rule_that_shadows_or_bypasses_the_policy_is_named_with_the_rows_it_changes(release_rules, family, rule, row):
    changes = exposure_changes(release_rules, {family: [rule]})
    assert len(changes) == 1 and row in changes[0] and rule in changes[0], changes
    assert changes[0].startswith(f"rules of another tool in front of the project's jump change IPv{family} exposure")


@pytest.mark.parametrize("family,rule", [
    (4, "-A INPUT -p tcp -m tcp --dport 23 -j DROP"),  # closed anyway
    (4, "-A INPUT -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -j ACCEPT"),  # the admin: open anyway
    (6, "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT"),  # open to anyone anyway
])
def test_a_rule_that_changes_nothing_the_server_exposes_is_no_drift(release_rules, family, rule):
    assert exposure_changes(release_rules, {family: [rule]}) == []
