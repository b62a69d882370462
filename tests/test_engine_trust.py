"""No trust on first use, through the real engine against a lab stack whose server boots like a
Lightsail instance (lab.bootSeconds):
- `up` from nothing gets through the boot (sshd late, the image's key, cloud-init, the package
  lock) with its own readiness wait, whichever command provider runs (HL_COMMAND_PROVIDER), and
  says how long nothing -> verified took;
- an impostor sshd at the server's address with another host key: the next `up` stops before
  anything is pushed, saying host key mismatch, the fingerprint expected and the one offered,
  and no login is ever offered to it; `preview --refresh` reads the host as unreachable for the
  same reason; with the real server back, `up` goes through."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from hardened_lightsail.config import settings_from_values
from hardened_lightsail.effective_settings import effective_settings
from hardened_lightsail.host_keys import PublicHostKey, generate_host_key
from hardened_lightsail.release import render_release
from lab.identity import stack_lab
from lab.layout import LabLayout
from lab.lifecycle import lab_up
from lab.processes import running_pid, stop_pids

from engine import PROJECT_DIR, command_provider_under_test, engine_missing_reason, pulumi, remove_lab_stack

STACK = "trusttest"
LAB = stack_lab(PROJECT_DIR, STACK)
BOOT_SECONDS = 12
pytestmark = [pytest.mark.engine, pytest.mark.netfilter,
              pytest.mark.skipif(engine_missing_reason() is not None, reason=engine_missing_reason() or ""),
              pytest.mark.skipif(os.geteuid() != 0, reason="the lab makes network namespaces: needs root")]
UP = ["up", "-s", STACK, "--yes", "--skip-preview", "--non-interactive"]
BASE = {"adminCidrs": ["192.0.2.0/24", "2001:db8:a::/48"], "confirmTimeoutSeconds": 20,
        "services": [{"name": "http", "protocol": "tcp", "ports": "80"}]}


def _write_stack(firewall: dict) -> None:
    config = {"config": {"hardened-lightsail:target": "lab", "hardened-lightsail:lab": {"bootSeconds": BOOT_SECONDS},
                         "hardened-lightsail:firewall": firewall}}
    (PROJECT_DIR / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    backend = tmp_path_factory.mktemp("backend")
    _write_stack(BASE)
    pulumi(["stack", "init", STACK], backend)
    yield backend
    remove_lab_stack(STACK, backend)


class Impostor:
    """Another sshd at the lab server's address, with a host key of its own: the real sshd is
    stopped (by its pid file), this one listens on 22 in the server's network namespace."""

    def __init__(self, directory: Path, namespace: str):
        self.directory, self.namespace = directory, namespace
        private, public = generate_host_key("impostor")
        self.key = PublicHostKey.parse(public)
        (directory / "host_key").write_text(private)
        (directory / "host_key").chmod(0o600)
        self.log, self.pid_file = directory / "sshd.log", directory / "sshd.pid"
        (directory / "sshd_config").write_text(
            f"Port 22\nListenAddress 0.0.0.0\nListenAddress ::\nHostKey {directory / 'host_key'}\n"
            f"PidFile {self.pid_file}\nAuthorizedKeysFile /dev/null\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nLogLevel VERBOSE\n")

    def __enter__(self) -> Impostor:
        # Stopped by its pid file only while that pid is still the lab's sshd (its command line
        # names the lab directory): a stale number may be another lab's process by now.
        real = running_pid(LabLayout(LAB.state_dir).pid_file("sshd"), str(LAB.state_dir))
        assert real is not None, "the lab's sshd is not running: the impostor would prove nothing"
        assert not stop_pids([real]), f"the lab's sshd (pid {real}) survived SIGKILL"
        subprocess.run(["ip", "netns", "exec", self.namespace, "/usr/sbin/sshd", "-f",
                        str(self.directory / "sshd_config"), "-E", str(self.log)], check=True, timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        impostor = running_pid(self.pid_file, str(self.directory / "sshd_config"))
        if impostor is not None:
            assert not stop_pids([impostor]), f"the impostor sshd (pid {impostor}) survived SIGKILL"
        # The real server back: the lab completes itself (its sshd, with the key it has); the
        # edge keeps the cloud layer the stack gave it, as Lightsail's firewall would.
        lab_up(LAB.name, LAB.state_dir, keep_cloud_layer=True)


def test_a_booting_server_then_an_impostor_stops_up_before_anything_is_pushed(stack, tmp_path):
    backend = stack
    provider = command_provider_under_test() or "this project's build"
    started = time.monotonic()
    first = pulumi(UP, backend)
    boot_to_verified = time.monotonic() - started
    print(f"\nbooting lab server ({BOOT_SECONDS} s boot), nothing -> verified: {boot_to_verified:.1f} s "
          f"(command provider: {provider})")
    outputs = json.loads(pulumi(["stack", "output", "-s", STACK, "--json"], backend).stdout)
    assert "verified:" in outputs["verifiedExposure"]
    assert "offers the pinned host key ED25519 SHA256:" in first.stdout
    assert re.search(r"ready: cloud-init running, package lock held", first.stdout), first.stdout
    assert boot_to_verified >= BOOT_SECONDS
    pinned = PublicHostKey.parse(Path(str(LabLayout(LAB.state_dir).host_key) + ".pub").read_text())

    # An impostor answers at the server's address; a change to push: `up` stops at the readiness step.
    port = 8000 + int(time.time()) % 1000  # a release nobody has pushed before
    changed = dict(BASE, services=BASE["services"] + [{"name": "alt", "protocol": "tcp", "ports": str(port)}])
    _write_stack(changed)
    with Impostor(tmp_path, outputs["labServerNamespace"]) as impostor:
        refused = pulumi(UP, backend, check=False)
        text = refused.stdout + refused.stderr
        assert refused.returncode != 0
        assert (f"host key mismatch at {outputs['publicIp']}:22: expected ED25519 {pinned.fingerprint} (the key "
                f"this stack made for the server and installed at its first boot), the server offered ED25519 "
                f"{impostor.key.fingerprint}.") in text, text
        assert "Traceback" not in text
        # Nothing was pushed: no step after the readiness wait ran, no release directory appeared.
        assert not re.search(r"lab-firewall-(copy|deploy) +(creating|updating)", text), text
        new_release = render_release(effective_settings(settings_from_values(
            {"target": "lab", "firewall": changed})).firewall).hash
        home = LabLayout(LAB.state_dir).login_home  # the lab server's login home (lab/layout.py)
        assert home.is_dir() and not (home / f".hardened-lightsail-{new_release}").exists()
        log = impostor.log.read_text()
        assert "Connection from" in log, "the impostor was never contacted: the test proves nothing"
        assert "publickey" not in log and "authenticating user" not in log, "a login was offered to the impostor"

        # The read-back says the same.
        refreshed = pulumi(["preview", "--refresh", "-s", STACK, "--non-interactive", "--diff"], backend,
                           check=False).stdout
        assert re.search(r'hostState *: .*"unreachable: host key mismatch at \S+: expected ED25519 '
                         + re.escape(pinned.fingerprint), refreshed), refreshed

    # The real server is back: the same `up` goes through, with the key it pinned.
    again = pulumi(UP, backend)
    assert "answers with its pinned host key" in again.stdout
    assert (LabLayout(LAB.state_dir).login_home / f".hardened-lightsail-{new_release}").exists()
