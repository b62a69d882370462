"""A documentation address is only ever reached through a route of its own: with a lab down, only
the default route would lead there (out of this machine), and the deployer's SSH refuses first.

The check runs in a network namespace this test creates (a default route over a link of its own,
then a lab-like route) and deletes; nothing is sent anywhere."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hardened_lightsail.documentation_routes import unrouted_documentation_address

REPO = Path(__file__).resolve().parent.parent
NAMESPACE_PREFIX = "hlt-docroute-"

pytestmark = [
    pytest.mark.netfilter,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]

# In the namespace: the verdict for each address, and what run_remote does with the first one.
# The test's namespace stands in for this machine's own (where the default route leads off the
# machine) unless the first argument is "as-a-lab-namespace".
PROBE = """
import json, sys
from hardened_lightsail import documentation_routes
from hardened_lightsail.documentation_routes import unrouted_documentation_address
from hardened_lightsail.ssh_session import SshEndpoint, run_remote
addresses = sys.argv[1:]
if addresses[0] == "as-a-lab-namespace":
    addresses = addresses[1:]
else:
    documentation_routes.namespace_name = lambda: ""
result = run_remote(SshEndpoint(addresses[0], 22, "admin", "unused", "ssh-ed25519 AAAA"), "true")
print(json.dumps({"verdicts": [unrouted_documentation_address(a) for a in addresses],
                  "ssh": [result.args, result.returncode, result.stderr]}))
"""


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespace(request):
    """A namespace whose only way out is a default route over a link of its own (a veth pair with
    both ends inside: nothing leaves it), v4 and v6."""
    name = f"{NAMESPACE_PREFIX}{secrets.token_hex(4)}"
    ip("netns", "add", name)

    def delete():  # even when the test failed
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)
        assert not os.path.exists(f"/run/netns/{name}"), f"namespace {name} outlived its test"
    request.addfinalizer(delete)
    for argv in (("link", "add", "out0", "type", "veth", "peer", "name", "out1"), ("link", "set", "out1", "up"),
                 ("link", "set", "out0", "up"),
                 ("route", "add", "default", "dev", "out0"), ("-6", "route", "add", "default", "dev", "out0")):
        ip("-n", name, *argv)
    return name


def verdicts(namespace: str, *addresses: str) -> dict:
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", PROBE, *addresses],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_lab_address_behind_only_the_default_route_is_refused_before_anything_is_sent(namespace):
    found = verdicts(namespace, "203.0.113.10", "2001:db8:c::10")
    assert all("no route of its own leads there" in verdict for verdict in found["verdicts"]), found
    argv, code, stderr = found["ssh"]
    assert argv == ["ssh", "203.0.113.10"] and code == 255, found  # ssh never ran: no packet left
    assert "its lab is not up. Nothing was sent" in stderr


def test_a_route_of_its_own_lets_it_through(namespace):
    ip("-n", namespace, "route", "add", "203.0.113.0/28", "dev", "out0")
    ip("-n", namespace, "-6", "route", "add", "2001:db8:c::/64", "dev", "out0")
    assert verdicts(namespace, "203.0.113.10", "2001:db8:c::10")["verdicts"] == [None, None]


def test_addresses_that_are_not_documentation_ones_are_not_judged():
    # No route lookup at all: a real server's address, or a host name, is the user's to reach.
    assert unrouted_documentation_address("fd00::10") is None
    assert unrouted_documentation_address("server.example.com") is None


def test_in_a_lab_namespace_the_default_route_is_the_labs_own(namespace):
    # An admin client's or a vantage's namespace reaches the lab's servers through its default
    # route (into the lab's edge): nothing is refused there.
    found = verdicts(namespace, "as-a-lab-namespace", "203.0.113.10", "2001:db8:c::10")
    assert found["verdicts"] == [None, None], found
    assert found["ssh"][0][0] == "ssh" and len(found["ssh"][0]) > 2  # ssh itself ran (and failed: no server)
