"""Standing a lab up, taking it down and saying how it is: the three operations behind the CLI,
the pytest fixtures and the Pulumi LabServer. `up` and `down` are idempotent."""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from .boot import BootPlan
from .cloud_layer import load_cloud_layer
from .edge_follower import return_note
from .errors import LabError
from .keys import HostKeyPair, ensure_keys, ensure_server_keys
from .layout import RUNTIME_ENTRIES, LabLayout
from .machine_addresses import machine_conflicts
from .netns import delete_namespace, ip, namespace_exists, namespace_pids
from .network import build_network, network_state, teardown_network
from .processes import stop_pids
from .readiness import wait_until_routers_answer
from .services import reload_sshd, service_pids, start_services, stop_services
from .slots import claim_slot, find_slot, registered_labs, release_slot
from .topology import (
    EDGE,
    MAX_SERVERS,
    NAMESPACE_SUFFIX,
    LabTopology,
    namespace_name,
    recorded_server_count,
    server_role,
    validate_name,
    validate_server_count,
)

PathLike = str | Path


def _recorded_lab(state_dir: Path) -> dict | None:
    """Name, slot and server count recorded in the lab directory, if any."""
    return LabLayout(state_dir).record()


def _check_directory_owner(name: str, state_dir: Path) -> dict | None:
    recorded = _recorded_lab(state_dir)
    if recorded is not None and recorded.get("name") != name:
        raise LabError(f"{state_dir} belongs to lab {recorded.get('name')!r}, not {name!r}: "
                       "use another --dir, or that lab's name")
    return recorded


def _remove_servers(lab: LabTopology, keep: int) -> None:
    """Take down servers `keep` and beyond (a lab whose server count went down): everything
    running in their namespaces (their daemons and sessions), the namespaces (their links go
    with them) and their files. The first server is never removed on its own (keep >= 1)."""
    everything = LabTopology(lab.name, lab.slot, lab.state_dir, MAX_SERVERS)
    for index in range(max(keep, 1), MAX_SERVERS):
        namespace = everything.namespace(server_role(index))
        left = stop_pids(namespace_pids(namespace))
        if left:
            raise LabError(f"processes {left} in {namespace} survived SIGKILL")
        delete_namespace(namespace)
        shutil.rmtree(everything.server_layout(index).root, ignore_errors=True)


def lab_up(name: str, state_dir: PathLike, slot: int | None = None,
           cloud_ports: PathLike | None = None, *, preferred_slot: int | None = None,
           owner: dict | None = None, keep_cloud_layer: bool = False, servers: int = 1,
           host_keys: Sequence[HostKeyPair] | None = None, boot: BootPlan | None = None) -> LabTopology:
    """Create lab `name` with `servers` servers (or complete/refresh it if it exists, adding or
    removing servers to match) and return its topology.

    A given `slot` is that or nothing (refused if taken); else `preferred_slot` if usable (the
    slot a stack's state recorded), else the lowest usable one. `owner` is recorded with the slot
    (who to ask about it). `cloud_ports` is the cloud-layer file for the edge; None means
    Lightsail's default; with `keep_cloud_layer` a lab that has a layer keeps (reloads) it.
    `host_keys` (private, public) are the servers' SSH host keys, one per server, in order (a
    stack's, pinned; None: the lab makes its own); with a `boot` plan each new server (all of a
    new lab's, one added to a running lab) boots (lab/boot.py), and `up` returns before its sshd
    answers.
    A new lab never takes a slot whose root-namespace subnets hold one of this machine's own
    addresses or gateways (see machine_addresses). It returns once every lab client reaches its
    router over IPv4 and IPv6. If this call created the lab and fails half-way, it removes what
    it made."""
    validate_name(name)
    validate_server_count(servers)
    if host_keys is not None and len(host_keys) != servers:
        raise LabError(f"{len(host_keys)} host keys for {servers} lab servers: give one per server")
    state_dir = Path(state_dir).absolute()
    existed = _check_directory_owner(name, state_dir) is not None or \
        any(namespace_exists(namespace_name(name, role)) for role in NAMESPACE_SUFFIX)
    lab = LabTopology(name, claim_slot(name, state_dir, slot, machine_conflicts(name, state_dir),
                                       preferred=preferred_slot, owner=owner), state_dir, servers)
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _remove_servers(lab, keep=servers)
        lab.layout.lab_json.write_text(json.dumps({"name": name, "slot": lab.slot, "servers": servers}) + "\n")
        build_network(lab)
        in_force = lab.layout.edge_dir / "cloud-ports.json"
        # Loaded again even when kept: a rebuilt edge namespace starts with no rules at all.
        load_cloud_layer(lab, in_force if keep_cloud_layer and in_force.exists() else cloud_ports)
        ensure_keys(lab)
        # A server that is new (every server of a new lab, one added to a running lab) boots.
        new = [index for index in range(servers) if not existed or (index > 0 and not lab.server_layout(index).root.exists())]
        changed = [index for index in range(servers)
                   if ensure_server_keys(lab, index, host_keys[index] if host_keys else None,
                                         image_key=boot is not None and index in new)]
        start_services(lab, {index: boot for index in new} if boot is not None else None)
        for index in changed:
            reload_sshd(lab, index)
        wait_until_routers_answer(lab)
    except BaseException:
        if not existed:
            lab_down(name, state_dir)
        raise
    return lab


def _slot_of(name: str, state_dir: Path) -> int | None:
    """Where lab `name` lives: the registry, the lab directory, or the edge's interface names."""
    slot = find_slot(name)
    if slot is None:
        recorded = _recorded_lab(state_dir)
        slot = recorded.get("slot") if recorded else None
    if slot is None:
        edge = namespace_name(name, EDGE)
        if namespace_exists(edge):
            match = re.search(r"\bhl(\d+)e-up\b", ip(edge, "-o", "link", "show").stdout)
            slot = int(match.group(1)) if match else None
    return slot


def lab_down(name: str, state_dir: PathLike) -> dict:
    """Remove lab `name`: its processes (pid files first, then anything left in its namespaces),
    namespaces, root uplink and routes, and the runtime files in `state_dir`. Never fails for
    things that are already gone."""
    validate_name(name)
    state_dir = Path(state_dir).absolute()
    owns_directory = _check_directory_owner(name, state_dir) is not None
    slot = _slot_of(name, state_dir)
    # Without a known slot only the root uplink can't be named; the rest doesn't depend on it.
    # Every server a lab of this name could have is swept, whatever count was recorded.
    lab = LabTopology(name, 0 if slot is None else slot, state_dir, MAX_SERVERS)
    stopped = stop_services(lab)
    # Sessions opened through the lab's sshd, clients a test started in a lab namespace: all of
    # them live in namespaces this lab made, and the namespaces can't go while they run.
    for namespace in lab.namespaces.values():
        stragglers = namespace_pids(namespace)
        stopped += stragglers
        left = stop_pids(stragglers)
        if left:
            raise LabError(f"processes {left} in {namespace} survived SIGKILL")
    if slot is None:
        # Slot 0 above is a stand-in: its uplink may be another lab's, so leave links alone.
        for namespace in lab.namespaces.values():
            delete_namespace(namespace)
    else:
        teardown_network(lab)
    # Files only go when DIR/lab.json says they are this lab's: a mistyped --dir must not cost
    # someone their ~/log. lab.json goes last, so an interrupted down can be run again.
    if owns_directory:
        for entry in sorted(RUNTIME_ENTRIES, key=lambda entry: entry == "lab.json"):
            path = state_dir / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        if not any(state_dir.iterdir()):
            state_dir.rmdir()
    release_slot(name)
    return {"name": name, "slot": slot, "dir": str(state_dir), "stoppedPids": sorted(set(stopped)),
            "state": "down"}


def lab_status(name: str, state_dir: PathLike) -> dict:
    """What exists of lab `name`: "up" (everything), "down" (nothing) or "partial"."""
    validate_name(name)
    state_dir = Path(state_dir).absolute()
    _check_directory_owner(name, state_dir)
    slot = _slot_of(name, state_dir)
    lab = LabTopology(name, 0 if slot is None else slot, state_dir, recorded_server_count(LabLayout(state_dir)))
    network = network_state(lab)
    if slot is None:
        network["uplink"] = False
    pids = service_pids(lab)
    parts = [*network["namespaces"].values(), network["uplink"], *(pid is not None for pid in pids.values())]
    state = "up" if all(parts) else "down" if not any(parts) else "partial"
    status = {"name": name, "slot": slot, "dir": str(state_dir), "state": state, **network, "pids": pids}
    if state == "up":
        status["lab"] = describe_running(lab)
    return status


def describe_running(lab: LabTopology) -> dict:
    """The lab's description plus what is live: daemon pids and the cloud layer in force."""
    enforced = lab.layout.edge_dir / "cloud-ports.json"
    return {
        **lab.describe(),
        "pids": service_pids(lab),
        "cloudPorts": json.loads(enforced.read_text()) if enforced.exists() else None,
        "edgeReturned": return_note(lab.layout),  # set while the edge holds the host's layer after a rollback
        "edgeRules": {f"v{family}": str(lab.layout.edge_dir / f"rules.v{family}") for family in (4, 6)},
    }


def lab_for(name: str, state_dir: PathLike | None = None) -> LabTopology:
    """The topology of a lab that is up, from the registry (or the lab directory, if given)."""
    validate_name(name)
    found = next(((slot, entry["dir"]) for slot, entry in registered_labs().items()
                  if entry["name"] == name), None)
    if found is None and state_dir is not None:
        recorded = _check_directory_owner(name, Path(state_dir).absolute())
        found = (recorded["slot"], Path(state_dir).absolute()) if recorded else None
    if found is None or not namespace_exists(namespace_name(name, EDGE)):
        raise LabError(f"lab {name} is not up: start it with `python -m lab up --name {name} --dir DIR`")
    slot, directory = found
    return LabTopology(name, slot, directory, recorded_server_count(LabLayout(Path(directory))))
