"""Key material made at run time for one lab: the deployer's SSH key and its authorized_keys,
and per server a host key and a self-signed TLS certificate for nginx. All private files are
0600 and live in the lab directory; existing ones are kept, so `up` twice keeps the same keys."""
from __future__ import annotations

import os
from pathlib import Path

from .commands import run_command
from .topology import LabTopology, server_role


def _ssh_keypair(private: Path, comment: str) -> None:
    if private.exists() and private.with_name(private.name + ".pub").exists():
        return
    private.unlink(missing_ok=True)
    run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)], timeout=60)
    os.chmod(private, 0o600)


def ensure_keys(lab: LabTopology) -> None:
    """The deployer's key (shared by every server); each server's keys: see ensure_server_keys."""
    layout = lab.layout
    layout.ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _ssh_keypair(layout.client_key, f"hardened-lightsail-lab-{lab.name}-deployer")
    public = layout.client_key.with_name(layout.client_key.name + ".pub").read_text()
    layout.authorized_keys.write_text(public)
    os.chmod(layout.authorized_keys, 0o600)


def ensure_server_keys(lab: LabTopology, index: int) -> None:
    """Server `index`'s SSH host key and TLS certificate (for its own addresses)."""
    layout, role = lab.server_layout(index), server_role(index)
    label = lab.name + (f"-server{index}" if index else "")
    layout.ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _ssh_keypair(layout.host_key, f"hardened-lightsail-lab-{label}-host")
    if not (layout.tls_cert.exists() and layout.tls_key.exists()):
        layout.tls_cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        names = f"subjectAltName=IP:{lab.address(role, 4)},IP:{lab.address(role, 6)}"
        run_command(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
               "-nodes", "-days", "30", "-subj", f"/CN=hardened-lightsail-lab-{label}",
               "-addext", names, "-keyout", str(layout.tls_key), "-out", str(layout.tls_cert)], timeout=60)
        os.chmod(layout.tls_key, 0o600)
