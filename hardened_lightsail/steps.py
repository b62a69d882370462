"""Deployer-side steps of HostFirewall, run by pulumi-command local.Command (`scripts/hl-step`).

confirm         opens NEW ssh connections until one gets through and confirms the release; if
                none does before the deadline, waits for the host's own rollback and says so.
verify-outside  probes the server's addresses from here and fails unless what answers is exactly
                what the policy allows from this deployer's address."""
from __future__ import annotations

import ipaddress
import json
import os
import sys
import time
from pathlib import Path

from .config import load_policy_file
from .evaluate import cloud_allows, host_allows
from .reachability import CLOSED, FILTERED, OPEN, local_source_address, measure
from .release import render_release
from .ssh_session import SshEndpoint, run_remote

EXIT_ROLLED_BACK = 3  # hlfw confirm's exit code when the deadline had passed
SAMPLE_CLOSED_PORTS = (21, 23, 25, 53, 110, 139, 445, 3306, 5432, 6379, 8080, 8443, 9200, 27017)
SAMPLE_CLOSED_UDP_PORTS = (53, 123, 161, 1900, 5353, 11211)  # amplification favourites
ROLLBACK_GRACE_SECONDS = 5


def confirm(env=os.environ) -> int:
    endpoint = SshEndpoint.from_environment(env)
    release, remote_dir = env["HL_RELEASE"], env["HL_REMOTE_DIR"]
    timeout = int(env["HL_CONFIRM_TIMEOUT"])
    started = time.monotonic()
    attempts = 0
    while time.monotonic() - started < timeout - 1:
        attempts += 1
        remaining = timeout - (time.monotonic() - started)
        result = run_remote(endpoint, f"sh {remote_dir}/hlfw confirm --release {release}",
                            connect_timeout=max(1, min(5, int(remaining))))
        if result.returncode == 0:
            print(result.stdout.strip() or f"release {release} confirmed over a new SSH connection")
            print(f"confirmed on attempt {attempts}, {time.monotonic() - started:.1f} s after apply")
            return 0
        if result.returncode == EXIT_ROLLED_BACK:
            print(result.stderr.strip(), file=sys.stderr)
            return 1
        if result.returncode != 255:  # 255 is ssh's own failure: connection refused or timed out
            print(f"hlfw confirm failed on the host (exit {result.returncode}):\n{result.stderr.strip()}", file=sys.stderr)
            return 1
        time.sleep(1)
    # No new connection got through: the new rules shut the deployer out. The host rolls back
    # on its own at the deadline; wait for that and check it really happened.
    time.sleep(max(0.0, timeout + ROLLBACK_GRACE_SECONDS - (time.monotonic() - started)))
    status = run_remote(endpoint, f"sh {remote_dir}/hlfw status", connect_timeout=10)
    print(f"rules were rolled back: new SSH connections failed within {timeout} s", file=sys.stderr)
    if status.returncode == 0:
        print(f"the host is reachable again with its previous rules:\n{status.stdout.strip()}", file=sys.stderr)
    else:
        print(f"and the host still does not answer after the rollback deadline ({status.stderr.strip()});"
              " check the cloud firewall and the instance console", file=sys.stderr)
    return 1


def _parse_host_report(text: str) -> tuple[str | None, dict[str, set[int]]]:
    """(client address the host saw, {"tcp": ports, "udp": ports} listening beyond loopback)
    from `hlfw verify` output."""
    client, listening, in_listening = None, {"tcp": set(), "udp": set()}, False
    for line in text.splitlines():
        words = line.split()
        if line.startswith("client:") and len(words) > 1:
            client = words[1]
        elif line.strip() == "listening:":
            in_listening = True
        elif in_listening and len(words) == 3 and words[0] in listening and words[2].isdigit():
            if not words[1].startswith("127.") and words[1] != "::1":
                listening[words[0]].add(int(words[2]))
        elif in_listening and words and not line.startswith((" ", "\t")) and words[0] not in ("tcp", "udp"):
            in_listening = False
    return client, listening


def _expected(protocol: str, allowed: bool, listening: bool, state: str) -> bool:
    """Does a measured state agree with the policy? Denied must be silent (a RST or an ICMP
    unreachable means packets got through); allowed and listening must answer (TCP) or at least
    not be refused (UDP services may stay silent); allowed but not listening may be refused."""
    if not allowed:
        return state == FILTERED
    if protocol == "tcp":
        return state == OPEN if listening else state in (OPEN, CLOSED)
    return state in (OPEN, FILTERED) if listening else state in (CLOSED, FILTERED)


def verify_outside(env=os.environ, report: str | None = None) -> int:
    release_dir = Path(env["HL_RELEASE_DIR"])
    policy = load_policy_file(release_dir / "policy.json")
    release = render_release(policy)
    addresses = [a for a in json.loads(env["HL_ADDRESSES"]) if a]
    client, listening = _parse_host_report(report if report is not None else sys.stdin.read())
    ports = {"tcp": {policy.ssh_port, *SAMPLE_CLOSED_PORTS}, "udp": set(SAMPLE_CLOSED_UDP_PORTS)}
    for protocol in ports:
        ports[protocol] |= listening[protocol]
        ports[protocol] |= {p for s in policy.services if s.protocol == protocol for p in (s.ports.first, s.ports.last)}
    measured = {}
    for protocol in ("tcp", "udp"):
        targets = [(address, port) for address in addresses for port in sorted(ports[protocol])]
        measured.update({(protocol, *target): state for target, state in measure(protocol, targets).items()})
    rows, failures = [], 0
    for (protocol, address, port), state in measured.items():
        version = ipaddress.ip_address(address).version
        source = client if client and ipaddress.ip_address(client).version == version else local_source_address(address)
        network = ipaddress.ip_network(source)
        allowed = (host_allows(release.rulesets[0 if version == 4 else 1], protocol, port, network)
                   and cloud_allows(release.port_infos, protocol, port, network))
        is_listening = port in listening[protocol]
        ok = _expected(protocol, allowed, is_listening, state)
        failures += not ok
        rows.append((address, f"{protocol}/{port}", "yes" if is_listening else "no",
                     "allowed" if allowed else "denied", state, "ok" if ok else "MISMATCH"))
    header = ("address", "port", "listening", f"policy for {client or 'this deployer'}", "measured", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if failures:
        print(f"exposure differs from the policy on {failures} port(s): see MISMATCH above", file=sys.stderr)
        return 1
    print(f"verified: {len(rows)} probes on {len(addresses)} address(es) match the policy")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    steps = {"confirm": confirm, "verify-outside": verify_outside}
    if len(argv) != 1 or argv[0] not in steps:
        print(f"usage: hl-step {{{'|'.join(steps)}}}", file=sys.stderr)
        return 2
    return steps[argv[0]]()


if __name__ == "__main__":
    sys.exit(main())
