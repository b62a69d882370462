"""A tiny UDP echo daemon: the lab server's hidden UDP service (v4 and v6 on one socket).

Run as `python -m lab.udp_echo --port 5353 --pid-file FILE` inside the server namespace: it
binds first (so a busy port fails the start), then detaches and writes its pid file."""
from __future__ import annotations

import argparse
import socket
import sys

from .processes import detach


def serve(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(2048)
        try:
            sock.sendto(data, peer)
        except OSError:
            pass  # the reply was filtered or unroutable: not the echo's concern


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.udp_echo", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid-file", required=True)
    args = parser.parse_args(argv)

    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too, as ::ffff:a.b.c.d
    try:
        sock.bind(("::", args.port))
    except OSError as error:
        print(f"udp echo: cannot bind port {args.port}: {error.strerror}", file=sys.stderr)
        return 1
    if not detach(args.pid_file):
        serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
