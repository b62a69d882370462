"""The lab's daemons: each server's sshd (in a private mount namespace), nginx and the UDP echo,
a booting server's timeline (lab/boot.py), and the edge's follower (lab/edge_follower.py).

sshd, and so every SSH session and everything a session runs, sees its server's lab-owned
directories at /etc/iptables and /var/lib/hardened-lightsail: firewall files the payload
persists land in the lab directory, never in the machine's own boot-time firewall files."""
from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .boot import DONE, RUNNING, BootPlan, cloud_init_stand_in
from .commands import run_command
from .errors import LabError
from .layout import (
    LOGIN_USER,
    SERVER_ACCOUNTS,
    SERVER_BIND_MOUNTS,
    SERVER_DIRECTORY_COPIES,
    SERVER_FILE_MOUNTS,
    ServerLayout,
)
from .processes import running_pid, stop_pids, wait_for_pid_file
from .server_configs import nginx_config, sshd_config
from .topology import EDGE, HIDDEN_UDP_PORTS, SSH_PORT, LabTopology, server_role

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT = "boot"  # a booting server's timeline daemon (its pid file); gone once the boot is over
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


def _start(argv: list[str], what: str, extra_env: dict | None = None) -> None:
    """Run a command that starts a daemon; it returns once the daemon has detached."""
    run_command(argv, timeout=START_TIMEOUT_SECONDS, env={**DAEMON_ENV, **(extra_env or {})},
                what=f"starting {what}")


def _in_server_mounts(lab: LabTopology, index: int, argv: list[str], what: str,
                      extra_env: dict | None = None) -> None:
    """Start `argv` in server `index`'s network namespace and in a private mount namespace where
    that server's lab-owned directories and files are bind-mounted over SERVER_BIND_MOUNTS,
    SERVER_DIRECTORY_COPIES and SERVER_FILE_MOUNTS."""
    layout = lab.server_layout(index)
    args, mounts = [], []
    for host_path in SERVER_BIND_MOUNTS:
        # The mountpoint must exist on the host; it stays empty there (nothing is written to it).
        Path(host_path).mkdir(mode=0o755, parents=True, exist_ok=True)
        layout.server_fs(host_path).mkdir(mode=0o755, parents=True, exist_ok=True)
        args += [str(layout.server_fs(host_path)), host_path]
        mounts.append(f'mount --bind "${{{len(args) - 1}}}" "${{{len(args)}}}"')
    for host_path in SERVER_DIRECTORY_COPIES:
        if not Path(host_path).is_dir():
            continue  # nothing the payload would edit, nothing to cover
        copy = layout.server_fs(host_path)
        if not copy.is_dir():  # the lab starts from this machine's package defaults, then keeps its edits
            shutil.copytree(host_path, copy, symlinks=True)
        args += [str(copy), host_path]
        mounts.append(f'mount --bind "${{{len(args) - 1}}}" "${{{len(args)}}}"')
    for host_path in SERVER_FILE_MOUNTS:
        if not Path(host_path).is_file():
            continue  # never created on the host: a server without it just has none
        layout.server_fs(host_path).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        layout.server_fs(host_path).touch(mode=0o640)
        args += [str(layout.server_fs(host_path)), host_path]
        mounts.append(f'mount --bind "${{{len(args) - 1}}}" "${{{len(args)}}}"')
    args += [str(_write_accounts(layout)), SERVER_ACCOUNTS]
    mounts.append(f'mount --bind "${{{len(args) - 1}}}" "${{{len(args)}}}"')
    # Paths go in as positional parameters ($1...), never spliced into the script text.
    script = "set -eu; " + "; ".join(mounts) + f'; shift {len(args)}; exec "$@"'
    _start(["ip", "netns", "exec", lab.namespace(server_role(index)), "unshare", "--mount", "--propagation", "private",
            "--", "/bin/sh", "-c", script, "lab-server", *args, *argv], what, extra_env=extra_env)


def _write_accounts(layout: ServerLayout) -> Path:
    """The server's /etc/passwd (layout.SERVER_ACCOUNTS): this machine's, with the login user's
    home moved to the lab's own, which gets a fresh server's shell files (/etc/skel's)."""
    home = layout.login_home
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in (".bashrc", ".profile"):
        stock = Path("/etc/skel") / name
        if stock.is_file() and not (home / name).exists():
            shutil.copy2(stock, home / name)
    lines = []
    for line in Path(SERVER_ACCOUNTS).read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[0] == LOGIN_USER:
            fields[5] = str(home)
        lines.append(":".join(fields))
    copy = layout.server_fs(SERVER_ACCOUNTS)
    copy.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    copy.write_text("\n".join(lines) + "\n")
    copy.chmod(0o644)
    return copy


def _write_server_files(lab: LabTopology, index: int, boot: BootPlan | None) -> None:
    """Server `index`'s sshd configs and its `cloud-init` stand-in, saying running or done."""
    layout = lab.server_layout(index)
    layout.sshd_config.write_text(sshd_config(lab, index, port=SSH_PORT if boot is None else boot.ssh_port))
    if boot is not None:
        layout.image_sshd_config.write_text(sshd_config(lab, index, port=SSH_PORT, host_key=layout.image_host_key))
    layout.boot_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    if boot is None or not layout.cloud_init_status.exists():
        layout.cloud_init_status.write_text((RUNNING if boot else DONE) + "\n")
    stand_in = layout.server_fs("/usr/local/sbin") / "cloud-init"
    stand_in.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    stand_in.write_text(cloud_init_stand_in(layout.cloud_init_status))
    stand_in.chmod(0o755)
    SSHD_PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)


def _start_sshd(lab: LabTopology, index: int) -> None:
    layout = lab.server_layout(index)
    _in_server_mounts(lab, index, [_program("sshd"), "-f", str(layout.sshd_config), "-E", str(layout.log_file("sshd"))],
                      "sshd")


def _start_boot(lab: LabTopology, index: int, boot: BootPlan) -> None:
    """Server `index`'s boot timeline (lab/boot.py): it starts that server's sshd itself, late."""
    layout = lab.server_layout(index)
    _in_server_mounts(lab, index, [
        sys.executable, "-P", "-m", "lab.boot", "--sshd", _program("sshd"), "--config", str(layout.sshd_config),
        "--image-config", str(layout.image_sshd_config), "--log", str(layout.log_file("sshd")),
        "--boot-log", str(layout.log_file("boot")), "--sshd-pid-file", str(layout.pid_file("sshd")),
        "--status-file", str(layout.cloud_init_status), "--pid-file", str(layout.pid_file(BOOT)),
        "--seconds", str(boot.seconds), "--sshd-at", str(boot.sshd_at), "--first-boot-at", str(boot.first_boot_at)],
        "the booting server", extra_env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})


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


def _pid_key(index: int, name: str) -> str:
    """The first server's pid keys are the service names (as in a one-server lab), server i's
    are `server<i>/<name>`."""
    return name if index == 0 else f"{server_role(index)}/{name}"


def _daemons(lab: LabTopology) -> list[list[Daemon]]:
    """The lab's daemons in groups, each group started in order: one per server, then the edge
    follower."""
    groups = [[(_pid_key(index, service.name), service, index, lab.server_layout(index))
               for service in SERVER_SERVICES] for index in range(lab.servers)]
    return [*groups, [(EDGE_FOLLOWER.name, EDGE_FOLLOWER, 0, lab.layout)]]


def service_pids(lab: LabTopology) -> dict[str, int | None]:
    """Each daemon's pid, or None when it is not running."""
    marker = str(lab.state_dir)
    return {key: running_pid(layout.pid_file(service.name), marker)
            for group in _daemons(lab) for key, service, _, layout in group}


def booting(lab: LabTopology, index: int = 0) -> int | None:
    """The pid of server `index`'s boot timeline while that server is still on its way."""
    return running_pid(lab.server_layout(index).pid_file(BOOT), str(lab.state_dir))


def _wait_for(pid_file: Path, marker: str, name: str, layout: ServerLayout) -> int:
    pid = wait_for_pid_file(pid_file, marker, START_TIMEOUT_SECONDS)
    if pid is None:
        raise LabError(f"{name} did not write {pid_file} within {START_TIMEOUT_SECONDS} s; see {layout.log_dir}")
    return pid


def _start_group(lab: LabTopology, group: list[Daemon], boot: BootPlan | None) -> dict[str, int]:
    """Start a group's daemons that aren't running. For a server's group, `boot` makes that
    server boot (its sshd comes later, started by the boot timeline)."""
    marker, pids = str(lab.state_dir), {}
    index, layout = group[0][2], group[0][3]
    layout.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    layout.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if group[0][1] in SERVER_SERVICES:
        sshd_runs = running_pid(layout.pid_file("sshd"), marker) is not None
        boot = boot if boot is not None and not sshd_runs and booting(lab, index) is None else None
        if not sshd_runs and booting(lab, index) is None:
            _write_server_files(lab, index, boot)
    for key, service, index, layout in group:
        pid_file = layout.pid_file(service.name)
        pid = running_pid(pid_file, marker)
        if pid is None and service.name == "sshd" and (boot is not None or booting(lab, index) is not None):
            if boot is not None:
                _start_boot(lab, index, boot)
                pids[_pid_key(index, BOOT)] = _wait_for(layout.pid_file(BOOT), marker, BOOT, layout)
            continue
        if pid is None:
            pid_file.unlink(missing_ok=True)
            service.start(lab, index)
            pid = _wait_for(pid_file, marker, key, layout)
        pids[key] = pid
    return pids


def start_services(lab: LabTopology, boots: Mapping[int, BootPlan] | None = None) -> dict[str, int]:
    """Start every daemon that isn't running (a running one is left alone); returns pids. The
    servers in `boots` (index -> plan: new ones) boot (lab/boot.py): their sshd comes later, by
    itself. The servers start side by side, so a fleet comes up about as fast as one server."""
    groups = _daemons(lab)
    boots = boots or {}
    with ThreadPoolExecutor(max_workers=min(len(groups), START_WORKERS)) as pool:
        started = list(pool.map(lambda group: _start_group(lab, group, boots.get(group[0][2])
                                                           if group[0][1] in SERVER_SERVICES else None), groups))
    return {key: pid for pids in started for key, pid in pids.items()}


def reload_sshd(lab: LabTopology, index: int = 0) -> None:
    """Make server `index`'s running sshd read its config and host key again (SIGHUP: it
    re-executes itself)."""
    pid = running_pid(lab.server_layout(index).pid_file("sshd"), str(lab.state_dir))
    if pid is not None:
        os.kill(pid, signal.SIGHUP)


def stop_services(lab: LabTopology) -> list[int]:
    """Stop the daemons (and boots still on their way) by their pid files; returns the pids stopped."""
    boots = [booting(lab, index) for index in range(lab.servers)]
    pids = [pid for pid in [*boots, *service_pids(lab).values()] if pid is not None]
    left = stop_pids(pids)
    if left:
        raise LabError(f"processes {left} of lab {lab.name} survived SIGKILL")
    return pids
