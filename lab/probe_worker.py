"""The probing half of lab/probe.py, run as `python -m lab.probe_worker` inside the namespace
to probe from (a socket belongs to the namespace of the process that opens it).

Reads {"targets": [[address, "tcp"|"udp", port], ...], "timeout": s, "workers": n} on stdin,
prints a JSON list with one object per target, in order: {address, protocol, port, state,
detail, seconds}."""
from __future__ import annotations

import errno
import ipaddress
import json
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from lab.docnet import require_documentation_address

UDP_PAYLOAD = b"hardened-lightsail probe\n"


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def probe_tcp(address: str, port: int, timeout: float) -> tuple[str, str]:
    """open: handshake done; closed: RST (refused); filtered: no answer, or ICMP unreachable."""
    with socket.socket(_family(address), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
        except socket.timeout:
            return "filtered", "no answer"
        except ConnectionRefusedError:
            return "closed", "refused"
        except OSError as error:
            # EHOSTUNREACH/ENETUNREACH/EACCES: an ICMP error (e.g. a REJECT) or no route.
            return "filtered", errno.errorcode.get(error.errno, str(error.errno))
        return "open", "connected"


def probe_udp(address: str, port: int, timeout: float) -> tuple[str, str]:
    """open: the listener answered; closed: ICMP port unreachable; filtered: silence."""
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
            sock.send(UDP_PAYLOAD)
            sock.recv(2048)
        except socket.timeout:
            return "filtered", "no answer"
        except ConnectionRefusedError:
            return "closed", "port unreachable"
        except OSError as error:
            return "filtered", errno.errorcode.get(error.errno, str(error.errno))
        return "open", "answered"


def probe_one(target: list, timeout: float) -> dict:
    address, protocol, port = target
    require_documentation_address(address)
    started = time.monotonic()
    state, detail = (probe_tcp if protocol == "tcp" else probe_udp)(address, int(port), timeout)
    return {"address": address, "protocol": protocol, "port": int(port), "state": state,
            "detail": detail, "seconds": round(time.monotonic() - started, 3)}


def main() -> int:
    request = json.load(sys.stdin)
    targets, timeout = request["targets"], float(request["timeout"])
    for target in targets:  # refuse the whole batch before sending anything
        require_documentation_address(target[0])
        if target[1] not in ("tcp", "udp"):
            raise ValueError(f"protocol {target[1]!r} is not tcp or udp")
    with ThreadPoolExecutor(max_workers=max(1, int(request["workers"]))) as pool:
        results = list(pool.map(lambda target: probe_one(target, timeout), targets))
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
