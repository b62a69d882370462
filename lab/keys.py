"""Key material made at run time for one lab: the deployer's SSH key, the server's host key,
its authorized_keys, and a self-signed TLS certificate for nginx. All private files are 0600
and live in the lab directory; existing ones are kept, so `up` twice keeps the same keys."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .errors import LabError
from .topology import LabTopology


def _tool(argv: list[str]) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed (the lab makes its keys with it)") from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise LabError(f"{argv[0]} failed (exit {result.returncode})" + (f": {lines[-1]}" if lines else ""))


def _ssh_keypair(private: Path, comment: str) -> None:
    if private.exists() and private.with_name(private.name + ".pub").exists():
        return
    private.unlink(missing_ok=True)
    _tool(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)])
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
        _tool(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
               "-nodes", "-days", "30", "-subj", f"/CN=hardened-lightsail-lab-{lab.name}",
               "-addext", names, "-keyout", str(layout.tls_key), "-out", str(layout.tls_cert)])
        os.chmod(layout.tls_key, 0o600)
