"""Which lab holds which slot: a small JSON registry guarded by an exclusive file lock, so two
`up`s started at once never pick the same addresses.

The registry lives in /run (it is forgotten at reboot, like the namespaces it describes);
HL_LAB_REGISTRY points elsewhere. A slot also counts as taken when its uplink interface exists
in the root namespace, whoever made it. Each entry names its holder (a stack and its checkout,
or a `python -m lab` directory), so a busy slot is explained, and a fix never suggests tearing
down a lab that belongs to someone else."""
from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import LabError
from .netns import link_exists, namespace_exists
from .topology import EDGE, SLOT_COUNT, namespace_name, uplink_interface_name, validate_slot

DEFAULT_REGISTRY = "/run/hardened-lightsail/lab-slots.json"
# An entry whose lab has no namespace yet is kept this long (an `up` may be on its way).
UNBUILT_GRACE_SECONDS = 300

Conflicts = Callable[[int], list[str]]  # why this machine can't give a new lab that slot


class SlotUnavailable(LabError):
    """No slot can be given: `problem` says why; `free` lists the slots that could be.

    str() carries the lab CLI's fix (`--slot`); a stack's caller words its own fix from the
    fields (the config key), see components/lab_step.py."""

    def __init__(self, problem: str, requested: int | None, free: list[int], cli_fix: str):
        super().__init__(f"{problem}: {cli_fix}")
        self.problem, self.requested, self.free = problem, requested, free


@dataclass(frozen=True)
class Holder:
    """A registry entry: lab `name` with directory `dir`, held by `owner` (None: the lab CLI)."""

    slot: int
    name: str
    dir: str
    owner: dict | None  # {"stack": ..., "checkout": ...} for a Pulumi stack's lab

    def describe(self) -> str:
        if self.owner:
            return f"lab {self.name} (stack {self.owner.get('stack')} of {self.owner.get('checkout')})"
        return f"lab {self.name} (directory {self.dir})"


def registry_path() -> Path:
    return Path(os.environ.get("HL_LAB_REGISTRY", DEFAULT_REGISTRY))


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (json.JSONDecodeError, OSError):
        return {}  # a damaged registry is rebuilt from what exists


@contextmanager
def _locked_registry() -> Iterator[dict]:
    path = registry_path()
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        registry = _read(path)
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


def _holders(slots: dict) -> list[Holder]:
    return [Holder(int(key), entry["name"], entry["dir"], entry.get("owner")) for key, entry in sorted(
        slots.items(), key=lambda item: int(item[0]))]


def _usable(slots: dict, slot: int, conflicts: Conflicts) -> str | None:
    """None when a new lab may take `slot`; else who or what holds it."""
    if str(slot) in slots:
        return f"slot {slot} is taken by {_holders({str(slot): slots[str(slot)]})[0].describe()}"
    if link_exists(None, uplink_interface_name(slot)):
        return f"slot {slot} is taken by a lab outside the registry (its uplink {uplink_interface_name(slot)} exists)"
    found = conflicts(slot)
    if found:
        return f"slot {slot} collides with this machine's own addresses: {'; '.join(found)}"
    return None


def _choose(slots: dict, name: str, state_dir: Path, requested: int | None, preferred: int | None,
            conflicts: Conflicts, owner: dict | None, may_move: bool = False) -> int:
    """The slot lab `name` gets (raises when there is none); `slots` is the pruned registry.
    `may_move`: the lab will be taken down before it comes up in `requested` (a stack's lab
    whose lab.slot changed is replaced that way), so its present slot is no obstacle."""
    own = next((holder for holder in _holders(slots) if holder.name == name), None)
    if own is not None:
        if own.dir != str(state_dir):
            raise LabError(f"the lab name {name} is already held by {own.describe()}, whose directory is "
                           f"{own.dir}, not {state_dir}: give this lab another name")
        if requested is None or requested == own.slot:
            return own.slot
        if not may_move:
            raise LabError(f"lab {name} already exists in slot {own.slot}, not {requested}: take it down "
                           "first to move it")
    candidates = [validate_slot(requested)] if requested is not None else \
        ([preferred] if preferred is not None else []) + [s for s in range(SLOT_COUNT) if s != preferred]
    reasons = {}
    for slot in candidates:
        reasons[slot] = _usable(slots, slot, conflicts)
        if reasons[slot] is None:
            return slot
    free = [slot for slot in range(SLOT_COUNT) if slot not in reasons and _usable(slots, slot, conflicts) is None]
    if requested is not None:
        raise SlotUnavailable(reasons[requested], requested, free,
                              "pick another --slot, or none (the lowest usable slot is chosen)")
    raise SlotUnavailable(_all_taken(slots, reasons, owner), None, [], "`python -m lab list` shows who holds them")


def _all_taken(slots: dict, reasons: dict, owner: dict | None) -> str:
    """Every slot is busy: who holds them, and which of them this checkout could give back."""
    ours = sorted({holder.owner["stack"] for holder in _holders(slots)
                   if owner and holder.owner and holder.owner.get("checkout") == owner.get("checkout")})
    unusable = [reason for reason in reasons.values() if "collides" in reason]
    text = f"all {SLOT_COUNT} lab slots are taken ({len(slots)} by labs" + \
        (f", {len(unusable)} collide with this machine's addresses" if unusable else "") + ")"
    if ours:
        text += (f"; this checkout's lab stacks hold some ({', '.join(ours)}): `scripts/pulumi destroy -s STACK` "
                 "frees the slot of one you no longer need")
    return text


def claim_slot(name: str, state_dir: Path, requested: int | None = None, conflicts: Conflicts = lambda slot: [],
               preferred: int | None = None, owner: dict | None = None) -> int:
    """The slot of lab `name`: its existing one, `requested`, else `preferred` if usable, else the
    lowest usable one; recorded in the registry under `owner`.

    `conflicts(slot)` says why a new lab can't use a slot on this machine (see
    machine_addresses): a requested slot is then refused, and the automatic choice skips it."""
    with _locked_registry() as slots:
        _prune(slots)
        slot = _choose(slots, name, Path(state_dir), requested, preferred, conflicts, owner)
        slots[str(slot)] = {**slots.get(str(slot), {}), "name": name, "dir": str(state_dir), "since": time.time(),
                            **({"owner": owner} if owner else {})}
        return slot


def check_slot(name: str, state_dir: Path, requested: int | None = None, conflicts: Conflicts = lambda slot: [],
               owner: dict | None = None, may_move: bool = False) -> LabError | None:
    """What claim_slot would refuse, without claiming (and without the lock: for previews, which
    may run without root). None when `up` would get a slot."""
    slots = dict(_read(registry_path()).get("slots", {}))
    _prune(slots)
    try:
        _choose(slots, name, Path(state_dir), requested, None, conflicts, owner, may_move)
    except LabError as error:
        return error
    return None


def find_slot(name: str) -> int | None:
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
