"""Lightsail blueprints we can harden, and the login user each image ships with."""
from __future__ import annotations

# Blueprint id prefix -> default login user of that image family.
LOGIN_USERS = {"ubuntu": "ubuntu", "debian": "admin", "amazon_linux": "ec2-user", "centos": "centos",
               "almalinux": "ec2-user"}


def login_user(blueprint_id: str) -> str | None:
    """The image's login user, or None for a blueprint we don't know (validation reports it)."""
    for prefix, user in LOGIN_USERS.items():
        if blueprint_id.startswith(prefix):
            return user
    return None
