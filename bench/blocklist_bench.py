"""Benchmark (not a test): a 10,000-CIDR firewall.blocklist applied our way (one `ipset restore`
plus one iptables-restore per family, of the rendered release) against the naive way (one
`iptables -A INPUT -s CIDR -j DROP` per CIDR), and what a packet costs with 10 and 10,000 entries.

    sudo .venv/bin/python bench/blocklist_bench.py

Runs in two network namespaces it creates (hl-bench-<pid>-srv and -cli, joined by one veth) and
always deletes; nothing touches this machine's own firewall. Only documentation addresses are
used, and every measurement is bounded in count and time. Exit 0 when every target is met."""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hardened_lightsail.config import settings_from_values  # noqa: E402
from hardened_lightsail.release import Release, render_release  # noqa: E402
from lab.netns import add_namespace, delete_namespace, in_namespace, ip, namespace_pids  # noqa: E402
from lab.processes import stop_pids  # noqa: E402

BLOCKLIST_SIZE, SMALL_SIZE = 10_000, 10
# The bench link: the server and its one client (kept out of the blocklist).
LINK_V4, LINK_V6 = ipaddress.ip_network("192.0.2.0/28"), ipaddress.ip_network("2001:db8:ffff:ffff::/64")
SERVER = {4: "192.0.2.1", 6: "2001:db8:ffff:ffff::1"}
CLIENT = {4: "192.0.2.2", 6: "2001:db8:ffff:ffff::2"}
# Extra client addresses inside the big blocklist, to check that it really drops.
BLOCKED_SOURCE = {4: "198.51.100.7", 6: "2001:db8:0:5::7"}
ECHO_PORT = 7  # the lab's UDP echo daemon serves it (an open service in the bench policy)
ROUND_TRIPS, ROUNDS = 600, 7  # per family, scenario and round; rounds interleave scenarios
ROUND_TRIP_BUDGET_SECONDS = 20  # per client run, whatever the count
NAIVE_BUDGET_SECONDS = 240  # the one-rule-per-command apply is stopped after this long
TARGET_SPEEDUP, TARGET_FLATNESS = 50.0, 1.25  # ours vs naive apply; 10,000 vs 10 entries per packet
EMPTY_FILTER = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
RESTORE = {4: "iptables-restore", 6: "ip6tables-restore"}
APPEND = {4: "iptables", 6: "ip6tables"}


# --- the blocklist and the policies ---------------------------------------------------------

def documentation_blocklist() -> list:
    """10,000 CIDRs: every /32 of 198.51.100.0/24 and 203.0.113.0/24, the /28s of 192.0.2.0/24
    (but the bench link's), and /64s of 2001:db8::/32 for the rest."""
    v4 = [*ipaddress.ip_network("198.51.100.0/24").subnets(new_prefix=32),
          *ipaddress.ip_network("203.0.113.0/24").subnets(new_prefix=32),
          *(n for n in ipaddress.ip_network("192.0.2.0/24").subnets(new_prefix=28) if n != LINK_V4)]
    v6 = ipaddress.ip_network("2001:db8::/48").subnets(new_prefix=64)
    return v4 + [next(v6) for _ in range(BLOCKLIST_SIZE - len(v4))]


def small_blocklist(full: list) -> list:
    """10 entries with the same prefix lengths as the full list (hash:net costs one lookup per
    prefix length present), none of them covering BLOCKED_SOURCE."""
    blocked = [ipaddress.ip_address(a) for a in BLOCKED_SOURCE.values()]
    by_shape: dict = {}
    for network in full:
        if not any(address in network for address in blocked):
            by_shape.setdefault((network.version, network.prefixlen), []).append(network)
    shapes = sorted(by_shape)
    picked = [by_shape[shape][0] for shape in shapes]
    picked += [n for n in by_shape[(6, 64)][1:SMALL_SIZE - len(picked) + 1]]
    return picked


def release_with(blocklist: list) -> Release:
    policy = settings_from_values({"target": "lab", "firewall": {
        "adminCidrs": [str(LINK_V4), str(LINK_V6)],
        "services": [{"name": "echo", "protocol": "udp", "ports": str(ECHO_PORT)}],
        "ping": True,
        "blocklist": [str(n) for n in blocklist],
    }}).firewall
    return render_release(policy)


def naive_rules(blocklist: list, family: int) -> str:
    """What the one-command-per-CIDR way ends up with, as one restore file (for the per-packet
    measurement: how the rules were loaded doesn't change what a packet costs)."""
    lines = [f"-A INPUT -s {n} -j DROP" for n in blocklist if n.version == family]
    return EMPTY_FILTER.replace("COMMIT\n", "\n".join(lines) + "\nCOMMIT\n")


# --- namespaces --------------------------------------------------------------------------------

class Bench:
    """The two namespaces; `close` removes them and whatever runs in them."""

    def __init__(self) -> None:
        self.server, self.client = f"hl-bench-{os.getpid()}-srv", f"hl-bench-{os.getpid()}-cli"
        self.echo_pid_file = Path(f"/run/hl-bench-{os.getpid()}-echo.pid")

    def open(self) -> None:
        for namespace in (self.server, self.client):
            add_namespace(namespace)
        ip(self.server, "link", "add", "hlb-srv", "type", "veth", "peer", "name", "hlb-cli", "netns", self.client)
        for namespace, device, role in ((self.server, "hlb-srv", SERVER), (self.client, "hlb-cli", CLIENT)):
            ip(namespace, "address", "add", f"{role[4]}/{LINK_V4.prefixlen}", "dev", device)
            ip(namespace, "-6", "address", "add", f"{role[6]}/{LINK_V6.prefixlen}", "dev", device, "nodad")
            ip(namespace, "link", "set", device, "up")
        for family, address in BLOCKED_SOURCE.items():
            prefix = 32 if family == 4 else 128
            ip(self.client, f"-{family}", "address", "add", f"{address}/{prefix}", "dev", "hlb-cli", "nodad")
            # The server answers them on the link when they are not blocked (the control).
            ip(self.server, f"-{family}", "route", "add", f"{address}/{prefix}", "dev", "hlb-srv")
        # The lab's UDP echo daemon; it detaches, and `close` stops it with the namespace's pids.
        subprocess.run(["ip", "netns", "exec", self.server, sys.executable, "-P", "-m", "lab.udp_echo",
                        "--port", str(ECHO_PORT), "--pid-file", str(self.echo_pid_file)],
                       env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, timeout=10)

    def close(self) -> None:
        for namespace in (self.server, self.client):
            left = stop_pids(namespace_pids(namespace))  # only the echo daemon and our clients
            if left:
                print(f"warning: processes {left} in {namespace} survived SIGKILL", file=sys.stderr)
            delete_namespace(namespace)
        self.echo_pid_file.unlink(missing_ok=True)

    # --- loading rules into the server namespace
    def clear(self) -> None:
        """No rules, no sets, no tracked connections (earlier flows would slow later lookups)."""
        for family in (4, 6):
            in_namespace(self.server, [RESTORE[family]], input=EMPTY_FILTER)
        in_namespace(self.server, ["ipset", "destroy"])
        for family in (4, 6):
            in_namespace(self.server, ["conntrack", "-F", "-f", "ipv4" if family == 4 else "ipv6"], check=False)

    def apply_release(self, release: Release) -> dict:
        """Seconds per step of our apply, into a cleared server namespace."""
        self.clear()
        steps = [("ipset restore", ["ipset", "restore"], release.files.get("ipsets", b"")),
                 ("iptables-restore", [RESTORE[4]], release.files["rules.v4"]),
                 ("ip6tables-restore", [RESTORE[6]], release.files["rules.v6"])]
        seconds = {}
        for name, argv, content in steps:
            started = time.perf_counter()
            in_namespace(self.server, argv, input=content.decode(), timeout=120)
            seconds[name] = time.perf_counter() - started
        return seconds

    def apply_naive(self, blocklist: list) -> tuple[float, int]:
        """Seconds for one `iptables -A` per CIDR, run by one shell inside the namespace (so the
        time is the commands', not `ip netns exec`'s), and how many rules went in."""
        self.clear()
        commands = "".join(f"{APPEND[n.version]} {n}\n" for n in blocklist)
        script = 'while read -r tool cidr; do "$tool" -A INPUT -s "$cidr" -j DROP || exit 1; done'
        argv = ["ip", "netns", "exec", self.server, "sh", "-c", script]
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, errors = process.communicate(commands, timeout=NAIVE_BUDGET_SECONDS)
            if process.returncode != 0:
                raise RuntimeError(f"naive apply failed: {errors.strip().splitlines()[-1:]}")
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # our own shell and its current iptables
            process.wait()
        elapsed = time.perf_counter() - started
        loaded = sum(in_namespace(self.server, [APPEND[f], "-S", "INPUT"]).stdout.count("-j DROP") for f in (4, 6))
        return elapsed, loaded

    def load_naive(self, blocklist: list) -> None:
        self.clear()
        for family in (4, 6):
            in_namespace(self.server, [RESTORE[family]], input=naive_rules(blocklist, family), timeout=120)

    def round_trips(self, family: int, count: int, source: str | None = None) -> dict:
        argv = [sys.executable, "-P", str(Path(__file__).resolve()), "--round-trips", SERVER[family],
                "--count", str(count)] + (["--source", source] if source else [])
        result = in_namespace(self.client, argv, timeout=ROUND_TRIP_BUDGET_SECONDS + 30)
        return json.loads(result.stdout)


# --- measuring inside the client namespace ------------------------------------------------------

def new_flow_round_trips(address: str, count: int, source: str | None) -> dict:
    """UDP echo round trips, each from a fresh socket (a new source port): every request is a NEW
    conntrack flow, so it meets the blocklist lookup (established packets are accepted first)."""
    if not any(ipaddress.ip_address(address) in net for net in (LINK_V4, LINK_V6)):
        raise SystemExit(f"{address} is not a bench address")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    samples, lost, deadline = [], 0, time.monotonic() + ROUND_TRIP_BUDGET_SECONDS
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5 if source is None else 0.3)
            if source:
                sock.bind((source, 0))
            sock.connect((address, ECHO_PORT))  # picks the port before the clock starts
            started = time.perf_counter_ns()
            sock.send(b"hl-bench")
            try:
                sock.recv(64)
            except (TimeoutError, ConnectionRefusedError):
                lost += 1
                continue
            samples.append((time.perf_counter_ns() - started) / 1000)
    return {"samples_us": samples, "lost": lost}


# --- the run ------------------------------------------------------------------------------------

def round_trip_medians(bench: Bench, load) -> dict:
    """{family: median round trip in microseconds} with the rules `load` puts in place."""
    load()
    medians = {}
    for family in (4, 6):
        result = bench.round_trips(family, ROUND_TRIPS)
        if result["lost"]:
            raise RuntimeError(f"{result['lost']} IPv{family} echo requests lost from an unlisted source")
        medians[family] = statistics.median(result["samples_us"])
    return medians


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def run() -> int:
    full = documentation_blocklist()
    small = small_blocklist(full)
    big_release, small_release = release_with(full), release_with(small)
    v4_count = sum(1 for n in full if n.version == 4)
    iptables_version = subprocess.run(["iptables", "-V"], capture_output=True, text=True).stdout.strip()
    print(f"hardened-lightsail blocklist benchmark: kernel {platform.release()}, {iptables_version}, "
          f"{os.cpu_count()} CPUs")
    print(f"blocklist: {len(full):,} CIDRs ({v4_count} IPv4 /32 and /28, {len(full) - v4_count:,} IPv6 /64), "
          f"ipsets file {len(big_release.files['ipsets']) / 1024:.0f} KiB\n")

    bench = Bench()
    try:
        bench.open()
        ours = [bench.apply_release(big_release) for _ in range(3)]
        ours_total = statistics.median(sum(run.values()) for run in ours)
        steps = {name: statistics.median(run[name] for run in ours) for name in ours[0]}

        # The blocklist really drops: a listed source gets nothing, the same source is answered
        # when the list does not hold it.
        blocked = {f: bench.round_trips(f, 3, BLOCKED_SOURCE[f])["lost"] == 3 for f in (4, 6)}
        bench.apply_release(small_release)
        answered = {f: bench.round_trips(f, 3, BLOCKED_SOURCE[f])["lost"] == 0 for f in (4, 6)}

        naive_seconds, naive_loaded = bench.apply_naive(full)
        naive_complete = naive_loaded == len(full)

        scenarios = {
            ("ours (ipset hash:net)", SMALL_SIZE): lambda: bench.apply_release(small_release),
            ("ours (ipset hash:net)", BLOCKLIST_SIZE): lambda: bench.apply_release(big_release),
            ("naive (rule per CIDR)", SMALL_SIZE): lambda: bench.load_naive(small),
            ("naive (rule per CIDR)", BLOCKLIST_SIZE): lambda: bench.load_naive(full),
        }
        # Interleaved rounds: a busy moment on the machine hits every scenario of that round
        # alike, and each ratio below compares 10 with 10,000 entries within one round.
        # Every other round runs the scenarios in reverse, so none is always first or last.
        rounds = [{key: round_trip_medians(bench, scenarios[key])
                   for key in (list(scenarios) if number % 2 == 0 else list(scenarios)[::-1])}
                  for number in range(ROUNDS)]
    finally:
        bench.close()

    print("apply the blocklist (+ the whole ruleset, for ours)            seconds")
    print(f"  ours: ipset restore + iptables-restore + ip6tables-restore   {ours_total:8.3f}   "
          f"({', '.join(f'{name} {value:.3f}' for name, value in steps.items())}; median of 3)")
    naive_note = "" if naive_complete else f"   (stopped after {NAIVE_BUDGET_SECONDS} s: {naive_loaded:,} rules)"
    print(f"  naive: one iptables/ip6tables -A per CIDR ({len(full):,} commands) {naive_seconds:8.3f}{naive_note}\n")

    print("per packet: round trip of a new UDP flow (median, microseconds; lower is better)")
    print(f"  {'':<24}{'family':<8}{'10 entries':>12}{'10,000 entries':>16}{'10,000 / 10':>13}")
    ratios = {}
    for name in ("ours (ipset hash:net)", "naive (rule per CIDR)"):
        for family in (4, 6):
            low = statistics.median(r[(name, SMALL_SIZE)][family] for r in rounds)
            high = statistics.median(r[(name, BLOCKLIST_SIZE)][family] for r in rounds)
            ratios[(name, family)] = statistics.median(
                r[(name, BLOCKLIST_SIZE)][family] / r[(name, SMALL_SIZE)][family] for r in rounds)
            entries = v4_count if family == 4 else len(full) - v4_count
            print(f"  {name:<24}IPv{family:<5}{low:>12.1f}{high:>16.1f}{ratios[(name, family)]:>12.2f}x"
                  f"   ({entries:,} entries of this family in the big list)")
    print(f"  (median of {ROUNDS} interleaved rounds of {ROUND_TRIPS} round trips per family and scenario;\n"
          "  the ratio is the median of each round's own ratio. Ours is the whole hardened ruleset with\n"
          "  connection tracking, naive only the DROP rules: compare 10 with 10,000 within a row.)\n")

    speedup = naive_seconds / ours_total
    flat = max(ratios[("ours (ipset hash:net)", f)] for f in (4, 6))
    checks = [
        ("apply: naive time / our time", f">= {TARGET_SPEEDUP:.0f}x",
         f"{speedup:,.0f}x" + ("" if naive_complete else " (at least)"), speedup >= TARGET_SPEEDUP),
        ("per packet, ours: 10,000 vs 10 entries", f"<= {TARGET_FLATNESS}x (flat)", f"{flat:.2f}x",
         flat <= TARGET_FLATNESS),
        ("listed source dropped, unlisted answered", "v4 and v6",
         "yes" if all(blocked.values()) and all(answered.values()) else f"dropped {blocked}, answered {answered}",
         all(blocked.values()) and all(answered.values())),
    ]
    print(f"  {'target':<44}{'wanted':<18}{'measured':<16}result")
    for name, wanted, measured, ok in checks:
        print(f"  {name:<44}{wanted:<18}{measured:<16}{verdict(ok)}")
    return 0 if all(ok for *_, ok in checks) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round-trips", metavar="ADDRESS", help=argparse.SUPPRESS)  # in-namespace worker
    parser.add_argument("--count", type=int, default=ROUND_TRIPS, help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.round_trips:
        print(json.dumps(new_flow_round_trips(args.round_trips, args.count, args.source)))
        return 0
    if os.geteuid() != 0:
        print("blocklist_bench: needs root (it creates network namespaces); run it with sudo", file=sys.stderr)
        return 2
    # A Ctrl-C or kill still runs the `finally` that deletes the namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    return run()


if __name__ == "__main__":
    sys.exit(main())
