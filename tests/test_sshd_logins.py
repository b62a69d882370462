"""sshd checked, not assumed: with the lab sshd's config varied (passwords, keyboard-interactive,
root with a password, AuthenticationMethods that keeps passwords out), `fw check --host` warns
exactly when a password could get in, and the deploy step's `hlfw verify` says so without failing
`up`. Real sshd (its effective settings from `sshd -T` with the running sshd's own config file),
real SSH, real deploy step."""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from hardened_lightsail.config import settings_from_values
from hardened_lightsail.release import render_release
from lab.services import reload_sshd
from lab.topology import ADMIN_CIDRS

pytestmark = pytest.mark.netfilter
PROJECT_DIR = Path(__file__).resolve().parent.parent
FW, HL_STEP = PROJECT_DIR / "scripts" / "fw", PROJECT_DIR / "scripts" / "hl-step"
LAB_DEFAULTS = {"PermitRootLogin": "prohibit-password", "PasswordAuthentication": "no",
                "KbdInteractiveAuthentication": "no"}
PASSWORDS = "allows password logins (PasswordAuthentication yes)"
KEYBOARD = "allows keyboard-interactive logins (KbdInteractiveAuthentication yes)"
ROOT = "lets root log in with a password (PermitRootLogin yes)"


@pytest.fixture(scope="module")
def sshd(lab, tmp_path_factory):
    """(lab, a function that sets sshd options and reloads it, fw's ssh options); the lab's own
    config comes back at the end."""
    original = lab.layout.sshd_config.read_text()
    known_hosts = tmp_path_factory.mktemp("sshd-logins") / "known_hosts"
    host_key = Path(str(lab.layout.host_key) + ".pub").read_text().split()
    known_hosts.write_text(f"{lab.server_ipv4} {host_key[0]} {host_key[1]}\n")

    def configure(**options: str) -> None:
        settings = {**LAB_DEFAULTS, **options}
        text = re.sub(r"^(PermitRootLogin|PasswordAuthentication|KbdInteractiveAuthentication) .*\n", "", original,
                      flags=re.M)
        text += "".join(f"{key} {value}\n" for key, value in settings.items())  # before any Match block: none here
        lab.layout.sshd_config.write_text(text)
        reload_sshd(lab)
        time.sleep(1)  # sshd re-executes itself on SIGHUP

    yield lab, configure, ["--identity", str(lab.layout.client_key), "--known-hosts", str(known_hosts)]
    lab.layout.sshd_config.write_text(original)
    reload_sshd(lab)


CASES = [
    ({}, []),
    ({"PasswordAuthentication": "yes"}, [PASSWORDS]),
    ({"KbdInteractiveAuthentication": "yes"}, [KEYBOARD]),
    ({"PermitRootLogin": "yes"}, [ROOT]),
    ({"PermitRootLogin": "yes", "PasswordAuthentication": "yes", "KbdInteractiveAuthentication": "yes"},
     [PASSWORDS, KEYBOARD, ROOT]),
    # Keys only, whatever the two say: nothing to warn about.
    ({"PasswordAuthentication": "yes", "KbdInteractiveAuthentication": "yes", "AuthenticationMethods": "publickey"},
     []),
]


@pytest.mark.parametrize("options, expected", CASES, ids=["lab-default", "password", "keyboard-interactive",
                                                          "root-password", "all-three", "keys-only-methods"])
def test_check_host_warns_exactly_when_sshd_lets_a_password_in(sshd, options, expected):
    lab, configure, ssh_options = sshd
    configure(**options)
    result = subprocess.run([str(FW), "check", "--host", f"root@{lab.server_ipv4}", *ssh_options],
                            capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    config = lab.layout.sshd_config
    # The running sshd's own config file was read, not this machine's /etc/ssh/sshd_config.
    assert f"sshd: config={config} " in result.stdout, result.stdout + result.stderr
    assert f"permitrootlogin={options.get('PermitRootLogin', 'without-password').replace('prohibit-password', 'without-password')}" \
        in result.stdout
    warnings = [line for line in result.stdout.splitlines() if line.startswith(f"warning: root@{lab.server_ipv4}: sshd")]
    assert [next(text for text in (PASSWORDS, KEYBOARD, ROOT) if text in line) for line in warnings] == expected, \
        result.stdout
    assert all(f"sshd ({config})" in line for line in warnings)


def test_deploy_step_reports_a_password_sshd_without_failing(sshd, tmp_path):
    lab, configure, _ = sshd
    configure(PasswordAuthentication="yes", PermitRootLogin="yes")
    policy = settings_from_values({"target": "lab", "firewall": {"adminCidrs": list(ADMIN_CIDRS)}}).firewall
    release = render_release(policy)
    release_dir = release.write(tmp_path / "release")
    env = {**os.environ, "HL_SSH_HOST": lab.server_ipv4, "HL_SSH_PORT": "22", "HL_SSH_USER": "root",
           "HL_SSH_KEY": lab.layout.client_key.read_text(),
           "HL_SSH_HOST_KEY": Path(str(lab.layout.host_key) + ".pub").read_text().strip(),
           # The lab server shares this file system: its "home" is a test directory.
           "HL_REMOTE_DIR": str(tmp_path / "home" / f".hardened-lightsail-{release.hash}"), "HL_RELEASE": release.hash,
           "HL_RELEASE_DIR": str(release_dir), "HL_CONFIRM_TIMEOUT": "30",
           "HL_ADDRESSES": f'["{lab.server_ipv4}"]', "HL_VERIFY_SCAN": "quick"}
    result = subprocess.run([str(HL_STEP), "deploy"], cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    config = lab.layout.sshd_config
    assert f"verify on the host: warning: sshd ({config}) {PASSWORDS}" in result.stdout, result.stdout
    assert f"verify on the host: warning: sshd ({config}) {ROOT}" in result.stdout, result.stdout
    assert "verify from outside: verified:" in result.stdout
