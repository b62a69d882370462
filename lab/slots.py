"""Which lab holds which slot: a small JSON registry guarded by an exclusive file lock, so two
`up`s started at once never pick the same addresses.

The registry lives in /run (it is forgotten at reboot, like the namespaces it describes);
HL_LAB_REGISTRY points elsewhere. A slot also counts as taken when its uplink interface exists
in the root namespace, whoever made it."""
from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from .errors import LabError
from .netns import link_exists, namespace_exists
from .topology import EDGE, SLOT_COUNT, namespace_name, uplink_interface_name, validate_slot

DEFAULT_REGISTRY = "/run/hardened-lightsail/lab-slots.json"
# An entry whose lab has no namespace yet is kept this long (an `up` may be on its way).
UNBUILT_GRACE_SECONDS = 300


def registry_path() -> Path:
    return Path(os.environ.get("HL_LAB_REGISTRY", DEFAULT_REGISTRY))


@contextmanager
def _locked_registry() -> Iterator[dict]:
    path = registry_path()
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            registry = json.loads(path.read_text()) if path.exists() else {}
        except (json.JSONDecodeError, OSError):
            registry = {}  # a damaged registry is rebuilt from what exists
        slots = registry.setdefault("slots", {})
        yield slots
        path.with_name(path.name + ".tmp").write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n")
        os.replace(path.with_name(path.name + ".tmp"), path)


def _built(name: str, slot: int) -> bool:
    return namespace_exists(namespace_name(name, EDGE)) or link_exists(None, uplink_interface_name(slot))


def _prune(slots: dict) -> None:
    """Forget entries whose lab is gone (its namespaces were removed without `down`)."""
    now = time.time()
    for key, entry in list(slots.items()):
        if not _built(entry["name"], int(key)) and now - entry.get("since", 0) > UNBUILT_GRACE_SECONDS:
            del slots[key]


def claim_slot(name: str, state_dir: Path, requested: Optional[int] = None,
               conflicts: Callable[[int], list[str]] = lambda slot: []) -> int:
    """The slot of lab `name`: its existing one, `requested`, or the lowest free one.

    `conflicts(slot)` says why a new lab can't use a slot on this machine (see
    machine_addresses): a requested slot is then refused, and the automatic choice skips it."""
    with _locked_registry() as slots:
        _prune(slots)
        for key, entry in slots.items():
            if entry["name"] == name:
                if entry["dir"] != str(state_dir):
                    raise LabError(f"lab {name} already exists with directory {entry['dir']}: "
                                   f"run `python -m lab down --name {name} --dir {entry['dir']}` first")
                if requested is not None and requested != int(key):
                    raise LabError(f"lab {name} already exists in slot {key}, not {requested}: "
                                   "run down first to move it")
                entry["since"] = time.time()
                return int(key)
        candidates = [validate_slot(requested)] if requested is not None else range(SLOT_COUNT)
        collisions = {}
        for slot in candidates:
            if str(slot) in slots or link_exists(None, uplink_interface_name(slot)):
                continue
            collisions[slot] = conflicts(slot)
            if not collisions[slot]:
                slots[str(slot)] = {"name": name, "dir": str(state_dir), "since": time.time()}
                return slot
        if requested is not None and collisions:
            raise LabError(f"slot {requested} collides with this machine's own addresses: "
                           f"{'; '.join(collisions[requested])}. Pick another --slot, or none (the "
                           "lowest slot that collides with nothing is chosen)")
        if requested is not None:
            holder = slots.get(str(requested), {}).get("name", "something outside the registry")
            raise LabError(f"slot {requested} is taken by lab {holder}: pick another --slot or none")
        unusable = "".join(f"; slot {slot} collides with this machine: {reasons[0]}"
                           for slot, reasons in collisions.items())
        raise LabError(f"all {SLOT_COUNT} lab slots are taken{' or unusable' if unusable else ''}: run "
                       f"`python -m lab down` for a lab you no longer need{unusable}")


def find_slot(name: str) -> Optional[int]:
    with _locked_registry() as slots:
        for key, entry in slots.items():
            if entry["name"] == name:
                return int(key)
    return None


def release_slot(name: str) -> None:
    with _locked_registry() as slots:
        for key in [key for key, entry in slots.items() if entry["name"] == name]:
            del slots[key]


def registered_labs() -> dict[int, dict]:
    with _locked_registry() as slots:
        _prune(slots)
        return {int(key): dict(entry) for key, entry in slots.items()}
