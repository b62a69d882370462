"""hardened-lightsail: one firewall policy rendered to the Lightsail cloud firewall and to the
host's iptables/ip6tables, checked before anything is touched (see README.md)."""
