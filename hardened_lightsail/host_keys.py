"""SSH host keys the program pins: made here (ed25519), named by their OpenSSH fingerprint, and
written as the known_hosts line every connection checks them with.

Pure: nothing here connects anywhere (the readiness step and ssh_session do)."""
from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

# Every SSH connection the program makes names the server by this alias in its known_hosts, so
# the pin holds whatever address or port the server is reached on (and survives a static IP).
KNOWN_HOSTS_ALIAS = "hardened-lightsail-server"
KEY_TYPE = "ssh-ed25519"  # upstream pulumi-command offers only the pinned key's own algorithm


class HostKeyError(ValueError):
    """A public key line that is not `TYPE BASE64 [comment]`."""


@dataclass(frozen=True)
class PublicHostKey:
    """One public host key, e.g. from `ssh-keyscan` or the stack's state."""

    key_type: str  # ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa, ...
    blob: bytes  # the key in SSH wire format (what the fingerprint hashes)

    @classmethod
    def parse(cls, line: str) -> PublicHostKey:
        """`ssh-ed25519 AAAA... [comment]` (an authorized_keys / .pub line)."""
        words = line.split()
        if len(words) < 2:
            raise HostKeyError(f"{line[:60]!r} is not a public key line (TYPE BASE64 [comment])")
        try:
            blob = base64.b64decode(words[1], validate=True)
        except (binascii.Error, ValueError):
            raise HostKeyError(f"{words[1][:24]!r}... is not base64: not a public key") from None
        return cls(words[0], blob)

    @property
    def fingerprint(self) -> str:
        """`SHA256:...` as `ssh-keygen -l` and ssh's warnings print it."""
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")

    @property
    def line(self) -> str:
        """`TYPE BASE64`, what pulumi-command's `hostKey` and a known_hosts entry take."""
        return f"{self.key_type} {base64.b64encode(self.blob).decode()}"

    @property
    def kind(self) -> str:
        """ED25519, ECDSA, RSA: the name ssh's messages use."""
        return {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA"}.get(
            self.key_type, "ECDSA" if self.key_type.startswith("ecdsa") else self.key_type)

    def known_hosts_line(self, alias: str = KNOWN_HOSTS_ALIAS) -> str:
        return f"{alias} {self.line}\n"

    def __str__(self) -> str:
        return f"{self.kind} {self.fingerprint}"


def offered_keys(keyscan_output: str) -> list[PublicHostKey]:
    """The keys in `ssh-keyscan` output (`host TYPE BASE64` lines; `#` lines are its banners)."""
    keys = []
    for line in keyscan_output.splitlines():
        words = line.split()
        if len(words) >= 3 and not line.startswith("#"):
            try:
                keys.append(PublicHostKey.parse(" ".join(words[1:3])))
            except HostKeyError:
                continue
    return keys


def generate_host_key(comment: str) -> tuple[str, str]:
    """A new ed25519 host key: (private key in OpenSSH format, public key line with `comment`)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"
