"""Pulumi components: servers (Lightsail or lab) and the host firewall pushed onto them."""
