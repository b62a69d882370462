"""Lab identity and slots, no root needed: every checkout and stack gets its own lab name, slots
are chosen from a registry that names who holds them, and a stack's slot problems are worded
with its config key and never suggest taking down someone else's lab."""
from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from components.lab_step import recorded_slot
from hardened_lightsail.config import settings_from_values
from hardened_lightsail.effective_settings import effective_settings
from lab.errors import LabError
from lab.identity import slot_fix, stack_lab
from lab.slots import SlotUnavailable, check_slot, claim_slot, registered_labs
from lab.topology import ADMIN_CIDRS, DEPLOYER_CIDRS, NAME_PATTERN, ROOT, SLOT_COUNT, LabTopology, validate_name


def test_the_same_stack_in_two_checkouts_gets_two_labs(tmp_path):
    first, second = stack_lab(tmp_path / "main", "lab"), stack_lab(tmp_path / "feature", "lab")
    assert first.name != second.name
    assert first.name.startswith("lab-") and second.name.startswith("lab-")
    assert first.state_dir == (tmp_path / "main" / ".lab" / first.name).resolve()
    assert first.relative_state_dir == f".lab/{first.name}"
    assert stack_lab(tmp_path / "main", "lab") == first  # stable: a preview names the lab `up` makes


def test_stack_names_become_short_valid_lab_names(tmp_path):
    names = {stack: stack_lab(tmp_path, stack).name for stack in
             ("lab", "dev", "staging", "lab2", "trial-lab-3f9a1c", "Some.Stack_EU", "---", "x" * 100)}
    assert all(NAME_PATTERN.fullmatch(name) for name in names.values()), names
    assert names["Some.Stack_EU"].startswith("some-stack-eu-") and names["---"].startswith("lab-")
    assert names["trial-lab-3f9a1c"].startswith("trial-lab-3f9a1c-")
    assert len(set(names.values())) == len(names)
    # The old scheme put dev, staging and lab2 in one slot; names no longer decide slots at all.
    assert len({names["dev"], names["staging"], names["lab2"]}) == 3


@pytest.mark.parametrize("name", ["lab\n", "lab-1\n-x", "lab$(id)", "lab 1", "-lab", "Lab"])
def test_a_lab_name_that_would_break_a_namespace_or_command_is_refused(name):
    # All of it must match: `re.match` with `$` would let the trailing newline through.
    with pytest.raises(LabError, match="is not valid"):
        validate_name(name)


def test_deployer_cidrs_cover_every_slots_deployer_and_no_admin_client():
    deployer = [ipaddress.ip_network(cidr) for cidr in DEPLOYER_CIDRS]
    admins = [ipaddress.ip_network(cidr) for cidr in ADMIN_CIDRS]
    for slot in range(SLOT_COUNT):
        lab = LabTopology("demo", slot, "/tmp/x")
        for family in (4, 6):
            root, client = ipaddress.ip_address(lab.address(ROOT, family)), ipaddress.ip_address(lab.address("admin", family))
            assert any(root in network for network in deployer), (slot, root)
            assert not any(client in network for network in deployer), (slot, client)
            assert any(root in network for network in admins)


def _lab_settings(firewall: dict, target: str = "lab"):
    return settings_from_values({"target": target, "firewall": firewall})


def test_the_lab_adds_its_deployer_cidrs_whatever_the_slot_and_lightsail_adds_nothing():
    firewall = {"adminCidrs": list(ADMIN_CIDRS)}
    lab = effective_settings(_lab_settings(firewall)).firewall
    assert [str(n) for n in lab.deployer_addresses] == list(DEPLOYER_CIDRS)
    assert effective_settings(_lab_settings(firewall, "lightsail")) == _lab_settings(firewall, "lightsail")
    # Already listed: not twice.
    again = effective_settings(_lab_settings({**firewall, "deployerAddresses": [DEPLOYER_CIDRS[0]]})).firewall
    assert [str(n) for n in again.deployer_addresses] == list(DEPLOYER_CIDRS)


# --- the registry (HL_LAB_REGISTRY: a private file). This machine's real labs are hidden: these
# tests are about the registry's choices, and its entries are kept by their recent `since`.

@pytest.fixture
def registry(tmp_path, monkeypatch):
    import lab.slots
    path = tmp_path / "slots.json"
    monkeypatch.setenv("HL_LAB_REGISTRY", str(path))
    monkeypatch.setattr(lab.slots, "link_exists", lambda namespace, device: False)
    monkeypatch.setattr(lab.slots, "namespace_exists", lambda namespace: False)
    return path


def _hold(registry: Path, holders: dict) -> None:
    registry.write_text(json.dumps({"slots": {str(slot): {"since": time.time(), **entry}
                                              for slot, entry in holders.items()}}))


OTHER = {"name": "lab-0001", "dir": "/work/main/.lab/lab-0001", "owner": {"stack": "lab", "checkout": "/work/main"}}
ME = {"stack": "mine", "checkout": "/work/wt/mine"}


def test_a_requested_slot_held_by_another_checkout_is_refused_with_the_config_key(registry, tmp_path):
    _hold(registry, {9: OTHER})
    error = check_slot("mine-1234", tmp_path / "mine", requested=9, owner=ME)
    assert isinstance(error, SlotUnavailable) and error.requested == 9 and 9 not in error.free and 0 in error.free
    message = slot_fix(error, "mine")
    assert message.startswith("hardened-lightsail:lab.slot: slot 9 is taken by lab lab-0001 (stack lab of /work/main); "
                              "pick a free one: `scripts/pulumi config set --path hardened-lightsail:lab.slot 0 -s mine`")
    assert "`scripts/pulumi config rm --path hardened-lightsail:lab.slot -s mine`" in message
    assert "down" not in message and "destroy" not in message and "--slot" not in message


def test_without_a_request_the_preferred_then_the_lowest_free_slot_is_claimed(registry, tmp_path):
    _hold(registry, {0: OTHER})
    assert claim_slot("a-1111", tmp_path / "a", owner=ME) == 1
    assert claim_slot("b-2222", tmp_path / "b", preferred=7, owner=ME) == 7
    assert claim_slot("b-2222", tmp_path / "b", preferred=3) == 7  # a lab keeps the slot it has
    assert registered_labs()[7]["owner"] == ME


def test_all_slots_taken_names_only_this_checkouts_stacks_as_things_to_destroy(registry, tmp_path):
    holders = {slot: dict(OTHER, name=f"other-{slot}") for slot in range(SLOT_COUNT)}
    holders[4] = {"name": "old-9999", "dir": "/work/wt/mine/.lab/old-9999", "owner": {**ME, "stack": "old"}}
    _hold(registry, holders)
    error = check_slot("mine-1234", tmp_path / "mine", owner=ME)
    assert str(error.problem).startswith("all 16 lab slots are taken (16 by labs); this checkout's lab stacks hold "
                                         "some (old): `scripts/pulumi destroy -s STACK` frees the slot")
    assert "lab stacks hold" not in check_slot("x-1", tmp_path / "x", owner={**ME, "checkout": "/elsewhere"}).problem


def test_a_stack_whose_lab_moves_to_another_slot_is_not_refused_for_its_own_slot(registry, tmp_path):
    _hold(registry, {2: {"name": "mine-1234", "dir": str(tmp_path / "mine"), "owner": ME}})
    assert check_slot("mine-1234", tmp_path / "mine", requested=5, owner=ME, may_move=True) is None
    assert "already exists in slot 2" in str(check_slot("mine-1234", tmp_path / "mine", requested=5))
    assert check_slot("mine-1234", tmp_path / "mine", requested=2, owner=ME) is None


def test_a_slot_colliding_with_the_machine_is_refused_and_skipped(registry, tmp_path):
    collides = lambda slot: ["192.0.2.128/29 (deployer uplink) holds 192.0.2.130"] if slot == 0 else []  # noqa: E731
    error = check_slot("mine-1234", tmp_path / "mine", requested=0, conflicts=collides)
    assert "slot 0 collides with this machine's own addresses: 192.0.2.128/29" in str(error)
    assert claim_slot("mine-1234", tmp_path / "mine", conflicts=collides) == 1


def test_the_recorded_slot_is_read_from_the_previous_up_only_when_it_is_one():
    assert recorded_slot('{"slot": 5, "privateKey": "..."}') == 5
    assert [recorded_slot(text) for text in (None, "", "not json", '{"slot": "5"}', "[]")] == [None] * 5
