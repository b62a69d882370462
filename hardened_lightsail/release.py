"""A release: every file the host needs for one policy, named by the hash of its content.

Everything that touches a machine is driven by this hash: an unchanged policy gives the same
bytes and the same hash, so `pulumi up` has nothing to do; any change gives a new hash."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cloud_layer import cloud_port_infos
from .config import firewall_config_values
from .host_layer import docker_hook_file, host_ruleset
from .ipsets import ipset_restore_file
from .iptables_rules import Ruleset
from .policy import FirewallPolicy

# An installed package carries the payload inside it (pyproject.toml maps payload/ there); a
# checkout has it beside the package.
_PACKAGE_DIR = Path(__file__).resolve().parent
PAYLOAD_DIR = _PACKAGE_DIR / "payload" if (_PACKAGE_DIR / "payload").is_dir() else _PACKAGE_DIR.parent / "payload"
PAYLOAD_ENTRY = "hlfw"  # the entry point; it sources its parts (hlfw-*.sh) from its own directory
HASH_LENGTH = 16  # hex characters: 64 bits, plenty for one server's history, short in names
# (release hash, directory) this process has written: a program with N servers writes its one
# release directory once, not N times (each HostFirewall asks for it).
_WRITTEN: set[tuple[str, Path]] = set()


@dataclass(frozen=True)
class Release:
    hash: str
    files: dict[str, bytes]  # file name -> content, including manifest.sha256 and RELEASE
    rulesets: tuple[Ruleset, Ruleset]  # (v4, v6), for the analysis
    port_infos: list[dict[str, Any]]

    def write(self, directory: Path) -> Path:
        """Write the files (read-only for others) and return the directory. Written again unless
        this process wrote this release there already and every file is still there at its size."""
        key = (self.hash, directory.resolve())
        if key in _WRITTEN and self._still_written(directory):
            return directory
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            path = directory / name
            path.write_bytes(content)
            path.chmod(0o755 if name == PAYLOAD_ENTRY else 0o644)
        _WRITTEN.add(key)
        return directory

    def _still_written(self, directory: Path) -> bool:
        try:
            return all((directory / name).stat().st_size == len(content) for name, content in self.files.items())
        except OSError:
            return False


def payload_files() -> dict[str, bytes]:
    """hlfw and the parts it sources, shipped side by side in every release (flat names: the
    host's manifest check accepts only [A-Za-z0-9._-]+ regular files)."""
    names = [PAYLOAD_ENTRY, *sorted(path.name for path in PAYLOAD_DIR.glob(f"{PAYLOAD_ENTRY}-*.sh"))]
    return {name: (PAYLOAD_DIR / name).read_bytes() for name in names}


def indented_json(values: dict[str, Any]) -> str:
    """json.dumps(values, indent=2), byte for byte, with each list of strings written by one join:
    json's C encoder doesn't indent, and its Python one takes a tenth of a second for a policy's
    100,000-entry blocklist."""
    if not values:
        return "{}"
    members = []
    for key, value in values.items():
        if isinstance(value, list) and value and set(map(type, value)) == {str}:  # (in C: no loop of ours)
            text = "[\n    " + ",\n    ".join(map(json.encoder.encode_basestring_ascii, value)) + "\n  ]"
        else:  # one level deeper: no JSON string holds a raw newline, so each newline starts a line
            text = json.dumps(value, indent=2).replace("\n", "\n  ")
        members.append(f"  {json.encoder.encode_basestring_ascii(key)}: {text}")
    return "{\n" + ",\n".join(members) + "\n}"


def render_release(policy: FirewallPolicy) -> Release:
    """Pure: the same policy always gives byte-identical files and the same hash."""
    v4, v6 = host_ruleset(policy, 4), host_ruleset(policy, 6)
    port_infos = cloud_port_infos(policy)
    files = {
        "rules.v4": v4.render().encode(),
        "rules.v6": v6.render().encode(),
        "cloud-ports.json": (json.dumps(port_infos, indent=2) + "\n").encode(),
        "policy.json": (indented_json(firewall_config_values(policy)) + "\n").encode(),
        **payload_files(),
    }
    if policy.docker == "auto":
        files.update({f"docker-hook.v{family}": docker_hook_file(family).encode() for family in (4, 6)})
    ipsets = ipset_restore_file([v4, v6])
    if ipsets:
        files["ipsets"] = ipsets.encode()
    manifest = "".join(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n" for name in sorted(files))
    release_hash = hashlib.sha256(manifest.encode()).hexdigest()[:HASH_LENGTH]
    files["manifest.sha256"] = manifest.encode()
    files["RELEASE"] = f"{release_hash}\n".encode()
    return Release(hash=release_hash, files=files, rulesets=(v4, v6), port_infos=port_infos)
