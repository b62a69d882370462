"""Trust and readiness against real lab servers: the deployer's ssh logs in only to the pinned
host key and says which key it met otherwise (without ever offering a login); its private key
lives in memory only, so a step killed with SIGKILL leaves nothing behind; the readiness step
gets through a booting server (sshd late, on 22 with the image's key, moved and re-keyed by the
first-boot step, cloud-init running, the package lock held) and gives up clearly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardened_lightsail.config import settings_from_values
from hardened_lightsail.host_keys import PublicHostKey, generate_host_key
from hardened_lightsail.release import render_release
from hardened_lightsail.ssh_session import HostKeyMismatch, SshEndpoint, run_remote
from lab.boot import BootPlan
from lab.topology import ADMIN_CIDRS

pytestmark = pytest.mark.netfilter
PROJECT_DIR = Path(__file__).resolve().parent.parent
HL_STEP = str(PROJECT_DIR / "scripts" / "hl-step")
OPEN_SSH_PORTS = [{"protocol": "tcp", "fromPort": port, "toPort": port, "cidrs": ["0.0.0.0/0"], "ipv6Cidrs": ["::/0"],
                   "cidrListAliases": []} for port in (22, 2222)]


def pinned_key(lab) -> str:
    return Path(str(lab.layout.host_key) + ".pub").read_text().strip()


def endpoint(lab, host_key: str, port: int = 22, private_key: str | None = None) -> SshEndpoint:
    return SshEndpoint(lab.server_ipv4, port, "root", private_key or lab.layout.client_key.read_text(), host_key)


def step_environment(end: SshEndpoint, **extra) -> dict:
    return {**os.environ, "HL_SSH_HOST": end.host, "HL_SSH_PORT": str(end.port), "HL_SSH_USER": end.user,
            "HL_SSH_KEY": end.private_key, "HL_SSH_HOST_KEY": end.host_key, **extra}


def sshd_log(lab) -> str:
    return lab.layout.log_file("sshd").read_text()


def test_ssh_logs_in_to_the_pinned_key_only_and_names_the_key_it_met(lab):
    assert run_remote(endpoint(lab, pinned_key(lab)), "echo pinned").stdout == "pinned\n"
    logins_before = sshd_log(lab).count("Accepted publickey")
    impostor = PublicHostKey.parse(generate_host_key("someone else")[1])
    with pytest.raises(HostKeyMismatch) as raised:
        run_remote(endpoint(lab, impostor.line), "echo never")
    served = PublicHostKey.parse(pinned_key(lab))
    assert str(raised.value).startswith(f"host key mismatch at {lab.server_ipv4}:22: expected ED25519 "
                                        f"{impostor.fingerprint} ")
    assert f"the server offered ED25519 {served.fingerprint}." in str(raised.value)
    time.sleep(0.5)  # sshd's log line of a login would be written by now
    log = sshd_log(lab)
    assert log.count("Accepted publickey") == logins_before
    assert "authenticating user" not in log, "a login was offered to a server with the wrong key"


def _unique_deployer_key(lab, tmp_path) -> str:
    """A deployer key of its own for the test (authorized on the lab server), so that any copy of
    it found on disk afterwards can only be a leak."""
    key = tmp_path / "deployer"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sigkill-test", "-f", str(key)], check=True)
    with open(lab.layout.authorized_keys, "a") as authorized:
        authorized.write((tmp_path / "deployer.pub").read_text())
    private = key.read_text()
    key.unlink()
    return private


def _files_holding(secret_line: str, roots: list[Path]) -> list[str]:
    found = []
    for root in roots:
        for directory, names, files in os.walk(root):
            names[:] = [n for n in names if n not in (".venv", ".tools", ".git", "node_modules")]
            for name in files:
                path = os.path.join(directory, name)
                try:
                    if os.path.isfile(path) and os.path.getsize(path) < 1_000_000 and \
                            secret_line.encode() in Path(path).read_bytes():
                        found.append(path)
                except OSError:
                    continue
    return found


def _memory_files(pid: int) -> list[str]:
    names = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            names.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return [name for name in names if name.startswith("/memfd:")]


def _wait_for_ssh_child(pid: int, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        children = subprocess.run(["ps", "-o", "comm=", "--ppid", str(pid)], capture_output=True, text=True).stdout
        if "ssh" in children.split():
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} started no ssh within {within} s")


def _read_until(stream, text: str, within: float = 30) -> str:
    """The step's output up to the first line holding `text` (the step is then where the test wants it)."""
    seen, deadline = [], time.monotonic() + within
    while time.monotonic() < deadline:
        line = stream.readline().decode(errors="replace")
        seen.append(line)
        if text in line:
            return "".join(seen)
        if not line:
            break
    raise AssertionError(f"no {text!r} in the step's output: {''.join(seen)}")


@pytest.mark.parametrize("what", ["deploy step", "ready step", "host state read"])
def test_a_step_killed_with_sigkill_leaves_no_key_anywhere(lab, tmp_path, what):
    private = _unique_deployer_key(lab, tmp_path)
    secret_line = private.splitlines()[2]  # a line of key material, not the armour
    end = endpoint(lab, pinned_key(lab), private_key=private)
    policy = settings_from_values({"target": "lab", "firewall": {"adminCidrs": list(ADMIN_CIDRS)}}).firewall
    release = render_release(policy)
    release_dir = release.write(tmp_path / "release")
    if what == "deploy step":
        argv = [HL_STEP, "deploy"]
        env = step_environment(end, HL_REMOTE_DIR="/nonexistent", HL_RELEASE=release.hash,
                               HL_RELEASE_DIR=str(release_dir), HL_CONFIRM_TIMEOUT="30", HL_ADDRESSES="[]")
    elif what == "ready step":  # the server says cloud-init runs: the step keeps logging in to ask again
        argv = [HL_STEP, "ready"]
        env = step_environment(end, HL_READY_TIMEOUT="60")
    else:
        props = {"host": end.host, "port": end.port, "user": "root", "privateKey": private, "hostKey": end.host_key,
                 "remoteDir": "/nonexistent", "release": release.hash}
        argv = [sys.executable, "-c", "import json, sys; from components.host_state import HostStateProvider; "
                                      "print(HostStateProvider().read('id', json.loads(sys.argv[1])).outs['hostState'])",
                json.dumps(props)]
        env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    sshd = int(lab.layout.pid_file("sshd").read_text())
    step = None
    if what == "ready step":
        lab.layout.cloud_init_status.write_text("running\n")
        step = subprocess.Popen(argv, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _read_until(step.stdout, "cloud-init running")  # past the key scan, logging in again and again
    os.kill(sshd, signal.SIGSTOP)  # the step's ssh hangs on the server's banner: mid-run, key in hand
    try:
        if step is None:
            step = subprocess.Popen(argv, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        python = step.pid  # scripts/hl-step execs python: the same pid
        _wait_for_ssh_child(python)
        held = _memory_files(python)
        assert "/memfd:hl-ssh-key (deleted)" in held and "/memfd:hl-known-hosts (deleted)" in held, held
        step.send_signal(signal.SIGKILL)  # what the command provider does to a cancelled step
        step.wait(timeout=10)
    finally:
        os.kill(sshd, signal.SIGCONT)
        lab.layout.cloud_init_status.write_text("done\n")
    assert step.returncode == -signal.SIGKILL
    time.sleep(0.5)
    assert not [name for name in os.listdir("/tmp") if name.startswith("hl-ssh-")]
    leaks = _files_holding(secret_line, [Path("/tmp"), PROJECT_DIR, Path(os.environ.get("TMPDIR", "/tmp"))])
    assert leaks == [], f"the private key was written to {leaks}"


def test_readiness_gets_through_a_booting_server_that_moves_sshd_and_installs_the_pinned_key(lab_factory, tmp_path):
    ports = tmp_path / "ports.json"
    ports.write_text(json.dumps(OPEN_SSH_PORTS))
    private, public = generate_host_key("booting")
    started = time.monotonic()
    booting = lab_factory.up(cloud_ports=ports, host_keys=[(private, public)], boot=BootPlan(8, ssh_port=2222))
    end = endpoint(booting, public, port=2222)
    ready = subprocess.run([HL_STEP, "ready", "--first-contact"], env=step_environment(end, HL_READY_TIMEOUT="60",
                           HL_FIRST_BOOT_KEY_GRACE="30"), capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert ready.returncode == 0, ready.stdout + ready.stderr
    output = ready.stdout
    assert ready.stderr == ""
    assert "2222 refused: sshd is not there yet (port 22: connected; a fresh server's sshd is on 22 until its " \
           "first-boot step moves it to 2222)" in output, output
    assert f"offers the pinned host key ED25519 {PublicHostKey.parse(public).fingerprint}" in output
    assert "cloud-init running, package lock held (/var/lib/dpkg/lock-frontend): waiting" in output, output
    assert output.rstrip().endswith("answers with its pinned host key; cloud-init done, package lock free"), output
    assert took >= 8 - 1, "ready before the boot was over"
    # Once booted, a later contact is quick and has nothing to wait for.
    again = subprocess.run([HL_STEP, "ready"], env=step_environment(end), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "waiting" not in again.stdout, again.stdout + again.stderr
    # This machine's own package lock was never touched: the server held a lab file of its own.
    holders = subprocess.run(["fuser", "/var/lib/dpkg/lock-frontend"], capture_output=True, text=True)
    assert holders.stdout.strip() == "" or str(os.getpid()) not in holders.stdout


def test_the_image_key_is_refused_at_once_when_this_is_not_the_first_contact(lab_factory):
    private, public = generate_host_key("booting")
    booting = lab_factory.up(host_keys=[(private, public)], boot=BootPlan(16))
    end = endpoint(booting, public)
    started = time.monotonic()
    ready = subprocess.run([HL_STEP, "ready"], env=step_environment(end, HL_READY_TIMEOUT="60"),
                           capture_output=True, text=True, timeout=120)
    assert ready.returncode == 1
    image = PublicHostKey.parse(Path(str(booting.layout.image_host_key) + ".pub").read_text())
    assert ready.stderr.startswith(f"host key mismatch at {booting.server_ipv4}:22: expected ED25519 "
                                   f"{PublicHostKey.parse(public).fingerprint} "), ready.stderr
    assert f"the server offered ED25519 {image.fingerprint}" in ready.stderr
    assert time.monotonic() - started < 8, "not a retry: the image's key phase ends at 8 s"


def test_a_server_that_never_answers_ends_the_wait_with_one_clear_line(lab):
    end = endpoint(lab, pinned_key(lab), port=2200)  # the edge lets nothing in on 2200
    ready = subprocess.run([HL_STEP, "ready", "--first-contact"], env=step_environment(end, HL_READY_TIMEOUT="3"),
                           capture_output=True, text=True, timeout=60)
    assert ready.returncode == 1
    assert ready.stderr.strip() == (
        f"the server at {lab.server_ipv4}:2200 was not ready within 3 s: nothing accepts SSH connections at "
        f"{lab.server_ipv4}:2200 (no answer). Nothing was pushed; the next `pulumi up` waits again (check the "
        "instance's console and /var/log/cloud-init-output.log)")
    assert "2200 no answer: sshd is not there yet" in ready.stdout
