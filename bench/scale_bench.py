"""Benchmark (not a test): how the cost grows with servers and with list size, measured in one run.

    sudo .venv/bin/python bench/scale_bench.py [--quick] [--slot K] [--only fleet|blocklist]

1. Fleets, through the real Pulumi engine (scripts/pulumi, a private file backend): for 1, 5 and
   10 lab servers (--quick: 1 and 3) a new lab stack's first `up`, an `up` with nothing changed,
   and a policy change (tcp/8080 added) applied on every server and verified from outside.
   Goal: 10 servers take at most 2x the time of 1 (the servers' steps run side by side); the
   engine's --parallel and the CPU the run kept busy say what bounds it.
2. Blocklists of 1k / 10k / 100k / 300k CIDRs (v4 + v6; --quick stops at 100k), read from
   firewall.blocklistFiles: `fw render` and `fw check` (wall time and peak memory of the CLI as a
   user runs it), the payload's real `hlfw apply` on a host sandbox (network + mount namespace)
   against the bare restores of the same files, and the round trip of a new UDP flow with each
   list loaded (per packet: flat is the goal). Goals: apply of 100k < 1 s, render + check < 3 s.
3. The Pulumi program itself with the largest list (under the project's mocks: the AWS layer
   faked, everything else real): wall time and peak memory.

Everything runs in namespaces the bench makes (the lab's, hl-bench-PID-*, hlt-*) and removes,
on documentation addresses only; stacks are destroyed and their files removed however the run
ends. Lists hold only documentation networks (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and
2001:db8::/32), so IPv4 tops out at their 1,5xx subnets and the rest of a big list is IPv6.
Exit 0 when every goal is met."""
from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "tests", REPO / "bench"):
    sys.path.insert(0, str(path))

from hardened_lightsail.config import NAMESPACE  # noqa: E402
from lab import ADMIN_CIDRS  # noqa: E402
from lab.probe import probe  # noqa: E402

from blocklist_bench import CLIENT, ECHO_PORT, LINK_V4, LINK_V6, Bench  # noqa: E402
from engine import BUILT_CLI, engine_missing_reason  # noqa: E402
from lab_bench import LabStack, free_slot  # noqa: E402
from payload_bench import ADMIN, APPLY_CONNECTION, Host  # noqa: E402

FW = REPO / "scripts" / "fw"
RUNNER = REPO / "tests" / "program_mocks_runner.py"
FLEETS, QUICK_FLEETS = (1, 5, 10), (1, 3)
LIST_SIZES, QUICK_LIST_SIZES = (1_000, 10_000, 100_000, 300_000), (1_000, 10_000, 100_000)
ROUNDS, ROUND_TRIPS = 7, 300  # per-packet: interleaved rounds, new-flow round trips per family and size
QUICK_ROUNDS, QUICK_ROUND_TRIPS = 3, 200
GOAL_FLEET_RATIO, GOAL_UNCHANGED, GOAL_APPLY_100K, GOAL_RENDER_CHECK_100K, GOAL_FLAT = 2.0, 3.0, 1.0, 3.0, 1.25
UNCHANGED_RUNS = 3  # unchanged `up`s per fleet size; the median is reported
FLEET_FIREWALL = {"adminCidrs": list(ADMIN_CIDRS), "confirmTimeoutSeconds": 30,
                  "services": [{"name": "http", "protocol": "tcp", "ports": "80"}]}
FLEET_CHANGED = dict(FLEET_FIREWALL, services=[*FLEET_FIREWALL["services"],
                                               {"name": "alt-http", "protocol": "tcp", "ports": "8080"}])
# The same kind of change again, with the engine's parallelism lifted: does --parallel bound it?
FLEET_CHANGED_AGAIN = dict(FLEET_FIREWALL, services=[*FLEET_CHANGED["services"],
                                                     {"name": "alt-http2", "protocol": "tcp", "ports": "8081"}])
WIDE_PARALLEL = 64
UP = ["--yes", "--skip-preview", "--non-interactive"]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{os.cpu_count()} CPUs ({model}), kernel {platform.release()}"


# Starts the measured command and writes its wall time and peak RSS (wait4's ru_maxrss, in KiB
# on Linux) to the pipe whose fd it is given. A small process of its own: Linux counts into a
# process's peak the memory of the process it was forked or spawned from, up to its exec, so a
# command started straight from this bench (which holds the big lists it makes) reported the
# bench's own size.
_MEASURE = """import os, sys, time
report = int(sys.argv[1])
os.set_inheritable(report, False)
started = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
os.write(report, f"{time.perf_counter() - started} {usage.ru_maxrss}".encode())
sys.exit(os.waitstatus_to_exitcode(status))"""


def timed_child(argv: list[str], input: str = "", cwd: Path | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """(seconds, peak resident MB, result) of one command, as the user would run it."""
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        stdin.write(input.encode())
        stdin.seek(0)
        read_end, write_end = os.pipe()
        with os.fdopen(read_end, "rb") as report:
            try:
                process = subprocess.Popen([sys.executable, "-I", "-S", "-c", _MEASURE, str(write_end), *argv],
                                           stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, pass_fds=(write_end,))
            finally:
                os.close(write_end)
            measured = report.read().decode().split()
        process.wait()
        stdout.seek(0)
        stderr.seek(0)
        result = subprocess.CompletedProcess(argv, process.returncode, stdout.read().decode(), stderr.read().decode())
    if len(measured) != 2:
        raise RuntimeError(f"{argv[0]} could not be started: {result.stderr.strip()[-500:]}")
    return float(measured[0]), int(measured[1]) / 1024, result


# --- 1. fleets through the real engine ---------------------------------------------------------

class FleetStack(LabStack):
    """lab_bench's temporary lab stack, with `server.count` servers."""

    def __init__(self, name: str, slot: int, backend: Path, count: int):
        super().__init__(name, slot, backend)
        self.count = count

    def write(self, firewall: dict) -> None:
        super().write(firewall)
        config = yaml.safe_load(self.file.read_text())
        config["config"][f"{NAMESPACE}:server"] = {"count": self.count}
        self.file.write_text(yaml.safe_dump(config))

    def timed_up_parallel(self, firewall: dict, parallel: int) -> float:
        self.write(firewall)
        started = time.monotonic()
        self.run(["up", "-s", self.name, *UP, "--parallel", str(parallel)])
        return time.monotonic() - started


def busy_cores() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


@dataclass
class FleetFigures:
    count: int
    first_up: float = 0.0
    unchanged: float = 0.0
    change: float = 0.0
    change_cpu: float = 0.0  # cores kept busy during the change, on average
    change_wide: float = 0.0  # the same kind of change with --parallel WIDE_PARALLEL (largest fleet only)
    verified: bool = False
    unchanged_did_nothing: bool = False
    unchanged_runs: list = field(default_factory=list)  # every unchanged `up`'s seconds
    problems: list = field(default_factory=list)


def _server_states(outputs: dict, server: dict, port: int) -> list[str]:
    addresses = [server["publicIp"], *server["ipv6Addresses"]]
    return [r.state for r in probe(outputs["labInternetNamespace"], [(a, "tcp", port) for a in addresses])]


def measure_fleet(count: int, slot: int, wide: bool = False) -> FleetFigures:
    figures = FleetFigures(count)
    name = f"scale-{os.getpid() % 100000}-{count}"
    backend = Path(tempfile.mkdtemp(prefix="hl-scale-bench-"))
    stack = FleetStack(name, slot, backend, count)
    try:
        stack.write(FLEET_FIREWALL)
        stack.run(["stack", "init", name])
        figures.first_up, _ = stack.timed_up(FLEET_FIREWALL)
        # The median of a few: a 3 s figure on a shared machine moves with whatever else runs.
        runs = [stack.timed_up(FLEET_FIREWALL) for _ in range(UNCHANGED_RUNS)]
        figures.unchanged_runs = [seconds for seconds, _ in runs]
        figures.unchanged = statistics.median(figures.unchanged_runs)
        figures.unchanged_did_nothing = all(
            re.search(r"^Resources:\n +\d+ unchanged\n", again.stdout, re.M) is not None for _, again in runs)
        busy_before, _ = busy_cores()
        figures.change, _ = stack.timed_up(FLEET_CHANGED)
        busy_after, _ = busy_cores()
        figures.change_cpu = (busy_after - busy_before) / figures.change
        outputs = stack.outputs()
        servers = outputs["servers"]
        figures.verified = len(servers) == count and all(
            "MISMATCH" not in server["verifiedExposure"] and "verified:" in server["verifiedExposure"]
            and _server_states(outputs, server, 8080) == ["open", "open"] for server in servers)
        if wide:
            figures.change_wide = stack.timed_up_parallel(FLEET_CHANGED_AGAIN, WIDE_PARALLEL)
    finally:
        figures.problems = stack.remove()
        shutil.rmtree(backend, ignore_errors=True)
    return figures


def engine_parallel() -> str:
    """The engine's default --parallel (from `pulumi up --help`: 4 x CPUs in this version)."""
    helped = subprocess.run([str(BUILT_CLI), "up", "--help"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"--parallel int32 .*\(default (\d+)\)", helped)
    return found.group(1) if found else "?"


def fleet_section(counts: tuple, slot: int) -> list[tuple]:
    print(f"1. fleets through the real engine (lab slot {slot}; engine --parallel default {engine_parallel()})")
    figures = {count: measure_fleet(count, slot, wide=count == counts[-1]) for count in counts}
    one, most = figures[counts[0]], figures[counts[-1]]
    print(f"  {'servers':<9}{'first up':>10}{'unchanged up*':>14}{'change, verified':>18}{'busy cores':>12}"
          f"{'change / 1 server':>19}{'serial would be':>17}")
    for count, row in figures.items():
        print(f"  {count:<9}{row.first_up:>9.1f}s{row.unchanged:>13.1f}s{row.change:>17.1f}s{row.change_cpu:>12.2f}"
              f"{row.change / one.change:>18.2f}x{count:>16}x   "
              f"{'verified' if row.verified else 'NOT VERIFIED'}"
              f"{'' if row.unchanged_did_nothing else ', unchanged up CHANGED something'}"
              f"   (unchanged: {' / '.join(f'{seconds:.2f}' for seconds in row.unchanged_runs)} s)")
        for problem in row.problems:
            print(f"  cleanup ({count} servers): {problem}", file=sys.stderr)
    print(f"  (busy cores: the machine's CPU time during the change / its wall time, out of {os.cpu_count()}; "
          f"serial: one server after the other; *: the median of {UNCHANGED_RUNS} runs)\n")
    ratio = most.change / one.change
    print(f"  first up, {most.count} servers / 1: {most.first_up / one.first_up:.2f}x (no goal; reported)")
    print(f"  {most.count} servers, a change with --parallel {WIDE_PARALLEL} instead of the default: "
          f"{most.change_wide:.1f} s ({most.change_wide / most.change:.2f}x the default's)\n")
    return [
        (f"policy change, {most.count} servers / 1", f"<= {GOAL_FLEET_RATIO:.0f}x", f"{ratio:.2f}x",
         ratio <= GOAL_FLEET_RATIO and all(row.verified for row in figures.values())),
        *((f"unchanged up, {row.count} server(s)", f"< {GOAL_UNCHANGED:.0f} s", f"{row.unchanged:.1f} s",
           row.unchanged < GOAL_UNCHANGED and row.unchanged_did_nothing) for row in (one, most)),
        ("fleet stacks cleaned up", "nothing left", "yes" if not any(r.problems for r in figures.values()) else "NO",
         not any(row.problems for row in figures.values())),
    ]


# --- 2. blocklists ------------------------------------------------------------------------------

V4_POOLS = [ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24")]
V6_LENGTHS = (48, 56, 64, 96, 128)
V6_BASE = int(ipaddress.ip_address("2001:db8::"))


def _usable(network) -> bool:
    """Never the bench link's client, which must keep getting answers, nor the admin whose SSH
    connection the payload's apply keeps."""
    if network.version == 6:
        return not network.overlaps(LINK_V6)
    return not network.overlaps(LINK_V4) and ipaddress.ip_address(ADMIN) not in network


def sized_blocklist(size: int) -> list:
    """`size` documentation networks: every prefix length /24-/32 (IPv4) and /48-/128 (IPv6) in
    every list, so a packet meets the same number of hash lookups whatever the size (hash:net
    makes one per prefix length present). IPv4 takes half, up to what the ranges hold."""
    v4_lengths = [[n for pool in V4_POOLS for n in pool.subnets(new_prefix=length) if _usable(n)]
                  for length in range(24, 33)]
    v4 = [n for n in itertools.chain.from_iterable(itertools.zip_longest(*v4_lengths)) if n is not None][:size // 2]

    def v6(length: int):
        for index in itertools.count(1):
            network = ipaddress.IPv6Network((V6_BASE | (index << (128 - length)), length))
            if _usable(network):
                yield network
    generators = [v6(length) for length in V6_LENGTHS]
    return v4 + [next(generators[i % len(generators)]) for i in range(size - len(v4))]


def write_stack_file(directory: Path, blocklist: list) -> Path:
    """A stack file whose policy is blocklist_bench's (the bench link's admins, udp echo, ping),
    with the list in a blocklistFiles file next to it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "blocklist.txt").write_text("".join(f"{n}\n" for n in blocklist))
    stack_file = directory / "Pulumi.scale.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {f"{NAMESPACE}:firewall": {
        "adminCidrs": [str(LINK_V4), str(LINK_V6), f"{ADMIN}/32"], "deployerAddresses": [str(LINK_V4)],
        "services": [{"name": "echo", "protocol": "udp", "ports": str(ECHO_PORT)}],
        "ping": True, "blocklistFiles": ["blocklist.txt"]}}}))
    return stack_file


@dataclass
class ListFigures:
    size: int
    render: float = 0.0
    render_mib: float = 0.0
    check: float = 0.0
    check_mib: float = 0.0
    bare_restore: float = 0.0
    hlfw_apply: float = 0.0
    ipsets_kib: float = 0.0
    per_packet: dict = field(default_factory=dict)  # family -> median microseconds
    release_dir: Path = Path()


class _RenderedRelease:
    """A rendered release directory in the shape Bench.apply_release reads."""

    def __init__(self, directory: Path):
        self.files = {name: (directory / name).read_bytes() for name in ("rules.v4", "rules.v6", "ipsets")
                      if (directory / name).exists()}


def measure_list_cli(size: int, work: Path) -> ListFigures:
    figures = ListFigures(size)
    stack_file = write_stack_file(work / f"list-{size}", sized_blocklist(size))
    out = work / f"list-{size}" / "release"
    figures.render, figures.render_mib, rendered = timed_child(
        [str(FW), "render", "--config", str(stack_file), "--out", str(out)])
    if rendered.returncode != 0:
        raise RuntimeError(f"fw render ({size:,}) exited {rendered.returncode}: {rendered.stderr.strip()[-500:]}")
    figures.check, figures.check_mib, checked = timed_child([str(FW), "check", "--config", str(stack_file)])
    if checked.returncode != 0:
        raise RuntimeError(f"fw check ({size:,}) exited {checked.returncode}: {checked.stderr.strip()[-500:]}")
    figures.release_dir = out
    figures.ipsets_kib = (out / "ipsets").stat().st_size / 1024
    return figures


def measure_list_apply(figures: ListFigures, work: Path) -> None:
    """The payload's real apply on a new host sandbox, and the bare restores of the same files."""
    host = Host(work / f"host-{figures.size}", REPO / "payload")
    try:
        figures.bare_restore = host.bare_restore(figures.release_dir)
    finally:
        host.close()
    host = Host(work / f"apply-{figures.size}", REPO / "payload")
    try:
        figures.hlfw_apply = host.timed("apply", "--release", str(figures.release_dir), "--timeout", "300",
                                        connection=APPLY_CONNECTION)
    finally:
        host.close()


def measure_per_packet(lists: list[ListFigures], rounds: int, round_trips: int) -> dict:
    """Median new-flow round trip with each list loaded. Each size has a bench pair of its own
    (blocklist_bench's server and client namespaces), loaded once; the rounds visit them in turn
    (every other round in reverse), so a busy moment hits every size of that round alike. Returns
    {(size, family): median of the per-round ratios to the smallest size}."""
    benches = {}
    try:
        for figures in lists:
            bench = benches[figures.size] = Bench()
            bench.server, bench.client = f"{bench.server}{len(benches)}", f"{bench.client}{len(benches)}"
            bench.echo_pid_file = bench.echo_pid_file.with_name(f"{bench.echo_pid_file.stem}{len(benches)}.pid")
            bench.open()
            bench.apply_release(_RenderedRelease(figures.release_dir))
        samples: dict = {(figures.size, family): [] for figures in lists for family in (4, 6)}
        for number in range(rounds):
            for figures in (lists if number % 2 == 0 else lists[::-1]):
                for family in (4, 6):
                    result = benches[figures.size].round_trips(family, round_trips)
                    if result["lost"]:
                        raise RuntimeError(f"{result['lost']} IPv{family} echoes from the unlisted client "
                                           f"{CLIENT[family]} lost with {figures.size:,} entries")
                    samples[(figures.size, family)].append(statistics.median(result["samples_us"]))
    finally:
        for bench in benches.values():
            bench.close()
    smallest = lists[0].size
    for figures in lists:
        figures.per_packet = {family: statistics.median(samples[(figures.size, family)]) for family in (4, 6)}
    return {(figures.size, family): statistics.median(
        high / low for high, low in zip(samples[(figures.size, family)], samples[(smallest, family)], strict=False))
        for figures in lists for family in (4, 6)}


def blocklist_section(sizes: tuple, rounds: int, round_trips: int, work: Path) -> tuple[list[tuple], Path]:
    print("2. blocklists from firewall.blocklistFiles (v4 + v6 documentation networks)")
    lists = []
    for size in sizes:
        figures = measure_list_cli(size, work)
        measure_list_apply(figures, work)
        lists.append(figures)
    ratios = measure_per_packet(lists, rounds, round_trips)
    small = lists[0]
    print(f"  {'CIDRs':>8}{'ipsets':>9}{'fw render':>11}{'(peak)':>8}{'fw check':>10}{'(peak)':>8}"
          f"{'bare restore':>14}{'hlfw apply':>12}{'µs/CIDR':>9}{'packet v4':>11}{'v6':>8}{'vs 1k':>7}")
    for figures in lists:
        flat = max(ratios[(figures.size, family)] for family in (4, 6))
        print(f"  {figures.size:>8,}{figures.ipsets_kib / 1024:>7.1f}MB{figures.render:>10.2f}s"
              f"{figures.render_mib:>6.0f}MB{figures.check:>9.2f}s{figures.check_mib:>6.0f}MB"
              f"{figures.bare_restore:>13.3f}s{figures.hlfw_apply:>11.3f}s"
              f"{figures.hlfw_apply / figures.size * 1e6:>9.1f}"
              f"{figures.per_packet[4]:>9.1f}µs{figures.per_packet[6]:>6.1f}µs{flat:>6.2f}x")
    print(f"  (fw render/check: wall time and peak RSS of the CLI, Python start included; bare restore: ipset +\n"
          f"  iptables + ip6tables restore into an empty namespace, no safety net; hlfw apply: the payload's\n"
          f"  whole apply (test, snapshot, rollback armed, restore) on a new host sandbox; packet: median\n"
          f"  round trip of a new UDP flow, each size in namespaces of its own, {rounds} interleaved rounds of\n"
          f"  {round_trips} per family and size; vs 1k: the median of each round's own ratio, the worse family)\n")
    checks = []
    hundred_k = next((figures for figures in lists if figures.size == 100_000), None)
    if hundred_k:
        checks += [
            ("hlfw apply, 100k CIDRs", f"< {GOAL_APPLY_100K:.0f} s", f"{hundred_k.hlfw_apply:.2f} s",
             hundred_k.hlfw_apply < GOAL_APPLY_100K),
            ("fw render + fw check, 100k CIDRs", f"< {GOAL_RENDER_CHECK_100K:.0f} s",
             f"{hundred_k.render + hundred_k.check:.2f} s", hundred_k.render + hundred_k.check < GOAL_RENDER_CHECK_100K),
        ]
    largest = lists[-1]
    flat = max(ratios[(largest.size, family)] for family in (4, 6))
    growth = (largest.hlfw_apply / largest.size) / (lists[1].hlfw_apply / lists[1].size) if len(lists) > 1 else 1.0
    checks += [
        (f"per packet, {largest.size:,} vs {small.size:,}", f"<= {GOAL_FLAT}x", f"{flat:.2f}x", flat <= GOAL_FLAT),
        (f"apply per CIDR, {largest.size:,} vs {lists[1].size:,}", "<= 1.5x (linear)", f"{growth:.2f}x",
         growth <= 1.5),
    ]
    return checks, write_stack_file(work / "program", sized_blocklist(largest.size))


# --- 3. the program with the largest list ---------------------------------------------------------

def program_section(stack_file: Path, size: int) -> list[tuple]:
    """The Pulumi program (__main__.py) with the largest list, under the project's mocks."""
    firewall = yaml.safe_load(stack_file.read_text())["config"][f"{NAMESPACE}:firewall"]
    firewall = dict(firewall, blocklistFiles=[str(stack_file.parent / name) for name in firewall["blocklistFiles"]])
    scenario = {"stack": "scale", "preview": False, "cloud": "as-sent",
                "config": {f"{NAMESPACE}:firewall": json.dumps(firewall)}}
    seconds, peak, result = timed_child([sys.executable, str(RUNNER)], input=json.dumps(scenario), cwd=REPO)
    report = json.loads(result.stdout) if result.returncode == 0 else {}
    ok = report.get("error") is None and bool(report.get("registrations")) and "releaseHash" in report.get("exports", {})
    print(f"3. the Pulumi program with {size:,} CIDRs (mocked AWS layer): {seconds:.1f} s, peak {peak:.0f} MB"
          f"{'' if ok else ' (FAILED: ' + result.stderr.strip()[-300:] + ')'}\n")
    return [(f"program with {size:,} CIDRs runs", "exit 0", f"{seconds:.1f} s, {peak:.0f} MB", ok)]


def run(args) -> int:
    print(f"hardened-lightsail scale benchmark on {machine()}{' (--quick)' if args.quick else ''}\n")
    checks = []
    with tempfile.TemporaryDirectory(prefix="hl-scale-bench-") as tmp:
        if args.only in (None, "blocklist"):
            sizes = QUICK_LIST_SIZES if args.quick else LIST_SIZES
            rounds, trips = (QUICK_ROUNDS, QUICK_ROUND_TRIPS) if args.quick else (ROUNDS, ROUND_TRIPS)
            list_checks, program_stack = blocklist_section(sizes, rounds, trips, Path(tmp))
            checks += list_checks + program_section(program_stack, sizes[-1])
        if args.only in (None, "fleet"):
            checks = fleet_section(QUICK_FLEETS if args.quick else FLEETS,
                                   free_slot() if args.slot is None else args.slot) + checks
    print(f"  {'goal':<44}{'wanted':<18}{'measured':<18}result")
    for name, wanted, measured, ok in checks:
        print(f"  {name:<44}{wanted:<18}{measured:<18}{verdict(ok)}")
    return 0 if all(ok for *_, ok in checks) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer servers and sizes (1, 3 servers; up to 100k)")
    parser.add_argument("--slot", type=int, help="lab slot 0-15 for the fleet stacks (default: the highest free one)")
    parser.add_argument("--only", choices=("fleet", "blocklist"), help="run one part")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("scale_bench: needs root (labs and sandboxes are network namespaces); run it with sudo", file=sys.stderr)
        return 2
    missing = engine_missing_reason()
    if missing and args.only != "blocklist":
        print(f"scale_bench: {missing}", file=sys.stderr)
        return 2
    # A Ctrl-C or kill still runs the `finally`s that destroy stacks and delete namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
