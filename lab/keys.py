"""Key material made at run time for one lab: the deployer's SSH key, the server's host key,
its authorized_keys, and a self-signed TLS certificate for nginx. All private files are 0600
and live in the lab directory; existing ones are kept, so `up` twice keeps the same keys."""
from __future__ import annotations

import os
from pathlib import Path

from .commands import run_command
from .topology import LabTopology


def _ssh_keypair(private: Path, comment: str) -> None:
    if private.exists() and private.with_name(private.name + ".pub").exists():
        return
    private.unlink(missing_ok=True)
    run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)], timeout=60)
    os.chmod(private, 0o600)


def ensure_keys(lab: LabTopology) -> None:
    layout = lab.layout
    layout.ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _ssh_keypair(layout.client_key, f"hardened-lightsail-lab-{lab.name}-deployer")
    _ssh_keypair(layout.host_key, f"hardened-lightsail-lab-{lab.name}-host")
    public = layout.client_key.with_name(layout.client_key.name + ".pub").read_text()
    layout.authorized_keys.write_text(public)
    os.chmod(layout.authorized_keys, 0o600)

    if not (layout.tls_cert.exists() and layout.tls_key.exists()):
        layout.tls_cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        names = f"subjectAltName=IP:{lab.server_ipv4},IP:{lab.server_ipv6}"
        run_command(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
               "-nodes", "-days", "30", "-subj", f"/CN=hardened-lightsail-lab-{lab.name}",
               "-addext", names, "-keyout", str(layout.tls_key), "-out", str(layout.tls_cert)], timeout=60)
        os.chmod(layout.tls_key, 0o600)
