"""firewall.docker (issue 11): Docker-published ports reach containers through nat PREROUTING and
FORWARD, never INPUT; the payload puts the policy in front of them through DOCKER-USER.

Docker can't run here, so lab/docker_layout.py reproduces Docker 29.7.2's documented iptables
layout (its chains, FORWARD jumps, DNAT per published port, the raw guard) in a payload sandbox,
with a container namespace behind a bridge and a client namespace holding two addresses: one
the policy allows to reach the published database port, one it does not. Real TCP and HTTP
from the client, through apply, rollback and both boot orders."""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time

import pytest

from lab.docker_layout import BRIDGE, DockerLayout, PublishedPort
from lab.netns import add_namespace, delete_namespace, ip, namespace_pids
from lab.processes import stop_pids

from payload_fixtures import apply, confirm, host, machine_is_untouched  # noqa: F401 (fixtures)

pytestmark = pytest.mark.netfilter

HOST_ADDRESS, ALLOWED, STRANGER = "203.0.113.1", "203.0.113.10", "203.0.113.20"
WEB, DATABASE = 80, 5432
JUMP = "-A DOCKER-USER -m comment --comment \"hardened-lightsail: the policy for Docker-published ports\" -j HL-DOCKER"

# In the client namespace: TCP connects from a given source; "open", "refused" or "filtered".
PROBE = """import json, socket, sys
source, target, ports = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
found = {}
for port in ports:
    s = socket.socket(); s.settimeout(1.5); s.bind((source, 0))
    try:
        s.connect((target, port))
        if port == 80:
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); found[port] = s.recv(64).decode(errors="replace").split("\\r\\n")[0]
        else:
            found[port] = "open"
    except socket.timeout:
        found[port] = "filtered"
    except ConnectionRefusedError:
        found[port] = "refused"
    finally:
        s.close()
print(json.dumps(found))
"""
# In the container namespace: a web server and a database port, both answering.
CONTAINER = """import http.server, socket, threading
db = socket.socket(); db.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); db.bind(("0.0.0.0", 5432)); db.listen()
threading.Thread(target=lambda: [db.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()
http.server.HTTPServer(("0.0.0.0", 80), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def release(tmp_path, name, docker="on", database_sources=(f"{ALLOWED}/32",)):
    from hardened_lightsail.config import settings_from_values
    from hardened_lightsail.release import render_release
    policy = settings_from_values({"firewall": {
        "adminCidrs": ["198.51.100.10/32"],
        "services": [{"name": "web", "protocol": "tcp", "ports": str(WEB)},
                     {"name": "db", "protocol": "tcp", "ports": str(DATABASE), "sources": list(database_sources)}],
        "docker": docker}}).firewall
    rendered = render_release(policy)
    return rendered.write(tmp_path / name), rendered.hash


@pytest.fixture
def docker_host(host, tmp_path):
    """(sandbox, Docker, client namespace): the container serving, Docker's rules not yet added."""
    tag = secrets.token_hex(3)
    container, client = f"hl-dk{tag}-ctr", f"hl-dk{tag}-cli"
    docker = DockerLayout(host.netns, container, [PublishedPort(WEB, WEB), PublishedPort(DATABASE, DATABASE)],
                          run=lambda argv: host.netns_run(list(argv), check=False))
    try:
        add_namespace(client)
        ip(client, "link", "add", "eth0", "type", "veth", "peer", "name", "dk-client", "netns", host.netns)
        ip(host.netns, "address", "add", f"{HOST_ADDRESS}/24", "dev", "dk-client")
        ip(host.netns, "link", "set", "dk-client", "up")
        for address in (ALLOWED, STRANGER):
            ip(client, "address", "add", f"{address}/24", "dev", "eth0")
        ip(client, "link", "set", "eth0", "up")
        docker.create_network()
        subprocess.Popen(["ip", "netns", "exec", container, sys.executable, "-c", CONTAINER], cwd=str(tmp_path),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        yield host, docker, client
    finally:
        docker.remove_network()
        stop_pids(namespace_pids(client))
        delete_namespace(client)


def reach(client: str, source: str) -> dict:
    result = subprocess.run(["ip", "netns", "exec", client, sys.executable, "-c", PROBE, source, HOST_ADDRESS,
                             json.dumps([WEB, DATABASE])], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return {int(port): state for port, state in json.loads(result.stdout).items()}


def wait_for_the_container(client: str) -> None:
    deadline = time.monotonic() + 15
    while reach(client, ALLOWED) != {WEB: "HTTP/1.0 200 OK", DATABASE: "open"}:
        assert time.monotonic() < deadline, "the published container never answered"
        time.sleep(0.3)


POLICY = {ALLOWED: {WEB: "HTTP/1.0 200 OK", DATABASE: "open"},
          STRANGER: {WEB: "HTTP/1.0 200 OK", DATABASE: "filtered"}}


def exposure(client) -> dict:
    return {source: reach(client, source) for source in (ALLOWED, STRANGER)}


def apply_and_confirm(sandbox, directory, release_hash) -> None:
    applied = apply(sandbox, directory)
    assert applied.returncode == 0, applied.stderr
    confirmed = confirm(sandbox, release_hash)
    assert confirmed.returncode == 0, confirmed.stderr


def reboot(sandbox) -> None:
    """What a reboot leaves: no rules, no sets (the bridge and container stay: they are not
    netfilter)."""
    for table in ("filter", "nat", "raw"):
        sandbox.netns_run(["iptables", "-t", table, "-F"])
        sandbox.netns_run(["iptables", "-t", table, "-X"])
    sandbox.flush_everything()


def test_published_ports_follow_the_policy_and_docker_keeps_working_through_apply_and_rollback(docker_host, tmp_path):
    sandbox, docker, client = docker_host
    docker.start()
    wait_for_the_container(client)
    # Control: Docker publishes on every address to everyone; INPUT's rules say nothing about it.
    assert exposure(client)[STRANGER][DATABASE] == "open"
    dockers_rules = docker.rules()

    apply_and_confirm(sandbox, *release(tmp_path, "on"))

    assert exposure(client) == POLICY
    assert docker.rules() == dockers_rules
    assert sandbox.rules("v4").count(JUMP) == 1
    # A release that opens the database to everyone, applied, then rolled back: Docker's rules
    # are untouched throughout and the stranger is filtered again.
    directory, _ = release(tmp_path, "open-db", database_sources=("0.0.0.0/0",))
    assert apply(sandbox, directory).returncode == 0
    assert exposure(client)[STRANGER][DATABASE] == "open"
    assert sandbox.hlfw("rollback").returncode == 0
    assert exposure(client) == POLICY
    assert docker.rules() == dockers_rules


@pytest.mark.parametrize("docker_first", [False, True], ids=["rules-then-docker", "docker-then-rules"])
def test_boot_in_either_order_keeps_dockers_rules_and_the_policy(docker_host, tmp_path, docker_first):
    sandbox, docker, client = docker_host
    docker.start()
    wait_for_the_container(client)
    dockers_rules = docker.rules()
    apply_and_confirm(sandbox, *release(tmp_path, "auto", docker="auto"))
    assert exposure(client) == POLICY

    reboot(sandbox)
    if docker_first:
        docker.start()
    booted = sandbox.hlfw("boot-load")
    assert booted.returncode == 0, booted.stderr
    if not docker_first:
        docker.start()

    assert exposure(client) == POLICY
    assert docker.rules() == dockers_rules
    assert sandbox.rules("v4").count(JUMP) == 1


def test_with_docker_auto_a_docker_started_after_the_apply_is_drift_and_the_next_apply_covers_it(docker_host, tmp_path):
    sandbox, docker, client = docker_host
    directory, release_hash = release(tmp_path, "auto", docker="auto")
    apply_and_confirm(sandbox, directory, release_hash)
    assert sandbox.rules("v4").count(JUMP) == 0  # no Docker, no DOCKER-USER made
    assert BRIDGE in ip(sandbox.netns, "link", "show").stdout

    docker.start()
    wait_for_the_container(client)
    drift = sandbox.hlfw("drift", "--release", release_hash)
    assert drift.returncode == 1
    assert (f"drift: v4: Docker runs but its published ports are not under the policy: release {release_hash} "
            "was applied before Docker's chains were there (firewall.docker: auto)") in drift.stdout.splitlines()

    apply_and_confirm(sandbox, directory, release_hash)

    assert exposure(client) == POLICY
    assert sandbox.hlfw("drift", "--release", release_hash).returncode == 0
