"""Reading a server (hardened_lightsail/live_host.py) without one: the login parsed, the ssh
command line (the user's own ssh, host keys checked), the script's sections read back, a stack's
sshCommand output followed, and SSH failures turned into advice. (Over real SSH in the lab:
tests/test_live_host.py.)"""
import subprocess

import pytest

from hardened_lightsail.live_host import (
    LOG_SCRIPT,
    RULES_SCRIPT,
    SCRIPT_HEAD,
    HostError,
    SshTarget,
    _rules_from,
    _ssh_failure,
    parse_sections,
    target_from_ssh_command,
)


def test_a_login_is_user_at_address_with_ipv6_bare_or_bracketed():
    assert SshTarget.parse("ubuntu@203.0.113.10") == SshTarget("ubuntu", "203.0.113.10")
    assert SshTarget.parse("admin@[2001:db8::10]").address == "2001:db8::10"
    assert SshTarget.parse("admin@2001:db8::10").address == "2001:db8::10"
    assert str(SshTarget("admin", "2001:db8::10", port=2222)) == "admin@[2001:db8::10] port 2222"
    for bad in ("203.0.113.10", "@203.0.113.10", "ubuntu@", "ubuntu @host",
                # ssh would read these as options (ProxyCommand runs a command here) or split them
                "-oProxyCommand=touch${IFS}/tmp/hl-pwned@host", "ubuntu@-oProxyCommand=id", "ubuntu@host\n",
                "ubuntu@host;id", "ubu$(id)ntu@host", "ubuntu@[-oProxyCommand=id]"):
        with pytest.raises(HostError, match="give the login as USER@ADDRESS"):
            SshTarget.parse(bad)


def test_ssh_runs_in_batch_mode_and_checks_the_host_key_it_is_given():
    argv = SshTarget("root", "192.0.2.10", port=2222, identity="/k/id", known_hosts="/k/known").argv()
    assert argv == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ControlMaster=no",
                    "-o", "ControlPath=none", "-p", "2222", "-i", "/k/id", "-o", "IdentitiesOnly=yes",
                    "-o", "UserKnownHostsFile=/k/known", "-o", "StrictHostKeyChecking=yes", "root@192.0.2.10",
                    "sh", "-s"]
    assert "StrictHostKeyChecking=no" not in SshTarget("root", "192.0.2.10").argv()  # your known_hosts decides


def test_a_stacks_ssh_command_gives_user_address_port_key_and_options():
    lab = target_from_ssh_command("ssh -i /p/.lab/lab/ssh/id_ed25519 -o StrictHostKeyChecking=no "
                                  "-o UserKnownHostsFile=/dev/null root@203.0.113.10")
    assert lab == SshTarget("root", "203.0.113.10", identity="/p/.lab/lab/ssh/id_ed25519",
                            options=("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"))
    lightsail = target_from_ssh_command("ssh -p 2222 ubuntu@198.51.100.20", identity="~/key.pem")
    assert (lightsail.user, lightsail.port, lightsail.identity) == ("ubuntu", 2222, "~/key.pem")
    pinned = target_from_ssh_command("ssh -o StrictHostKeyChecking=no root@192.0.2.1", known_hosts="/k")
    assert pinned.options == () and pinned.known_hosts == "/k"  # your pinned key wins over the lab's "no"


def test_the_scripts_sections_come_back_with_stdout_stderr_and_status():
    script = SCRIPT_HEAD + "capture greet sh -c 'echo hello; echo oops >&2; exit 3'\ncapture quiet true\n"
    result = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, check=True)
    sections = parse_sections(result.stdout)
    assert (sections["greet"].stdout, sections["greet"].stderr, sections["greet"].status) == ("hello\n", "oops\n", 3)
    assert (sections["quiet"].stdout, sections["quiet"].status) == ("", 0)


def test_the_rules_script_is_posix_sh_and_reads_nothing_it_cannot_run(tmp_path):
    """Run where iptables-save is missing: the failure names the tool, nothing crashes."""
    (tmp_path / "id").write_text("#!/bin/sh\n[ \"$1\" = -u ] && echo 0 || echo tester\n")
    (tmp_path / "id").chmod(0o755)
    result = subprocess.run(["sh", "-s"], input=SCRIPT_HEAD + RULES_SCRIPT, capture_output=True, text=True,
                            env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    with pytest.raises(HostError, match="iptables-save is not installed there"):
        _rules_from(SshTarget("tester", "192.0.2.1"), parse_sections(result.stdout))


def test_the_scripts_sent_to_the_server_are_shellcheck_clean_posix_sh(tmp_path):
    script = tmp_path / "read.sh"
    script.write_text(SCRIPT_HEAD + RULES_SCRIPT + LOG_SCRIPT.replace("MINUTES", "60"))
    result = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("stderr, advice", [
    ("Host key verification failed.\n", "the host key is not known (or changed)"),
    ("root@192.0.2.1: Permission denied (publickey).\n", "Give the private key with --identity FILE"),
    ("ssh: connect to host 192.0.2.1 port 22: Connection refused\n", "can't connect over SSH: ssh: connect to host"),
])
def test_ssh_failures_become_advice(stderr, advice):
    assert advice in _ssh_failure(SshTarget("root", "192.0.2.1"), stderr)
