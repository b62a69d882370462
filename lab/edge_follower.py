"""The lab edge follows the host back after a lock-out drill: when the server rolls back a
release whose policy set `allowLockout` (a drill), the edge returns to the cloud layer of the
release the host is back on, so the lab after a drill is what the policy in force says and the
admin client gets in again. (Lightsail's own firewall has no rollback: it keeps the drill's
layer, SSH open to the drill's admin CIDRs and the deployer, until the next `up`.) Any other
rollback (a confirm that never came through, a network blip) leaves the edge as the stack set
it, as Lightsail would: the stack's state says that layer is in force, and the next `up`
verifies against it.

Started by `lab up` as a daemon in the edge namespace (`python -m lab.edge_follower`). It polls
each server's state file, which the lab sees through that server's bind mount (`state` key=value
lines, and `releases/HASH/cloud-ports.json`, as payload/hlfw documents them), and notes what it
did in DIR/edge/returned.json until the stack hands the edge a new layer. The servers of a lab
share the edge's one layer (one policy), so a drill's rollback on any of them returns it for all
(whether it was a drill is read from that server's rolled-back release)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from .cloud_layer import describe_open_ports, load_cloud_layer
from .errors import LabError
from .layout import LabLayout, ServerLayout
from .processes import detach
from .topology import LabTopology, recorded_server_count

POLL_SECONDS = 0.25
HOST_STATE_DIR = "/var/lib/hardened-lightsail"  # the payload's state directory, as the server sees it
NOTE = "returned.json"


def host_state(layout: ServerLayout) -> dict[str, str]:
    """A server's payload state file (empty when the host never ran it)."""
    try:
        text = (layout.server_fs(HOST_STATE_DIR) / "state").read_text()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _rollback_key(state: dict) -> tuple[str, str] | None:
    """Identifies one rollback (release and when), or None when the host is not rolled back."""
    return (state.get("release", ""), state.get("changed_at", "")) if state.get("state") == "rolled-back" else None


def _layer_in_force_on_the_host(layout: LabLayout, server: ServerLayout, state: dict) -> tuple[Path | None, str]:
    """The cloud layer of the release the host runs now, or else the edge's layer before the last one."""
    active = state.get("active_release", "")
    release_layer = server.server_fs(HOST_STATE_DIR) / "releases" / active / "cloud-ports.json"
    if active and release_layer.exists():
        return release_layer, f"the cloud layer of release {active}, which the host runs again"
    previous = layout.edge_dir / "previous-cloud-ports.json"
    if previous.exists():
        return previous, "the cloud layer it had before (the host has no confirmed release)"
    return None, ""


def was_a_drill(server: ServerLayout, release: str) -> bool:
    """Did the release a server rolled back have a policy that allows a lock-out
    (firewall.allowLockout)?"""
    policy = server.server_fs(HOST_STATE_DIR) / "releases" / release / "policy.json"
    try:
        return json.loads(policy.read_text()).get("allowLockout") is True
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return False


def follow_rollback(lab: LabTopology, state: dict, server: int = 0) -> dict | None:
    """Return the edge after the rollback `state` (of server `server`) describes; the note
    written, or None if the edge already matched."""
    layer, what = _layer_in_force_on_the_host(lab.layout, lab.server_layout(server), state)
    in_force = lab.layout.edge_dir / "cloud-ports.json"
    if layer is None or (in_force.exists() and json.loads(in_force.read_text()) == json.loads(layer.read_text())):
        return None
    infos = load_cloud_layer(lab, layer, keep_previous=False)
    note = {"at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "rolledBack": state.get("release"),
            "release": state.get("active_release") or None,
            "server": server,
            "message": f"release {state.get('release')} was rolled back on {_host(lab, server)}, so the lab edge went "
                       f"back to {what}: open now: {describe_open_ports(infos)}"}
    (lab.layout.edge_dir / NOTE).write_text(json.dumps(note, indent=2) + "\n")
    return note


def _host(lab: LabTopology, server: int) -> str:
    """"the host" of a one-server lab; in a fleet, which one (the edge serves them all)."""
    return "the host" if lab.servers == 1 else f"the host of server {server} (of {lab.servers}, which share the edge)"


def return_note(layout: LabLayout) -> dict | None:
    """What the follower last did, while it still explains the layer in force."""
    try:
        return json.loads((layout.edge_dir / NOTE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def forget_return(layout: LabLayout) -> None:
    """The stack handed the edge a new layer: the note no longer explains what is in force."""
    (layout.edge_dir / NOTE).unlink(missing_ok=True)


def _servers_now(lab: LabTopology) -> LabTopology:
    """The lab as it is now: `up` may have added or removed servers since the follower started."""
    servers = recorded_server_count(lab.layout)
    return lab if servers == lab.servers else LabTopology(lab.name, lab.slot, lab.state_dir, servers)


def follow(lab: LabTopology) -> None:
    # Rollbacks from before we started (or before a server was added) are not ours.
    seen: dict[int, tuple | None] = {}
    while True:
        lab = _servers_now(lab)
        for server in range(lab.servers):
            layout = lab.server_layout(server)
            state = host_state(layout)
            key = _rollback_key(state)
            if server in seen and key is not None and key != seen[server] and not was_a_drill(layout, key[0]):
                print(f"release {key[0]} was rolled back on server {server}, not in a drill: the edge keeps the "
                      "layer the stack gave it", flush=True)
            elif server in seen and key is not None and key != seen[server]:
                try:
                    note = follow_rollback(lab, state, server)
                    print(note["message"] if note else f"release {key[0]} was rolled back on server {server}; the "
                          "edge already matched", flush=True)
                except (LabError, OSError, ValueError) as error:
                    print(f"could not return the edge after the rollback of {key[0]} on server {server}: {error}",
                          flush=True)
            seen[server] = key
        time.sleep(POLL_SECONDS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.edge_follower", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--pid-file", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args(argv)
    lab = LabTopology(args.name, args.slot, Path(args.dir))
    if not detach(args.pid_file, args.log):
        follow(lab)
    return 0


if __name__ == "__main__":
    sys.exit(main())
