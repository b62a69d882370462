"""Key material made at run time for one lab: the deployer's SSH key and its authorized_keys,
and per server a host key, its known_hosts line and a self-signed TLS certificate for nginx. All
private files are 0600 and live in the lab directory; existing ones are kept, so `up` twice
keeps the same keys.

A server's host key is the one a stack made and pins, when `up` is given it (LabServer: one per
server, like separate Lightsail instances), as a Lightsail instance gets it at its first boot; a
bare lab makes its own. A booting server also has an "image" key, served until its first-boot
step (lab/boot.py)."""
from __future__ import annotations

import os
from pathlib import Path

from .commands import run_command
from .topology import LabTopology, server_role

HostKeyPair = tuple[str, str]  # (private key, public key) in OpenSSH format


def _ssh_keypair(private: Path, comment: str) -> None:
    if private.exists() and private.with_name(private.name + ".pub").exists():
        return
    private.unlink(missing_ok=True)
    run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)], timeout=60)
    os.chmod(private, 0o600)


def _install_host_key(private: Path, key: HostKeyPair) -> bool:
    """Write the given (private, public) host key; True when it replaced another one."""
    private_text = key[0].strip() + "\n"
    public = private.with_name(private.name + ".pub")
    if private.exists() and private.read_text() == private_text and public.exists():
        return False
    replaced = private.exists()
    descriptor = os.open(f"{private}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(private_text)
    os.replace(f"{private}.new", private)
    public.write_text(key[1].strip() + "\n")
    return replaced


def ensure_keys(lab: LabTopology) -> None:
    """The deployer's key (shared by every server); each server's keys: see ensure_server_keys."""
    layout = lab.layout
    layout.ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _ssh_keypair(layout.client_key, f"hardened-lightsail-lab-{lab.name}-deployer")
    public = layout.client_key.with_name(layout.client_key.name + ".pub").read_text()
    layout.authorized_keys.write_text(public)
    os.chmod(layout.authorized_keys, 0o600)


def ensure_server_keys(lab: LabTopology, index: int, host_key: HostKeyPair | None = None,
                       image_key: bool = False) -> bool:
    """Server `index`'s SSH host key (`host_key`, a stack's, or one made here), its image key when
    it boots, its known_hosts line and its TLS certificate (for its own addresses). True when the
    host key changed (a running sshd must read it again)."""
    layout, role = lab.server_layout(index), server_role(index)
    label = lab.name + (f"-server{index}" if index else "")
    layout.ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if host_key is not None:
        changed = _install_host_key(layout.host_key, host_key)
    else:
        changed = False
        _ssh_keypair(layout.host_key, f"hardened-lightsail-lab-{label}-host")
    if image_key:
        _ssh_keypair(layout.image_host_key, f"hardened-lightsail-lab-{label}-image")
    kind, key = Path(str(layout.host_key) + ".pub").read_text().split()[:2]
    layout.known_hosts.write_text(f"{lab.address(role, 4)},{lab.address(role, 6)} {kind} {key}\n")
    if not (layout.tls_cert.exists() and layout.tls_key.exists()):
        layout.tls_cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        names = f"subjectAltName=IP:{lab.address(role, 4)},IP:{lab.address(role, 6)}"
        run_command(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
               "-nodes", "-days", "30", "-subj", f"/CN=hardened-lightsail-lab-{label}",
               "-addext", names, "-keyout", str(layout.tls_key), "-out", str(layout.tls_cert)], timeout=60)
        os.chmod(layout.tls_key, 0o600)
    return changed
