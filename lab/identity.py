"""Which lab a Pulumi stack of a checkout stands up: its name, its directory and how it is
described to other users of the machine (`python -m lab list`, slot messages).

Stacks are per checkout (each has its own `.pulumi-state`), network namespaces are per machine:
the name is the stack's, made unique by a hash of the checkout's path and the stack name, so any
number of checkouts and stacks have labs side by side. It is known without looking at the
machine, so a preview names the same lab that `up` makes."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import LabError
from .topology import NAME_MAX_LENGTH, validate_name

SLOT_KEY = "hardened-lightsail:lab.slot"  # the stack config key that chooses the slot
HASH_LENGTH = 4  # hex digits; only labs whose readable part is the same can collide at all
LAB_DIR_NAME = ".lab"  # under the checkout, git-ignored


@dataclass(frozen=True)
class LabIdentity:
    name: str  # the lab's name, e.g. "lab-7c2e": namespaces hl-lab-7c2e-srv, ...
    state_dir: Path  # keys, configs, pid files, logs; inside the checkout
    stack: str
    checkout: Path

    @property
    def owner(self) -> dict:
        """Who holds the lab, as the slot registry records it (and its messages name it)."""
        return {"stack": self.stack, "checkout": str(self.checkout)}

    @property
    def relative_state_dir(self) -> str:
        """The directory relative to the checkout (what the stack's commands are given)."""
        return str(self.state_dir.relative_to(self.checkout))

    def slot_problem(self, requested: int | None = None, may_move: bool = False) -> LabError | None:
        """Why `up` could not give this lab a slot now (None: it could); claims nothing.
        `may_move`: the stack's lab is replaced to move it, so its present slot is no obstacle."""
        from .machine_addresses import machine_conflicts
        from .slots import check_slot
        return check_slot(self.name, self.state_dir, requested, machine_conflicts(self.name, self.state_dir),
                          owner=self.owner, may_move=may_move)


def slot_fix(error: LabError, stack: str) -> str:
    """A slot problem worded for a stack: the fix is its config key, never another lab's `down`."""
    from .slots import SlotUnavailable  # (as in slot_problem: loaded when a slot is checked)

    if not isinstance(error, SlotUnavailable):
        return str(error)
    if error.requested is None:
        return f"{error.problem}; `python -m lab list` shows who holds them"
    choose = (f"pick a free one: `scripts/pulumi config set --path {SLOT_KEY} {error.free[0]} -s {stack}` "
              f"(free now: {', '.join(map(str, error.free))})" if error.free else "no slot is free now")
    return (f"{SLOT_KEY}: {error.problem}; {choose}, or let `up` allocate one: "
            f"`scripts/pulumi config rm --path {SLOT_KEY} -s {stack}`")


def lab_name(checkout: Path, stack: str) -> str:
    """`<stack, shortened to a-z 0-9 ->-<hash>`: readable, unique per checkout and stack."""
    digest = hashlib.sha256(f"{Path(checkout).resolve()}\0{stack}".encode()).hexdigest()[:HASH_LENGTH]
    room = NAME_MAX_LENGTH - HASH_LENGTH - 1
    readable = re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-")[:room].strip("-")
    return validate_name(f"{readable}-{digest}" if readable else f"lab-{digest}")


def stack_lab(checkout: Path, stack: str) -> LabIdentity:
    checkout = Path(checkout).resolve()
    name = lab_name(checkout, stack)
    return LabIdentity(name=name, state_dir=checkout / LAB_DIR_NAME / name, stack=stack, checkout=checkout)
