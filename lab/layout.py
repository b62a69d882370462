"""Where each file of one lab lives under its state directory (nothing outside it is ours).

The first server's files are the lab directory's own (ssh/, sshd_config, nginx/, run/, log/,
server-fs/), as in a one-server lab; server i > 0 has the same tree under `servers/<i>/`.
`down` removes exactly the entries listed in RUNTIME_ENTRIES, so a lab directory that also
holds the user's own files (say, a Pulumi project's `.lab/`) keeps them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The host paths the server sees as lab-owned bind mounts (its private mount namespace).
# /usr/local/sbin holds the lab's stand-in for `cloud-init` (lab/boot.py).
SERVER_BIND_MOUNTS = ("/etc/iptables", "/var/lib/hardened-lightsail", "/usr/local/sbin")
# Directories where the payload edits a package's file (the netfilter-persistent boot settings
# in /etc/default), seen by the server as a lab-owned copy of this machine's: the edit, and
# the temporary file it is written through, stay in the lab, one copy per server (servers of
# one lab confirming at once must not meet in this machine's /etc/default).
SERVER_DIRECTORY_COPIES = ("/etc/default",)
# Files the server sees as lab-owned ones, where the host has them (never created on the host):
# the package manager's lock, which a booting lab server holds the way unattended-upgrades does.
SERVER_FILE_MOUNTS = ("/var/lib/dpkg/lock-frontend",)

# The accounts the server sees: a lab copy of this machine's /etc/passwd in which the login user
# (root) has a home of the lab's own, holding a fresh server's stock shell files. Debian's bash
# reads ~/.bashrc for every SSH command, and this machine's (pyenv, cargo) costs about 0.1 s of
# CPU each time: the lab's sessions must not pay for it, nor write through $HOME into /root.
SERVER_ACCOUNTS = "/etc/passwd"
LOGIN_USER = "root"
# Top-level names under the state directory that the lab creates and `down` removes (only
# from a directory whose lab.json names that lab).
RUNTIME_ENTRIES = ("lab.json", "ssh", "sshd_config", "sshd_config.image", "nginx", "run", "log", "edge", "server-fs",
                   "boot", "servers", "home")
SERVERS_DIR = "servers"


@dataclass(frozen=True)
class ServerLayout:
    """One server's files: its sshd, nginx, daemons' pid files and logs, and its filesystem."""

    root: Path

    # --- SSH: the server's own keys and config, never /etc/ssh or ~/.ssh ----------------
    @property
    def ssh_dir(self) -> Path:
        return self.root / "ssh"

    @property
    def host_key(self) -> Path:
        """The server's host key: the one a stack pins (or one the lab made, for a bare lab)."""
        return self.ssh_dir / "ssh_host_ed25519_key"

    @property
    def image_host_key(self) -> Path:
        """The key a booting server's sshd serves until its first-boot step (an image's own key)."""
        return self.ssh_dir / "ssh_host_ed25519_key.image"

    @property
    def known_hosts(self) -> Path:
        """The server's public host key as a known_hosts line (for people and `fw` at a shell)."""
        return self.ssh_dir / "known_hosts"

    @property
    def sshd_config(self) -> Path:
        return self.root / "sshd_config"

    @property
    def image_sshd_config(self) -> Path:
        """A booting server's sshd before its first-boot step: port 22, the image's key."""
        return self.root / "sshd_config.image"

    # --- a booting server (lab/boot.py) -------------------------------------------------------
    @property
    def boot_dir(self) -> Path:
        return self.root / "boot"

    @property
    def cloud_init_status(self) -> Path:
        """What the lab's `cloud-init status` says: running until the boot is over, then done."""
        return self.boot_dir / "cloud-init-status"

    # --- nginx -------------------------------------------------------------------------------
    @property
    def nginx_dir(self) -> Path:
        return self.root / "nginx"

    @property
    def nginx_conf(self) -> Path:
        return self.nginx_dir / "nginx.conf"

    @property
    def tls_cert(self) -> Path:
        return self.nginx_dir / "tls" / "cert.pem"

    @property
    def tls_key(self) -> Path:
        return self.nginx_dir / "tls" / "key.pem"

    @property
    def nginx_temp(self) -> Path:
        return self.nginx_dir / "tmp"

    # --- processes and logs ------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def pid_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.pid"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def log_file(self, service: str) -> Path:
        return self.log_dir / f"{service}.log"

    @property
    def login_home(self) -> Path:
        """The login user's home as the server's sessions see it ($HOME; SERVER_ACCOUNTS)."""
        return self.root / "home"

    # --- server filesystem overlays (bind-mounted over SERVER_BIND_MOUNTS) --------------------
    def server_fs(self, host_path: str) -> Path:
        """The lab directory that the server's sessions see at `host_path`."""
        return self.root / "server-fs" / host_path.lstrip("/")


@dataclass(frozen=True)
class LabLayout(ServerLayout):
    """The lab directory: the lab-wide files, and (inherited) the first server's."""

    @property
    def lab_json(self) -> Path:
        """Name, slot and server count of the lab that owns this directory."""
        return self.root / "lab.json"

    def record(self) -> dict | None:
        """What lab.json says (None: no lab owns this directory, or the file is damaged)."""
        try:
            return json.loads(self.lab_json.read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None

    @property
    def client_key(self) -> Path:
        """Private key of the deployer/admin (the `root` login on every lab server)."""
        return self.ssh_dir / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        """The deployer's public key, authorized on every server of the lab."""
        return self.ssh_dir / "authorized_keys"

    def server(self, index: int) -> ServerLayout:
        return ServerLayout(self.root if index == 0 else self.root / SERVERS_DIR / str(index))

    # --- edge: the cloud-layer rules last loaded (for the operator to read) -------------------
    @property
    def edge_dir(self) -> Path:
        return self.root / "edge"
