"""The host keys the program makes and pins, and the ssh command line that checks them: checked
against OpenSSH's own tools (ssh-keygen), no network."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from hardened_lightsail.host_keys import KNOWN_HOSTS_ALIAS, HostKeyError, PublicHostKey, generate_host_key, offered_keys
from hardened_lightsail.ssh_session import (
    ON_THIS_MACHINE_KEX,
    ON_THIS_MACHINE_VARIABLE,
    SshEndpoint,
    memory_file,
    mismatch_message,
    ssh_options,
)


def test_a_generated_host_key_is_an_openssh_ed25519_key_whose_fingerprint_ssh_keygen_agrees_with(tmp_path):
    private, public = generate_host_key("hardened-lightsail web-0")
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert public.startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5") and public.endswith(" hardened-lightsail web-0")
    key_file = tmp_path / "key"
    key_file.write_text(private)
    key_file.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key_file)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == public.split()[:2]
    listed = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(key_file)], capture_output=True,
                            text=True, check=True)
    assert listed.stdout.split()[1] == PublicHostKey.parse(public).fingerprint
    assert generate_host_key("x")[1].split()[1] != public.split()[1], "every key is new"


def test_keyscan_output_and_key_lines_are_read_strictly():
    first, second = (PublicHostKey.parse(generate_host_key("a")[1]), PublicHostKey.parse(generate_host_key("b")[1]))
    scan = (f"# 192.0.2.10:22 SSH-2.0-OpenSSH_9.2p1\n192.0.2.10 {first.line}\n"
            f"# 192.0.2.10:22 SSH-2.0-OpenSSH_9.2p1\n192.0.2.10 {second.line}\n192.0.2.10 ssh-rsa not-base64!\n")
    assert offered_keys(scan) == [first, second]
    assert str(first) == f"ED25519 {first.fingerprint}"
    assert first.known_hosts_line() == f"{KNOWN_HOSTS_ALIAS} {first.line}\n"
    for bad in ("", "ssh-ed25519", "ssh-ed25519 %%%"):
        with pytest.raises(HostKeyError):
            PublicHostKey.parse(bad)


def test_every_connection_checks_the_pinned_key_strictly_and_offers_only_its_algorithm():
    pinned = PublicHostKey.parse(generate_host_key("a")[1])
    options = ssh_options(pinned, "/proc/1/fd/9", 5)
    pairs = dict(options[index + 1].split("=", 1) for index, word in enumerate(options) if word == "-o")
    assert pairs["StrictHostKeyChecking"] == "yes" and pairs["UserKnownHostsFile"] == "/proc/1/fd/9"
    assert pairs["GlobalKnownHostsFile"] == "/dev/null" and pairs["HostKeyAlias"] == KNOWN_HOSTS_ALIAS
    assert pairs["HostKeyAlgorithms"] == "ssh-ed25519" and pairs["UpdateHostKeys"] == "no"
    assert pairs["BatchMode"] == "yes" and pairs["IdentityAgent"] == "none"
    assert options[:2] == ["-F", "/dev/null"]  # nobody's ssh config changes what is checked
    assert "KexAlgorithms" not in pairs  # OpenSSH's default key exchange (post-quantum hybrid in 9.x)


def test_a_lab_server_on_this_machine_gets_the_cheaper_key_exchange_and_nothing_else_changes():
    pinned = PublicHostKey.parse(generate_host_key("a")[1])
    default, local = (ssh_options(pinned, "/proc/1/fd/9", 5, on_this_machine=flag) for flag in (False, True))
    pairs = dict(local[index + 1].split("=", 1) for index, word in enumerate(local) if word == "-o")
    assert pairs["KexAlgorithms"] == ON_THIS_MACHINE_KEX == "curve25519-sha256"
    assert [word for word in local if not word.startswith("KexAlgorithms=")] == ["-F", "/dev/null", "-o", *default[2:]]
    environment = {"HL_SSH_HOST": "203.0.113.10", "HL_SSH_USER": "root", "HL_SSH_KEY": "k",
                   "HL_SSH_HOST_KEY": pinned.line}
    assert not SshEndpoint.from_environment(environment).on_this_machine
    assert SshEndpoint.from_environment({**environment, ON_THIS_MACHINE_VARIABLE: "1"}).on_this_machine


def test_a_memory_file_is_private_and_on_no_file_system():
    with memory_file("secret text\n", "hl-test") as path:
        assert path == f"/proc/{os.getpid()}/fd/{path.rsplit('/', 1)[1]}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert Path(path).read_text() == "secret text\n"  # what a child opening the path reads
        assert os.readlink(path).startswith("/memfd:hl-test")
    assert not os.path.exists(path)


def test_the_mismatch_message_names_where_what_was_expected_and_what_was_offered():
    pinned, other = (PublicHostKey.parse(generate_host_key(name)[1]) for name in "ab")
    endpoint = SshEndpoint("2001:db8::10", 2222, "ubuntu", "unused", pinned.line)
    message = mismatch_message(endpoint, [other])
    assert message.startswith(f"host key mismatch at [2001:db8::10]:2222: expected ED25519 {pinned.fingerprint} ")
    assert f"the server offered ED25519 {other.fingerprint}." in message
    assert "nothing was sent to it" in message
