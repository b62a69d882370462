"""The lab's daemons: the server's sshd (in a private mount namespace), nginx and the UDP echo,
and the edge's follower (lab/edge_follower.py).

sshd, and so every SSH session and everything a session runs, sees lab-owned directories at
/etc/iptables and /var/lib/hardened-lightsail: firewall files the payload persists land in the
lab directory, never in the machine's own boot-time firewall files."""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .commands import run_command
from .errors import LabError
from .layout import SERVER_BIND_MOUNTS, SERVER_FILE_BIND_MOUNTS
from .processes import running_pid, stop_pids, wait_for_pid_file
from .server_configs import nginx_config, sshd_config
from .topology import EDGE, HIDDEN_UDP_PORTS, SERVER, LabTopology

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# sshd's privilege-separation directory; Debian's tmpfiles.d makes it at boot on a real server.
SSHD_PRIVSEP_DIR = Path("/run/sshd")
START_TIMEOUT_SECONDS = 10
# Daemons start with a clean environment: nothing of the caller's (a Pulumi run's secrets, a
# test's variables) leaks into long-lived processes.
DAEMON_ENV = {"PATH": SBIN_PATH, "LANG": "C"}


def _program(name: str) -> str:
    path = shutil.which(name, path=SBIN_PATH)
    if path is None:
        raise LabError(f"{name} is not installed (the lab server runs it; see lab/README.md)")
    return path


def _start(argv: list[str], what: str, extra_env: Optional[dict] = None) -> None:
    """Run a command that starts a daemon; it returns once the daemon has detached."""
    run_command(argv, timeout=START_TIMEOUT_SECONDS, env={**DAEMON_ENV, **(extra_env or {})},
                what=f"starting {what}")


def _start_sshd(lab: LabTopology) -> None:
    layout = lab.layout
    layout.sshd_config.write_text(sshd_config(lab))
    SSHD_PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    # Paths go in as positional parameters ($1...), never spliced into the script text.
    args = [_program("sshd"), str(layout.sshd_config), str(layout.log_file("sshd"))]
    mounts = []
    for host_path in SERVER_BIND_MOUNTS:
        # The mountpoint must exist on the host; it stays empty there (nothing is written to it).
        Path(host_path).mkdir(mode=0o755, parents=True, exist_ok=True)
        layout.server_fs(host_path).mkdir(mode=0o755, parents=True, exist_ok=True)
        args += [str(layout.server_fs(host_path)), host_path]
        mounts.append(f'mount --bind "${{{len(args) - 1}}}" "${{{len(args)}}}"')
    for host_path in SERVER_FILE_BIND_MOUNTS:
        if not Path(host_path).is_file():
            continue  # nothing the payload would edit, nothing to cover
        copy = layout.server_fs(host_path)
        copy.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.copy2(host_path, copy)  # the lab starts from this machine's package defaults
        args += [str(copy), host_path]
        mounts.append(f'mount --bind "${{{len(args) - 1}}}" "${{{len(args)}}}"')
    script = "set -eu; " + "; ".join(mounts) + '; exec "$1" -f "$2" -E "$3"'
    _start(["ip", "netns", "exec", lab.namespace(SERVER),
            "unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", script, "lab-sshd", *args], "sshd")


def _start_nginx(lab: LabTopology) -> None:
    layout = lab.layout
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (layout.nginx_temp / name).mkdir(parents=True, exist_ok=True)
    layout.nginx_conf.write_text(nginx_config(lab))
    _start(["ip", "netns", "exec", lab.namespace(SERVER), _program("nginx"),
            "-c", str(layout.nginx_conf), "-p", str(layout.nginx_dir),
            "-e", str(layout.log_file("nginx-error"))], "nginx")


def _udp_echo_starter(port: int) -> Callable[[LabTopology], None]:
    def start(lab: LabTopology) -> None:
        package_parent = str(Path(__file__).resolve().parent.parent)
        _start(["ip", "netns", "exec", lab.namespace(SERVER), sys.executable, "-P", "-m", "lab.udp_echo",
                "--port", str(port), "--pid-file", str(lab.layout.pid_file(f"udp-echo-{port}"))],
               f"udp echo on {port}", extra_env={"PYTHONPATH": package_parent})
    return start


def _start_edge_follower(lab: LabTopology) -> None:
    package_parent = str(Path(__file__).resolve().parent.parent)
    _start(["ip", "netns", "exec", lab.namespace(EDGE), sys.executable, "-P", "-m", "lab.edge_follower",
            "--name", lab.name, "--slot", str(lab.slot), "--dir", str(lab.state_dir),
            "--pid-file", str(lab.layout.pid_file("edge-follower")), "--log", str(lab.layout.log_file("edge-follower"))],
           "the edge follower", extra_env={"PYTHONPATH": package_parent})


@dataclass(frozen=True)
class Service:
    name: str  # also the pid file's name
    start: Callable[[LabTopology], None]


SERVICES = (
    Service("sshd", _start_sshd),
    Service("nginx", _start_nginx),
    *(Service(f"udp-echo-{port}", _udp_echo_starter(port)) for port in HIDDEN_UDP_PORTS),
    # Not a server daemon: the edge's return to the host's cloud layer after a rollback.
    Service("edge-follower", _start_edge_follower),
)


def service_pids(lab: LabTopology) -> dict[str, Optional[int]]:
    """Each service's pid, or None when it is not running."""
    marker = str(lab.state_dir)
    return {service.name: running_pid(lab.layout.pid_file(service.name), marker) for service in SERVICES}


def start_services(lab: LabTopology) -> dict[str, int]:
    """Start every service that isn't running (a running one is left alone); returns pids."""
    layout = lab.layout
    layout.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    layout.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    marker, pids = str(lab.state_dir), {}
    for service in SERVICES:
        pid_file = layout.pid_file(service.name)
        pid = running_pid(pid_file, marker)
        if pid is None:
            pid_file.unlink(missing_ok=True)
            service.start(lab)
            pid = wait_for_pid_file(pid_file, marker, START_TIMEOUT_SECONDS)
            if pid is None:
                raise LabError(f"{service.name} did not write {pid_file} within {START_TIMEOUT_SECONDS} s;"
                               f" see {layout.log_dir}")
        pids[service.name] = pid
    return pids


def stop_services(lab: LabTopology) -> list[int]:
    """Stop the services by their pid files; returns the pids that were stopped."""
    pids = [pid for pid in service_pids(lab).values() if pid is not None]
    left = stop_pids(pids)
    if left:
        raise LabError(f"processes {left} of lab {lab.name} survived SIGKILL")
    return pids
