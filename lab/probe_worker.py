"""The probing half of lab/probe.py, run as `python -m lab.probe_worker` inside the namespace
to probe from (a socket belongs to the namespace of the process that opens it).

Reads {"targets": [[address, "tcp"|"udp"|"icmp", port], ...], "timeout": s, "workers": n} on stdin
(for icmp, an echo request / ICMPv6 echo request, the port is ignored),
prints a JSON list with one object per target, in order: {address, protocol, port, state,
detail, seconds}."""
from __future__ import annotations

import errno
import ipaddress
import json
import random
import socket
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from hardened_lightsail.reachability import UNCHECKED_PROBES
from lab.docnet import require_documentation_address

# TCP and UDP are measured exactly as the deployer's outside verification measures them. Every
# target of a batch was judged by lab/probe.py's probe() (documentation_routes) before it started
# this worker, in the namespace the worker runs in: the probes need not ask again per packet.
probe_tcp, probe_udp = UNCHECKED_PROBES["tcp"], UNCHECKED_PROBES["udp"]


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def probe_icmp(address: str, _port: int, timeout: float) -> tuple[str, str]:
    """open: an echo reply came back; filtered: none did. Raw sockets, so root only (no ping
    binary needed). Each probe has its own identifier, as raw sockets see every reply."""
    v6 = ipaddress.ip_address(address).version == 6
    request_type, reply_type = (128, 129) if v6 else (8, 0)
    ident = random.getrandbits(16)
    header = struct.pack("!BBHHH", request_type, 0, 0, ident, 1)
    payload = b"hardened-lightsail probe"
    with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                       socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP) as sock:
        if not v6:  # the kernel fills in the ICMPv6 checksum itself
            header = struct.pack("!BBHHH", request_type, 0, _icmp_checksum(header + payload), ident, 1)
        sock.connect((address, 0))
        deadline = time.monotonic() + timeout
        try:
            sock.send(header + payload)
            while time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                packet = sock.recv(2048)
                icmp = packet if v6 else packet[(packet[0] & 0x0F) * 4:]  # IPv4 raw reads include the IP header
                if len(icmp) >= 8 and icmp[0] == reply_type and struct.unpack("!H", icmp[4:6])[0] == ident:
                    return "open", "echo reply"
        except TimeoutError:
            pass
        except OSError as error:
            return "filtered", errno.errorcode.get(error.errno, str(error.errno))
    return "filtered", "no answer"


PROBES = {"tcp": probe_tcp, "udp": probe_udp, "icmp": probe_icmp}


def probe_one(target: list, timeout: float) -> dict:
    address, protocol, port = target
    require_documentation_address(address)
    started = time.monotonic()
    state, detail = PROBES[protocol](address, int(port), timeout)
    return {"address": address, "protocol": protocol, "port": int(port), "state": state,
            "detail": detail, "seconds": round(time.monotonic() - started, 3)}


def main() -> int:
    request = json.load(sys.stdin)
    targets, timeout = request["targets"], float(request["timeout"])
    for target in targets:  # refuse the whole batch before sending anything
        require_documentation_address(target[0])
        if target[1] not in PROBES:
            raise ValueError(f"protocol {target[1]!r} is not one of {', '.join(PROBES)}")
    with ThreadPoolExecutor(max_workers=max(1, int(request["workers"]))) as pool:
        results = list(pool.map(lambda target: probe_one(target, timeout), targets))
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
