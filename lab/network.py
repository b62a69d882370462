"""Builds and removes one lab's namespaces, veths, bridge, addresses and routes.

The root namespace only ever gets the uplink veth, its addresses and routes to this lab's
server subnets: no firewall rule, no sysctl. IPv6 addresses are `nodad` (usable at once), but no
neighbour entry is static, so neighbour discovery really happens on every segment."""
from __future__ import annotations

from .netns import add_namespace, delete_link, delete_namespace, ip, link_exists, namespace_exists, sysctl
from .topology import EDGE, ROOT, SERVER, Endpoint, LabTopology, Segment


def _host_namespace(lab: LabTopology, host: Endpoint) -> str | None:
    return lab.namespace(host.role)


def _ensure_veth(lab: LabTopology, host: Endpoint) -> None:
    """A veth pair with one end in the host's namespace and the other in the edge."""
    host_ns, edge_ns = _host_namespace(lab, host), lab.namespace(EDGE)
    have_host, have_edge = link_exists(host_ns, host.interface), link_exists(edge_ns, host.edge_port)
    if have_host and have_edge:
        return
    # Half a pair is left over from an interrupted run: start that pair again.
    delete_link(host_ns, host.interface)
    delete_link(edge_ns, host.edge_port)
    host_side = [host.interface] + ([] if host_ns is None else ["netns", host_ns])
    ip(None, "link", "add", *host_side, "type", "veth", "peer", "name", host.edge_port, "netns", edge_ns)


def _ensure_addresses(namespace: str | None, endpoint: Endpoint) -> None:
    ip(namespace, "address", "replace", str(endpoint.ipv4), "dev", endpoint.interface)
    ip(namespace, "-6", "address", "replace", str(endpoint.ipv6), "dev", endpoint.interface, "nodad")
    ip(namespace, "link", "set", "dev", endpoint.interface, "up")


def bridge_mac(lab: LabTopology, segment: Segment) -> str:
    """A fixed, locally administered MAC for a bridge. Left to itself a bridge takes the lowest
    MAC of its ports, so a server added to a running lab could change the router's MAC under
    the other servers' neighbour caches (their IPv6 to the router then went silent)."""
    return f"02:68:6c:{lab.slot:02x}:{list(lab.segments).index(segment.name):02x}:01"


def _ensure_segment(lab: LabTopology, segment: Segment) -> None:
    edge_ns = lab.namespace(EDGE)
    if segment.bridged and not link_exists(edge_ns, segment.edge.interface):
        # No STP (ports forward at once) and no multicast snooping (NDP multicast is flooded,
        # so neighbour discovery between the clients never depends on MLD state).
        ip(edge_ns, "link", "add", segment.edge.interface, "type", "bridge",
           "stp_state", "0", "mcast_snooping", "0")
    if segment.bridged:
        ip(edge_ns, "link", "set", "dev", segment.edge.interface, "address", bridge_mac(lab, segment))
        # Up before its ports and addresses: a bridge brought up last ignored the clients'
        # (multicast) neighbour solicitations for its first ~0.5 s, so the first IPv6 packet
        # from a client waited for the 1 s NS retransmission (ARP's broadcast was unaffected).
        ip(edge_ns, "link", "set", "dev", segment.edge.interface, "up")
    for host in segment.hosts:
        _ensure_veth(lab, host)
        if segment.bridged:
            ip(edge_ns, "link", "set", "dev", host.edge_port, "master", segment.edge.interface)
            # A bridge port has no address of its own (a lab made before the server segment was
            # bridged had the edge's server address on this veth end).
            ip(edge_ns, "address", "flush", "dev", host.edge_port)
        ip(edge_ns, "link", "set", "dev", host.edge_port, "up")
        _ensure_addresses(_host_namespace(lab, host), host)
    _ensure_addresses(edge_ns, segment.edge)


def _ensure_routes(lab: LabTopology) -> None:
    for segment in lab.segments.values():
        gateway4, gateway6 = str(segment.edge.ipv4.ip), str(segment.edge.ipv6.ip)
        for host in segment.hosts:
            if host.role == ROOT:
                continue
            namespace = lab.namespace(host.role)
            ip(namespace, "route", "replace", "default", "via", gateway4, "dev", host.interface)
            ip(namespace, "-6", "route", "replace", "default", "via", gateway6, "dev", host.interface)
    # The root namespace reaches this lab's server subnets only, from its uplink address.
    uplink, server = lab.segments["uplink"], lab.endpoint(SERVER)
    root = lab.endpoint(ROOT)
    ip(None, "route", "replace", str(server.ipv4.network), "via", str(uplink.edge.ipv4.ip),
       "dev", root.interface, "src", str(root.ipv4.ip))
    ip(None, "-6", "route", "replace", str(server.ipv6.network), "via", str(uplink.edge.ipv6.ip),
       "dev", root.interface, "src", str(root.ipv6.ip))


def build_network(lab: LabTopology) -> None:
    """Create (or complete) the lab's network. The edge has no default route: traffic for
    anything outside the lab is unroutable there, so nothing leaves the lab."""
    for namespace in lab.namespaces.values():
        add_namespace(namespace)
        # No duplicate address detection on the lab's links (set before they exist, so they
        # inherit it): a router can't send neighbour solicitations for forwarded packets while
        # its link-local address is tentative, which would drop the first second of IPv6.
        sysctl(namespace, **{"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"})
    sysctl(lab.namespace(EDGE), **{"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"})
    for segment in lab.segments.values():
        _ensure_segment(lab, segment)
    _ensure_routes(lab)


def teardown_network(lab: LabTopology) -> None:
    """Remove the root uplink (its routes go with it) and every lab namespace, if present.
    Processes running in the namespaces must be stopped first, or the namespaces live on.
    (A server's veth pair goes with its namespace.)"""
    delete_link(None, lab.uplink_interface)
    for namespace in lab.namespaces.values():
        delete_namespace(namespace)


def network_state(lab: LabTopology) -> dict:
    return {
        "namespaces": {role: namespace_exists(ns) for role, ns in lab.namespaces.items()},
        "uplink": link_exists(None, lab.uplink_interface),
    }
