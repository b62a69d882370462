"""Lab fixtures and the root-namespace guard, imported by tests/conftest.py.

- `root_namespace_guard` (session, autouse): records the root namespace's iptables, ip6tables,
  nftables and ipset state, links and network namespaces at the start; fails the session if the
  firewall changed, or if a namespace or link the tests made is left behind (under CI: any new
  one; elsewhere, where other people's runs may be busy, those named after this run's labs).
  Under pytest-xdist each worker checks the firewall and the controller, once all are done, the
  links and namespaces (pytest_sessionstart/pytest_sessionfinish).
- `lab` (module): one running lab for a test module, torn down however the module ends.
- `lab_factory` (function): more labs in one test (`lab_factory.up(slot=None, cloud_ports=None,
  servers=1, host_keys=None, boot=None)`).
Tests that need root and network namespaces carry `@pytest.mark.netfilter`; where those are not
available they are skipped, with the reason."""
from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import lab_down, lab_up
from lab.slots import registered_labs
from lab.topology import MAX_SERVERS, NAMESPACE_SUFFIX, namespace_name, server_role, uplink_interface_name

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Under pytest-xdist (scripts/test runs test files side by side) each worker is a process of its
# own: the controller names the run, its workers inherit the name through the environment.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... in a worker; else unset
if XDIST_WORKER is None:
    os.environ["HL_TEST_RUN"] = f"t{os.getpid() % 100000}"
TEST_RUN = os.environ.get("HL_TEST_RUN") or f"t{os.getpid() % 100000}"
# Every lab this test session (this process) makes is named SESSION_LAB_PREFIX + something;
# every lab of the whole run starts with TEST_RUN.
SESSION_LAB_PREFIX = TEST_RUN + (XDIST_WORKER or "").removeprefix("gw") + "-"


@functools.cache
def netns_unavailable_reason() -> str | None:
    """Why namespace tests can't run here, or None. Tries a throwaway namespace for real."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (run the suite as root)"
    for tool in ("ip", "iptables-restore", "ip6tables-restore", "unshare", "sshd", "nginx",
                 "ssh-keygen", "openssl"):
        if shutil.which(tool, path=SYSTEM_PATH) is None:
            return f"{tool} is not installed (see lab/README.md for the Debian packages)"
    probe = f"hl-capcheck-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _cost_rank(item) -> int:
    """Real-engine tests first, then the other namespace tests, then the quick ones: scheduled
    in this order, the long files start at once and the quick ones fill the gaps at the end."""
    return 0 if "engine" in item.keywords else 1 if "netfilter" in item.keywords else 2


def pytest_collection_modifyitems(config, items):
    # A stable sort: each file's tests keep their order (module fixtures rely on it).
    items.sort(key=_cost_rank)
    if not any("netfilter" in item.keywords for item in items):
        return
    reason = netns_unavailable_reason()
    if reason:
        skip = pytest.mark.skip(reason=f"netfilter test skipped: {reason}")
        for item in items:
            if "netfilter" in item.keywords:
                item.add_marker(skip)


# --- the root namespace guard ---------------------------------------------------------------

_COUNTERS = re.compile(r"\[\d+:\d+\]|packets \d+ bytes \d+")


def _listing(argv: list[str]) -> str | None:
    """Output of a read-only listing command, counters and comments removed; None if absent."""
    if shutil.which(argv[0], path=SYSTEM_PATH) is None:
        return None
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        return f"<exit {result.returncode}: {result.stderr.strip()}>"
    return "\n".join(_COUNTERS.sub("", line) for line in result.stdout.splitlines()
                     if not line.startswith("#"))


def root_firewall() -> dict[str, str | None]:
    """The root namespace's firewall state as text (what must never change)."""
    return {
        "iptables-save": _listing(["iptables-save"]),
        "ip6tables-save": _listing(["ip6tables-save"]),
        "nft list ruleset": _listing(["nft", "list", "ruleset"]),
        "ipset list -n": _listing(["ipset", "list", "-n"]),
    }


def _root_links() -> set[str]:
    output = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in output.splitlines() if ":" in line}


def _namespaces() -> set[str]:
    output = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in output.splitlines() if line.strip()}


def _other_peoples_labs() -> set[str]:
    """Namespaces and uplinks of labs someone else runs on this machine (a `scripts/pulumi up
    -s lab` next to the tests): they may come and go during the session without our doing."""
    names = set()
    for slot, entry in registered_labs().items():
        if not entry["name"].startswith(TEST_RUN):
            names.add(uplink_interface_name(slot))
            names.update(namespace_name(entry["name"], role) for role in NAMESPACE_SUFFIX)
            names.update(namespace_name(entry["name"], server_role(index)) for index in range(MAX_SERVERS))
    return names


def root_snapshot() -> dict:
    return {"firewall": root_firewall(), "links": _root_links(), "namespaces": _namespaces(),
            "others": _other_peoples_labs()}


def guard_problems(before: dict, after: dict, strict: bool) -> tuple[list[str], list[str]]:
    """What the tests changed on this machine: (problems, notes); no problems: nothing changed.

    strict (CI, which runs alone): every new namespace or link counts. Otherwise other people's
    test runs may be busy on the same machine, so only names of this session's labs count."""
    problems = []
    for name, text in before["firewall"].items():
        if after["firewall"][name] != text:
            problems.append(f"the root namespace's `{name}` changed:\n--- before\n{text}\n"
                            f"--- after\n{after['firewall'][name]}")
    others = before["others"] | after["others"]
    left = sorted(((after["links"] - before["links"]) | (after["namespaces"] - before["namespaces"])) - others)
    gone = sorted(before["links"] - after["links"] - others)
    notes = []
    if not strict:
        unsure = [name for name in left if TEST_RUN not in name]
        if unsure:
            notes.append(f"namespaces/links appeared during the tests and are still there "
                         f"(another run's?): {unsure}")
        left = [name for name in left if name not in unsure]
    if left or gone:
        problems.append(f"links or namespaces left behind: {left}; root links removed: {gone}")
    return problems, notes


@pytest.fixture(scope="session", autouse=True)
def root_namespace_guard():
    if os.geteuid() != 0:  # without root the tests can't change the firewall, nor read it
        yield
        return
    before = root_snapshot()
    yield
    after = root_snapshot()
    if XDIST_WORKER:
        # Other workers' labs come and go meanwhile: the controller judges links and namespaces
        # once every worker is done (pytest_sessionfinish); a worker judges the firewall.
        after = {**after, "links": before["links"], "namespaces": before["namespaces"]}
    problems, notes = guard_problems(before, after, strict=bool(os.environ.get("CI")))
    for note in notes:
        sys.stderr.write(f"\nnote: {note}\n")
    if problems:
        pytest.fail("the tests changed this machine:\n" + "\n".join(problems), pytrace=False)


def _xdist_controller(config) -> bool:
    """This process hands the tests to xdist workers and runs none itself."""
    return XDIST_WORKER is None and bool(getattr(config.option, "numprocesses", None))


def pytest_sessionstart(session):
    if os.geteuid() == 0 and _xdist_controller(session.config):
        session.config.stash[_ROOT_BEFORE] = root_snapshot()


def pytest_sessionfinish(session, exitstatus):
    before = session.config.stash.get(_ROOT_BEFORE, None)
    if before is None:
        return
    problems, notes = guard_problems(before, root_snapshot(), strict=bool(os.environ.get("CI")))
    for line in [f"note: {note}" for note in notes] + problems:
        sys.stderr.write(f"\n{line}\n")
    if problems:
        sys.stderr.write("\nthe tests changed this machine (see above)\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_ROOT_BEFORE = pytest.StashKey[dict]()


# --- labs ---------------------------------------------------------------------------------------

_fixture_uses = itertools.count()


class LabFactory:
    """Stands labs up under a tmp dir and takes every one of them down at the end."""

    def __init__(self, tmp_path_factory):
        # Lab names: unique per test run and fixture use, short enough for namespace names.
        self._prefix = f"{SESSION_LAB_PREFIX}{next(_fixture_uses)}-"
        self._tmp, self._made = tmp_path_factory, []

    def up(self, slot: int | None = None, cloud_ports=None, **options):
        """A new lab; `options` go to lab_up (servers, host_keys, boot)."""
        name = f"{self._prefix}{len(self._made)}"
        state_dir = self._tmp.mktemp(f"lab-{name}")
        self._made.append((name, state_dir))  # before up: a half-built lab is torn down too
        return lab_up(name, state_dir, slot=slot, cloud_ports=cloud_ports, **options)

    def down_all(self) -> None:
        errors = []
        for name, state_dir in reversed(self._made):
            try:
                lab_down(name, state_dir)
            except Exception as error:  # keep going: every lab gets its chance to go
                errors.append(f"{name}: {error}")
        self._made.clear()
        if errors:
            raise RuntimeError("lab teardown failed: " + "; ".join(errors))


def _factory(tmp_path_factory, request) -> LabFactory:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    factory = LabFactory(tmp_path_factory)
    request.addfinalizer(factory.down_all)
    return factory


@pytest.fixture(scope="module")
def lab(tmp_path_factory, request):
    """One running lab (Lightsail-default edge, no host rules) for the whole test module."""
    return _factory(tmp_path_factory, request).up()


@pytest.fixture
def lab_factory(tmp_path_factory, request):
    """Make more labs in one test: `lab_factory.up(slot=None, cloud_ports=None, servers=1)`."""
    return _factory(tmp_path_factory, request)
