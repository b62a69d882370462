"""The lab's daemons: each server's sshd (in a private mount namespace), nginx and the UDP echo,
and the edge's follower (lab/edge_follower.py).

sshd, and so every SSH session and everything a session runs, sees its server's lab-owned
directories at /etc/iptables and /var/lib/hardened-lightsail: firewall files the payload
persists land in the lab directory, never in the machine's own boot-time firewall files."""
from __future__ import annotations

import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .commands import run_command
from .errors import LabError
from .layout import SERVER_BIND_MOUNTS, ServerLayout
from .processes import running_pid, stop_pids, wait_for_pid_file
from .server_configs import nginx_config, sshd_config
from .topology import EDGE, HIDDEN_UDP_PORTS, LabTopology, server_role

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# sshd's privilege-separation directory; Debian's tmpfiles.d makes it at boot on a real server.
SSHD_PRIVSEP_DIR = Path("/run/sshd")
START_TIMEOUT_SECONDS = 10
START_WORKERS = 8  # servers started at once: the start is mostly waiting for daemons to detach
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


def _start_sshd(lab: LabTopology, index: int) -> None:
    layout = lab.server_layout(index)
    layout.sshd_config.write_text(sshd_config(lab, index))
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
    script = "set -eu; " + "; ".join(mounts) + '; exec "$1" -f "$2" -E "$3"'
    _start(["ip", "netns", "exec", lab.namespace(server_role(index)),
            "unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", script, "lab-sshd", *args], "sshd")


def _start_nginx(lab: LabTopology, index: int) -> None:
    layout = lab.server_layout(index)
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (layout.nginx_temp / name).mkdir(parents=True, exist_ok=True)
    layout.nginx_conf.write_text(nginx_config(lab, index))
    _start(["ip", "netns", "exec", lab.namespace(server_role(index)), _program("nginx"),
            "-c", str(layout.nginx_conf), "-p", str(layout.nginx_dir),
            "-e", str(layout.log_file("nginx-error"))], "nginx")


def _udp_echo_starter(port: int) -> Callable[[LabTopology, int], None]:
    def start(lab: LabTopology, index: int) -> None:
        package_parent = str(Path(__file__).resolve().parent.parent)
        _start(["ip", "netns", "exec", lab.namespace(server_role(index)), sys.executable, "-P", "-m", "lab.udp_echo",
                "--port", str(port), "--pid-file", str(lab.server_layout(index).pid_file(f"udp-echo-{port}"))],
               f"udp echo on {port}", extra_env={"PYTHONPATH": package_parent})
    return start


def _start_edge_follower(lab: LabTopology, _index: int) -> None:
    package_parent = str(Path(__file__).resolve().parent.parent)
    _start(["ip", "netns", "exec", lab.namespace(EDGE), sys.executable, "-P", "-m", "lab.edge_follower",
            "--name", lab.name, "--slot", str(lab.slot), "--dir", str(lab.state_dir),
            "--pid-file", str(lab.layout.pid_file("edge-follower")), "--log", str(lab.layout.log_file("edge-follower"))],
           "the edge follower", extra_env={"PYTHONPATH": package_parent})


@dataclass(frozen=True)
class Service:
    name: str  # also the pid file's name
    start: Callable[[LabTopology, int], None]  # (lab, server index)


# Each server runs these, with pid files and logs in its own directory.
SERVER_SERVICES = (
    Service("sshd", _start_sshd),
    Service("nginx", _start_nginx),
    *(Service(f"udp-echo-{port}", _udp_echo_starter(port)) for port in HIDDEN_UDP_PORTS),
)
# Not a server daemon: the edge's return to the host's cloud layer after a rollback.
EDGE_FOLLOWER = Service("edge-follower", _start_edge_follower)


Daemon = tuple  # (pid key, Service, server index, the layout holding its pid file)


def _daemons(lab: LabTopology) -> list[list[Daemon]]:
    """The lab's daemons in groups, each group started in order: one per server, then the edge
    follower. The first server's pid keys are the service names (as in a one-server lab),
    server i's are `server<i>/<name>`."""
    groups = [[(service.name if index == 0 else f"{server_role(index)}/{service.name}", service, index,
                lab.server_layout(index)) for service in SERVER_SERVICES] for index in range(lab.servers)]
    return [*groups, [(EDGE_FOLLOWER.name, EDGE_FOLLOWER, 0, lab.layout)]]


def service_pids(lab: LabTopology) -> dict[str, Optional[int]]:
    """Each daemon's pid, or None when it is not running."""
    marker = str(lab.state_dir)
    return {key: running_pid(layout.pid_file(service.name), marker)
            for group in _daemons(lab) for key, service, _, layout in group}


def _start_group(lab: LabTopology, group: list[Daemon]) -> dict[str, int]:
    marker, pids = str(lab.state_dir), {}
    for key, service, index, layout in group:
        layout.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        layout.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pid_file = layout.pid_file(service.name)
        pid = running_pid(pid_file, marker)
        if pid is None:
            pid_file.unlink(missing_ok=True)
            service.start(lab, index)
            pid = wait_for_pid_file(pid_file, marker, START_TIMEOUT_SECONDS)
            if pid is None:
                raise LabError(f"{key} did not write {pid_file} within {START_TIMEOUT_SECONDS} s;"
                               f" see {layout.log_dir}")
        pids[key] = pid
    return pids


def start_services(lab: LabTopology) -> dict[str, int]:
    """Start every daemon that isn't running (a running one is left alone); returns pids.
    The servers start side by side, so a fleet comes up about as fast as one server."""
    groups = _daemons(lab)
    with ThreadPoolExecutor(max_workers=min(len(groups), START_WORKERS)) as pool:
        started = list(pool.map(lambda group: _start_group(lab, group), groups))
    return {key: pid for pids in started for key, pid in pids.items()}


def stop_services(lab: LabTopology) -> list[int]:
    """Stop the daemons by their pid files; returns the pids that were stopped."""
    pids = [pid for pid in service_pids(lab).values() if pid is not None]
    left = stop_pids(pids)
    if left:
        raise LabError(f"processes {left} of lab {lab.name} survived SIGKILL")
    return pids
