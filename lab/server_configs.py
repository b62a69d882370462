"""The lab server's own sshd_config and nginx.conf (pure text): every path they name is inside
the lab directory, so nothing reads or writes /etc/ssh, /etc/nginx or /var/log."""
from __future__ import annotations

from pathlib import Path

from .topology import HIDDEN_TCP_PORTS, HTTP_PORT, HTTPS_PORT, SSH_PORT, LabTopology


def _server_label(lab: LabTopology, index: int) -> str:
    return f"lab {lab.name}" + (f" server {index}" if index else "")


def sshd_config(lab: LabTopology, index: int = 0, port: int = SSH_PORT, host_key: Path | None = None) -> str:
    """Server `index`'s sshd: its host key (the pinned one unless told), on `port`."""
    layout = lab.server_layout(index)
    return f"""\
# sshd for hardened-lightsail {_server_label(lab, index)}: its own keys, pid file and authorized_keys.
Port {port}
AddressFamily any
ListenAddress 0.0.0.0
ListenAddress ::
HostKey {host_key or layout.host_key}
PidFile {layout.pid_file("sshd")}
AuthorizedKeysFile {lab.layout.authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
# No PAM: the machine's PAM stack (loginuid, motd) is not the lab's business.
UsePAM no
UseDNS no
# The lab directory may sit under a world-writable /tmp, which StrictModes would refuse.
StrictModes no
# High enough that brute-force tests measure the firewall's rate limits, not sshd's.
MaxStartups 1000
MaxSessions 100
LoginGraceTime 30
PrintMotd no
PrintLastLog no
# scp and the release copy use the SFTP protocol.
Subsystem sftp internal-sftp
"""


def nginx_config(lab: LabTopology, index: int = 0) -> str:
    layout = lab.server_layout(index)
    label = _server_label(lab, index)
    temp = layout.nginx_temp

    def listen(port: int, extra: str = "") -> str:
        return f"        listen {port}{extra};\n        listen [::]:{port}{extra};\n"

    hidden = "".join(listen(port) for port in HIDDEN_TCP_PORTS)
    return f"""\
# nginx for hardened-lightsail {label}: config, pid, logs and temp files in the lab directory.
# Workers run as root so they can use the lab directory wherever it is (a lab, not a real site).
user root;
worker_processes 1;
pid {layout.pid_file("nginx")};
error_log {layout.log_file("nginx-error")} warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log {layout.log_file("nginx-access")};
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    default_type text/plain;

    # The public web site.
    server {{
{listen(HTTP_PORT, " default_server")}        return 200 "hardened-lightsail {label}: http\\n";
    }}
    server {{
{listen(HTTPS_PORT, " ssl")}        ssl_certificate {layout.tls_cert};
        ssl_certificate_key {layout.tls_key};
        return 200 "hardened-lightsail {label}: https\\n";
    }}

    # Hidden services (telnet, PostgreSQL, an app port): they listen, but must stay invisible
    # from outside unless the policy opens them.
    server {{
{hidden}        return 200 "hardened-lightsail {label}: hidden service on port $server_port\\n";
    }}
}}
"""
