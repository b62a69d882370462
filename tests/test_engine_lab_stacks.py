"""Lab stacks side by side, through the real engine: two checkouts of the project (copies of this
working tree), each with its own backend and its own `lab` stack, plus three more lab stacks,
all stood up at once. Each gets its own lab (name from checkout and stack) and a free slot,
recorded in its state; an explicit lab.slot is refused at preview when another stack holds it
and honoured when free; destroy leaves nothing of any of them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from lab.identity import stack_lab
from lab.slots import registered_labs

from engine import PROJECT_DIR, engine_missing_reason

pytestmark = [pytest.mark.engine, pytest.mark.netfilter,
              pytest.mark.skipif(engine_missing_reason() is not None, reason=engine_missing_reason() or ""),
              pytest.mark.skipif(os.geteuid() != 0, reason="the lab makes network namespaces: needs root")]

POLICY = {"adminCidrs": ["192.0.2.0/24", "2001:db8:a::/48"], "confirmTimeoutSeconds": 20,
          "services": [{"name": "http", "protocol": "tcp", "ports": "80"}]}
# (checkout, stack): `dev`, `staging` and `lab2` all took slot 5 when slots came from the name.
STACKS = [("a", "lab"), ("a", "dev"), ("a", "staging"), ("b", "lab"), ("b", "lab2")]


def make_checkout(directory: Path) -> Path:
    """A second clone, as far as the program can tell: this working tree's files (tracked and
    new), sharing the built tools and the virtualenv (both are git-ignored build outputs)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=PROJECT_DIR,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = PROJECT_DIR / relative
        if source.is_file():
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, directory / relative)
    for shared in (".venv", ".tools"):
        (directory / shared).symlink_to(PROJECT_DIR / shared)
    return directory


@pytest.fixture
def checkouts(tmp_path):
    made = {name: make_checkout(tmp_path / f"checkout-{name}") for name in ("a", "b")}
    backends = {name: tmp_path / f"backend-{name}" for name in made}
    for backend in backends.values():
        backend.mkdir()
    for checkout, stack in STACKS:
        (made[checkout] / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": {
            "hardened-lightsail:target": "lab", "hardened-lightsail:firewall": POLICY}}))
    yield made, backends
    for checkout, stack in STACKS:  # a failed assertion must not leave labs behind
        run(made, backends, checkout, ["destroy", "-s", stack, "--yes", "--skip-preview", "--non-interactive"],
            check=False)
        identity = stack_lab(made[checkout], stack)
        subprocess.run([str(PROJECT_DIR / "scripts" / "hl-lab"), "down"], capture_output=True, check=False,
                       env={**os.environ, "HL_LAB_NAME": identity.name, "HL_LAB_DIR": str(identity.state_dir)})


def run(checkouts, backends, checkout: str, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """That checkout's own scripts/pulumi, with its own backend (each clone has its .pulumi-state)."""
    backend = backends[checkout]
    environment = {**os.environ, "PULUMI_BACKEND_URL": f"file://{backend}", "PULUMI_HOME": str(backend / "home"),
                   "HL_USE_BUILT_PULUMI": "1", "PULUMI_CONFIG_PASSPHRASE": "hardened-lightsail-lab"}
    result = subprocess.run([str(checkouts[checkout] / "scripts" / "pulumi"), *args], capture_output=True, text=True,
                            timeout=600, env=environment)
    if check and result.returncode != 0:
        raise AssertionError(f"{checkout}: pulumi {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def outputs_of(checkouts, backends, checkout: str, stack: str) -> dict:
    return json.loads(run(checkouts, backends, checkout, ["stack", "output", "-s", stack, "--json"]).stdout)


def test_two_checkouts_lab_stacks_and_three_more_run_side_by_side(checkouts):
    made, backends = checkouts
    for checkout, stack in STACKS:
        run(made, backends, checkout, ["stack", "init", stack])
    started = time.monotonic()
    with ThreadPoolExecutor(len(STACKS)) as pool:
        ups = list(pool.map(lambda pair: run(made, backends, pair[0], [
            "up", "-s", pair[1], "--yes", "--skip-preview", "--non-interactive"], check=False), STACKS))
    all_up = time.monotonic() - started
    for (checkout, stack), result in zip(STACKS, ups, strict=True):
        assert result.returncode == 0, f"{checkout}/{stack}:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"

    outputs = {pair: outputs_of(made, backends, *pair) for pair in STACKS}
    slots = {pair: out["labSlot"] for pair, out in outputs.items()}
    assert len(set(slots.values())) == len(STACKS), slots
    assert len({out["labServerNamespace"] for out in outputs.values()}) == len(STACKS)
    for (checkout, stack), out in outputs.items():
        assert out["labServerNamespace"] == f"hl-{stack_lab(made[checkout], stack).name}-srv"
        assert "verified:" in out["verifiedExposure"] and "MISMATCH" not in out["verifiedExposure"], (checkout, stack)
    registry = {entry["name"]: entry for entry in registered_labs().values()}
    for checkout, stack in STACKS:
        entry = registry[stack_lab(made[checkout], stack).name]
        assert entry["owner"] == {"stack": stack, "checkout": str(made[checkout].resolve())}

    # Recorded in the state: a preview knows every address and changes nothing.
    for pair in STACKS:
        run(made, backends, pair[0], ["preview", "-s", pair[1], "--expect-no-changes", "--non-interactive"])

    # An explicit slot another stack holds is refused at preview, with the config key as the fix;
    # a free one is honoured (the lab moves: taken down, then made again in that slot).
    taken = slots[("a", "lab")]
    run(made, backends, "b", ["config", "set", "--path", "hardened-lightsail:lab.slot", str(taken), "-s", "lab2"])
    refused = run(made, backends, "b", ["preview", "-s", "lab2", "--non-interactive"], check=False)
    assert refused.returncode != 0
    holder = stack_lab(made["a"], "lab").name
    assert (f"hardened-lightsail:lab.slot: slot {taken} is taken by lab {holder} (stack lab of {made['a'].resolve()}); "
            "pick a free one: `scripts/pulumi config set --path hardened-lightsail:lab.slot") in refused.stdout
    assert "down" not in refused.stdout.split("hardened-lightsail:lab.slot: slot")[1].splitlines()[0]
    # The highest free slot: labs that `up` allocates meanwhile (other test files run side by
    # side) take the lowest free one.
    free = max(slot for slot in range(16) if slot not in slots.values() and slot not in registered_labs())
    run(made, backends, "b", ["config", "set", "--path", "hardened-lightsail:lab.slot", str(free), "-s", "lab2"])
    run(made, backends, "b", ["up", "-s", "lab2", "--yes", "--skip-preview", "--non-interactive"])
    moved = outputs_of(made, backends, "b", "lab2")
    assert moved["labSlot"] == free and "verified:" in moved["verifiedExposure"]

    started = time.monotonic()
    with ThreadPoolExecutor(len(STACKS)) as pool:
        downs = list(pool.map(lambda pair: run(made, backends, pair[0], [
            "destroy", "-s", pair[1], "--yes", "--skip-preview", "--non-interactive"], check=False), STACKS))
    all_down = time.monotonic() - started
    assert [result.returncode for result in downs] == [0] * len(STACKS), [r.stdout[-2000:] for r in downs]
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = {stack_lab(made[checkout], stack).name for checkout, stack in STACKS}
    assert not any(f"hl-{name}-" in namespaces for name in names)
    assert not names & {entry["name"] for entry in registered_labs().values()}
    print(f"\nside by side: {len(STACKS)} lab stacks up at once in {all_up:.1f} s, destroyed in {all_down:.1f} s")
