"""When a lab is ready: every client (admin, internet, internet2) gets an echo reply from its
router over IPv4 and IPv6. `up` returns only then, so the first connection after it never finds
a link the kernel has not finished bringing up (that once cost the first IPv6 SYN from the
internet clients a 1 s retransmission)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from .errors import LabError
from .probe import probe
from .topology import ROOT, LabTopology, server_index

READY_WITHIN_SECONDS = 5.0
ATTEMPT_SECONDS = 0.3  # per echo request; a lost one is simply sent again


def router_targets(lab: LabTopology) -> dict[str, list[tuple[str, str, int]]]:
    """{client: [(router address, "icmp", 0) for IPv4 and IPv6]}. Left out: the servers, whose
    firewall is whatever policy is under test (a blocklist may drop its router), and the root
    uplink, whose replies pass this machine's own firewall."""
    return {host.role: [(str(segment.edge.ipv4.ip), "icmp", 0), (str(segment.edge.ipv6.ip), "icmp", 0)]
            for segment in lab.segments.values() for host in segment.hosts
            if host.role != ROOT and server_index(host.role) is None}


def wait_until_routers_answer(lab: LabTopology, within: float = READY_WITHIN_SECONDS) -> None:
    """Return once every client has had an echo reply from its router in both families; a
    LabError naming the clients and routers that stayed silent after `within` seconds."""
    def unanswered(role, targets):
        results = probe(lab.namespace(role), targets, timeout=ATTEMPT_SECONDS)
        return [result.target for result in results if result.state != "open"]

    deadline = time.monotonic() + within
    waiting = router_targets(lab)
    with ThreadPoolExecutor(max_workers=len(waiting)) as pool:
        while waiting:
            still = dict(zip(waiting, pool.map(unanswered, waiting, waiting.values()), strict=True))
            waiting = {role: targets for role, targets in still.items() if targets}
            if waiting and time.monotonic() >= deadline:
                silent_hosts = "; ".join(f"{role} -> {', '.join(t.address for t in targets)}"
                                         for role, targets in waiting.items())
                raise LabError(f"lab {lab.name} is not ready after {within:g} s: no echo reply from the "
                               f"router ({silent_hosts}); check `ip -n {lab.namespace('edge')} link` "
                               "for links that are down")
