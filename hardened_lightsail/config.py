"""Reads and validates the stack config (`hardened-lightsail:*` keys) into `StackSettings`.

All problems are collected, one line each, naming the key path, the bad value and the fix, so
that a bad policy is refused before any resource or server is touched."""
from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from .blueprints import LOGIN_USERS, login_user
from .host_keys import HostKeyError, PublicHostKey
from .network_list import NetworkList
from .networks import (
    CidrError,
    Network,
    cidr_text,
    key_prefixlen,
    parse_cidr,
    parse_cidr_key,
    plain_cidr_keys,
    split_families,
)
from .policy import (
    PROTOCOLS,
    SCAN_MODES,
    DropLog,
    FirewallPolicy,
    LabSettings,
    PortRange,
    PortScanTrap,
    ServerSettings,
    Service,
    SshRateLimit,
    StackSettings,
    Vantage,
    VerifySettings,
)
from .scan_share import FLEET_SCAN_MODES
from .user_text import key_path, printable, show

NAMESPACE = "hardened-lightsail"
TARGETS = ("lightsail", "lab")
IP_ADDRESS_TYPES = ("dualstack", "ipv4", "ipv6")
DOCKER_MODES = ("auto", "on", "off")  # firewall.docker, see FirewallPolicy.docker
MAX_CIDRS_PER_RULE = 60  # Lightsail's PutInstancePublicPorts limit, per address family
CONFIRM_TIMEOUT_RANGE = (10, 3600)  # shorter can't finish an SSH round trip; longer leaves a door open
DEFAULT_SOURCES = ("0.0.0.0/0", "::/0")
# Every pattern is used with fullmatch: `match` with `$` lets a trailing newline through, and a
# name like "web\n" would split a line of rules.v4.
SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,23}")
PORTS = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")
AVAILABILITY_ZONE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}[a-z]")
LIGHTSAIL_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # blueprint and bundle ids: ubuntu_24_04, nano_3_0
LOG_PREFIX = re.compile(r"[A-Za-z0-9 _.:\-\[\]]{0,29}")  # the kernel keeps 29 characters
HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?")  # a DNS name, an IPv4 or IPv6 address
LOGIN = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # a Linux login name
KEY_TYPE = re.compile(r"(?:ssh|ecdsa|sk)-[a-z0-9@.-]{1,60}")  # ssh-ed25519, ecdsa-sha2-nistp256, ...
PRIVATE_KEY = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,40})PRIVATE KEY-----\n[A-Za-z0-9+/=\n:, -]{1,16000}"
                         r"-----END \1PRIVATE KEY-----\n?")
CLI = "scripts/pulumi"  # the project's Pulumi wrapper, in the commands hints suggest
# Reads a file a config value names (firewall.blocklistFiles), relative to the stack file's
# directory; raises OSError when it can't. `fw diff` reads the base side's from git.
FileReader = Callable[[str], str]
BAD_LINES_SHOWN = 5  # per blocklist file; the rest are counted


class ConfigError(Exception):
    """Invalid stack config; `problems` holds one message per bad value."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class _Checker:
    """Collects problems while walking the raw config, so the user sees all of them at once.
    `stack` (when known) goes into the commands that hints suggest."""

    def __init__(self, stack: str | None = None, read_file: FileReader | None = None) -> None:
        self.problems: list[str] = []
        self.stack = stack
        self.read_file = read_file or (lambda path: Path(path).read_text())
        self.unpathed: set[str] = set()  # top-level keys that had a "key.sub" set without --path

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def command(self, *words: str) -> str:
        """A `scripts/pulumi` command line for this stack, quoted for a POSIX shell."""
        stack = ["-s", self.stack] if self.stack else []
        return "`" + " ".join(shlex.quote(word) for word in [CLI, *words, *stack]) + "`"

    def set_commands(self, path: str, value: Any) -> list[str] | None:
        """The `config set --path` commands that store `value` at `path` (lists and maps item by item);
        None when a key or value holds control characters (no command line could carry it as typed)."""
        texts = [path, *_texts(value)]
        if not all(printable(text) for text in texts):
            return None
        if isinstance(value, list):
            return [c for index, item in enumerate(value) for c in self.set_commands(f"{path}[{index}]", item) or []]
        if isinstance(value, dict):
            return [c for key, item in value.items() for c in self.set_commands(f"{path}.{key}", item) or []]
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return [self.command("config", "set", "--path", f"{NAMESPACE}:{path}", text)]

    def not_a_list(self, path: str, value: Any, what: str, example: Any, required: bool = False) -> None:
        """A list that is something else. A string is how `config set` stores a list it was
        given as text (with or without --path): say how to set the items instead."""
        if not isinstance(value, str):
            self.fail(path, f"{show(value)} is not a list of {what}")
            return
        items = _json_list(value)
        if items is None:  # one item given as the list: a CIDR is an item, a service name is not
            items = [value] if isinstance(example, str) else []
        drop = self.command("config", "rm", "--path", f"{NAMESPACE}:{path}")
        sets = self.set_commands(path, items or [example]) or [f"`{CLI} config set --path` for each item"]
        none = "" if items or required else f"; for none, only {drop}"
        self.fail(path, f"{show(value)} is text, not a list of {what} (`config set` stores a list given on the "
                        f"command line as text): set the items one index at a time: {drop} then "
                        f"{' then '.join(sets)}{none}")

    def unpathed_keys(self, values: Mapping[str, Any], known: Mapping[str, Any]) -> dict[str, Any]:
        """Keys like "firewall.sshPort" are what `config set` stores without --path: one top-level
        key that the program never reads. Each is reported with the commands that move it where
        it belongs; the other keys are returned."""
        rest = {}
        for key, value in values.items():
            head = re.split(r"[.\[]", str(key), maxsplit=1)[0]
            moves = self.set_commands(str(key), value)
            if key == head or head not in known or moves is None:  # the last: reported as an unknown key
                rest[key] = value
                continue
            self.unpathed.add(head)
            commands = [self.command("config", "rm", f"{NAMESPACE}:{key}"), *moves]
            self.fail(key, f"is a top-level key named {show(str(key))}, not a path into {head}: it was set without "
                           f"--path. Move it: {' then '.join(commands)}")
        return rest

    def mapping(self, path: str, value: Any, allowed: Mapping[str, Any]) -> dict[str, Any]:
        """A mapping whose keys must all be known (a typo like `adminCidr` is an error)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"{show(value)} is not a mapping (expected keys: {', '.join(allowed)})")
            return {}
        for key in value:
            if key not in allowed:
                hint = _closest(key, allowed)
                self.fail(key_path(path, key), f"unknown key{f'; did you mean {hint!r}?' if hint else ''} "
                                               f"(known: {', '.join(allowed)})")
        return value

    def boolean(self, path: str, value: Any, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(path, f"{show(value)} is not true or false")
            return default
        return value

    def integer(self, path: str, value: Any, default: int, low: int, high: int, why: str = "") -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"{show(value)} is not a whole number ({low}-{high}{why})")
            return default
        if not low <= value <= high:
            self.fail(path, f"{value} is out of range ({low}-{high}{why})")
            return default
        return value

    def string(self, path: str, value: Any, default: str, choices: tuple[str, ...] | None = None,
               pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        """A string that is one of `choices`, or all of it matches `pattern` (`what` says what it is)."""
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(path, f"{show(value)} is not a string")
            return default
        if choices and value not in choices:
            self.fail(path, f"{show(value)} is not one of: {', '.join(choices)}")
            return default
        if pattern and not pattern.fullmatch(value):
            self.fail(path, f"{show(value)} is not {what}")
            return default
        return value

    def cidr_list(self, path: str, value: Any, default: tuple[str, ...] = (), required: bool = False) -> tuple[Network, ...]:
        if value is None:
            if required:
                self.fail(path, "is required: list the CIDRs you administer the server from "
                                "(e.g. [\"203.0.113.7/32\"])")
                return ()  # one line is enough: don't also call the missing list "empty"
            value = list(default)
        if not isinstance(value, list):
            self.not_a_list(path, value, "CIDRs", "203.0.113.7/32", required)
            return ()
        if required and not value:
            self.fail(path, "is empty: SSH would be closed to everyone; add the CIDR you "
                            "administer the server from (e.g. \"203.0.113.7/32\")")
        networks = []
        for index, item in enumerate(value):
            try:
                networks.append(parse_cidr(item))
            except CidrError as error:
                self.fail(f"{path}[{index}]", str(error))
        for version in (4, 6):
            count = sum(1 for n in networks if n.version == version)
            if count > MAX_CIDRS_PER_RULE:
                self.fail(path, f"{count} IPv{version} CIDRs, but a Lightsail firewall rule allows at "
                                f"most {MAX_CIDRS_PER_RULE} per family; merge them into wider CIDRs")
        return tuple(networks)

    def ports(self, path: str, value: Any) -> PortRange | None:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        match = PORTS.fullmatch(text) if isinstance(text, str) else None
        if not match:
            self.fail(path, f"{show(value)} is not a port or range (\"443\" or \"8000-8010\")")
            return None
        first, last = match.groups()
        port_range = PortRange(int(first), int(last or first))
        for port in (port_range.first, port_range.last):
            if not 1 <= port <= 65535:
                self.fail(path, f"{show(value)} is not a port (1-65535)")
                return None
        if port_range.first > port_range.last:
            self.fail(path, f"{show(value)} is reversed; write \"{port_range.last}-{port_range.first}\"")
            return None
        return port_range


def _json_list(text: str) -> list[Any] | None:
    """The list a string spells in JSON ('["203.0.113.7/32"]', '[]'), or None."""
    import json
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def _texts(value: Any) -> list[str]:
    """Every key and scalar in a config value, as text (what a `config set` command would carry)."""
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (str(key), *_texts(item))]
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    return [str(value)]


def _closest(key: str, allowed: Mapping[str, Any]) -> str | None:
    import difflib
    matches = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
    return matches[0] if matches else None


def config_keys(model: type, **renames: str) -> dict[str, str]:
    """camelCase config key -> dataclass field, derived from the model so they can't drift."""
    def camel(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(part.title() for part in rest)
    names = {camel(f.name): f.name for f in fields(model) if f.metadata.get("config", True)}
    names.update(renames)
    return names


def _service(check: _Checker, path: str, raw: Any) -> Service | None:
    raw = check.mapping(path, raw, {"name": 0, "protocol": 0, "ports": 0, "sources": 0})
    if not raw:
        if not check.problems or not check.problems[-1].startswith(path):
            check.fail(path, "is empty; a service needs name, protocol and ports")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not SERVICE_NAME.fullmatch(name):
        check.fail(f"{path}.name", f"{show(name)} is not a service name (lowercase letters, digits, "
                                   "'-', up to 24 characters, e.g. \"https\")")
    protocol = check.string(f"{path}.protocol", raw.get("protocol"), "", PROTOCOLS)
    if raw.get("protocol") is None:
        check.fail(f"{path}.protocol", "is required (tcp or udp)")
    ports = check.ports(f"{path}.ports", raw.get("ports")) if "ports" in raw else None
    if "ports" not in raw:
        check.fail(f"{path}.ports", "is required (\"443\" or \"8000-8010\")")
    sources = check.cidr_list(f"{path}.sources", raw.get("sources"), DEFAULT_SOURCES)
    if raw.get("sources") == []:  # only a list written empty; bad CIDRs were reported above
        check.fail(f"{path}.sources", "is empty; remove the service or list who may connect")
    if not (isinstance(name, str) and protocol and ports):
        return None
    return Service(name=name, protocol=protocol, ports=ports, sources=tuple(sources))


def _services(check: _Checker, raw: Any, ssh_port: int) -> tuple[Service, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        check.not_a_list("firewall.services", raw, "services", {"name": "https", "protocol": "tcp", "ports": "443"})
        return ()
    services: list[tuple[int, Service]] = []
    for index, item in enumerate(raw):
        service = _service(check, f"firewall.services[{index}]", item)
        if service:
            services.append((index, service))
    for position, (index, service) in enumerate(services):
        path = f"firewall.services[{index}]"
        if service.protocol == "tcp" and service.ports.contains(PortRange(ssh_port, ssh_port)):
            check.fail(f"{path}.ports", f"\"{service.ports}\" includes the SSH port ({ssh_port}); SSH is "
                                        "opened only by firewall.adminCidrs: add the sources there")
        for other_index, other in services[:position]:
            if other.name == service.name:
                check.fail(f"{path}.name", f"\"{service.name}\" is also the name of "
                                           f"firewall.services[{other_index}]; names must be unique")
            if other.protocol == service.protocol and other.ports.overlaps(service.ports):
                check.fail(f"{path}.ports", f"{service.protocol} \"{service.ports}\" overlaps "
                                            f"firewall.services[{other_index}] ({other.name}, \"{other.ports}\"); "
                                            "merge them into one service with both sources")
    return tuple(service for _, service in services)


def _firewall(check: _Checker, raw: Any) -> FirewallPolicy | None:
    # blocklistFiles is read into `blocklist`: the policy holds the networks, not where they came from.
    keys = {key: field for model_key, field in config_keys(FirewallPolicy).items()
            for key in ((model_key, "blocklistFiles") if model_key == "blocklist" else (model_key,))}
    if raw is None:
        if "firewall" not in check.unpathed:  # else the hint to move firewall.* keys says it all
            check.fail("firewall", "is required: at least firewall.adminCidrs (see README, \"Config\")")
        return None
    raw = check.mapping("firewall", raw, keys)
    ssh_port = check.integer("firewall.sshPort", raw.get("sshPort"), FirewallPolicy.ssh_port, 1, 65535)
    low, high = CONFIRM_TIMEOUT_RANGE
    # Problems are reported in key order, so each value is read in that order.
    admin_cidrs = check.cidr_list("firewall.adminCidrs", raw.get("adminCidrs"), required=True)
    services = _services(check, raw.get("services"), ssh_port)
    ping = check.boolean("firewall.ping", raw.get("ping"), FirewallPolicy.ping)
    ping_per_second = check.integer("firewall.pingPerSecond", raw.get("pingPerSecond"),
                                    FirewallPolicy.ping_per_second, 1, 1000)
    confirm_timeout_seconds = check.integer("firewall.confirmTimeoutSeconds", raw.get("confirmTimeoutSeconds"),
                                            FirewallPolicy.confirm_timeout_seconds, low, high, " seconds")
    blocklist, origins = _blocklist(check, raw.get("blocklist")), [(0, "firewall.blocklist")]
    for where, listed in _blocklist_files(check, raw.get("blocklistFiles")):
        origins.append((len(blocklist), where))
        blocklist += listed
    return FirewallPolicy(
        admin_cidrs=admin_cidrs, services=services, ssh_port=ssh_port, ping=ping, ping_per_second=ping_per_second,
        confirm_timeout_seconds=confirm_timeout_seconds, blocklist=NetworkList(blocklist),
        blocklist_origins=tuple(origins),
        allow_lockout=check.boolean("firewall.allowLockout", raw.get("allowLockout"),
                                    FirewallPolicy.allow_lockout),
        ssh_rate_limit=_ssh_rate_limit(check, raw.get("sshRateLimit")),
        port_scan=_port_scan(check, raw.get("portScan")),
        drop_log=_drop_log(check, raw.get("dropLog")),
        docker=check.string("firewall.docker", raw.get("docker"), FirewallPolicy.docker, DOCKER_MODES),
        deployer_addresses=check.cidr_list("firewall.deployerAddresses", raw.get("deployerAddresses")),
    )


def _blocklist(check: _Checker, raw: Any) -> list[int]:
    """The blocklist is matched through an ipset, so it has no per-rule CIDR limit. Its entries
    are kept as keys (network_list.py): lists run to hundreds of thousands."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        check.not_a_list("firewall.blocklist", raw, "CIDRs", "198.51.100.0/24")
        return []
    keys = []
    for index, item in enumerate(raw):
        try:
            key = parse_cidr_key(item)
        except CidrError as error:
            check.fail(f"firewall.blocklist[{index}]", str(error))
            continue
        if key_prefixlen(key) == 0:
            check.fail(f"firewall.blocklist[{index}]", f"\"{item}\" would block everyone, admins included; "
                                                       "list the networks to block")
            continue
        keys.append(key)
    return keys


def _blocklist_files(check: _Checker, raw: Any) -> list[tuple[str, list[int]]]:
    """Lists too long for the stack file (the engine hands config to the program in one
    environment variable, which Linux caps at 128 KiB: about 5,000 CIDRs), one CIDR per line,
    in the formats blocklist publishers use: `#` or `;` starts a comment (Spamhaus DROP writes
    `192.0.2.0/24 ; SBL123`), blank lines are skipped, a bare address is a /32 or /128."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        check.not_a_list("firewall.blocklistFiles", raw, "file paths", "blocklists/drop.txt")
        return []
    read = []
    for index, path in enumerate(raw):
        where = f"firewall.blocklistFiles[{index}]"
        if not isinstance(path, str) or not path.strip():
            check.fail(where, f"{show(path)} is not a file path (e.g. \"blocklists/drop.txt\", relative to "
                              "the stack file)")
            continue
        try:
            text = check.read_file(path)
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            check.fail(where, f"{show(path)} can't be read ({reason}); paths are relative to the stack file's "
                              "directory")
            continue
        # Comments cut and blanks trimmed in one comprehension, the usual spelling parsed in one
        # map (networks.plain_cidr_keys): these run once per entry of lists of 100,000s.
        entries = [line.split("#", 1)[0].split(";", 1)[0].strip() if "#" in line or ";" in line else line.strip()
                   for line in text.splitlines()]
        keys, bad = plain_cidr_keys(entries), []
        if None in keys:  # blank or comment lines, unusual spellings, mistakes: one by one
            for position, entry in enumerate(entries):
                if keys[position] is not None or not entry:
                    continue
                try:
                    key = parse_cidr_key(entry)
                except CidrError as error:
                    bad.append(f"line {position + 1}: {error}")
                    continue
                if key_prefixlen(key) == 0:
                    bad.append(f"line {position + 1}: {show(entry)} would block everyone, admins included")
                    continue
                keys[position] = key
        listed = [key for key in keys if key is not None]
        if bad:
            more = f"; and {len(bad) - BAD_LINES_SHOWN:,} more bad line(s)" if len(bad) > BAD_LINES_SHOWN else ""
            check.fail(where, f"{show(path)} {'; '.join(bad[:BAD_LINES_SHOWN])}{more}")
        read.append((f"{where} ({path})", listed))
    return read


def _ssh_rate_limit(check: _Checker, raw: Any) -> SshRateLimit:
    raw = check.mapping("firewall.sshRateLimit", raw, config_keys(SshRateLimit))
    return SshRateLimit(
        per_minute=check.integer("firewall.sshRateLimit.perMinute", raw.get("perMinute"),
                                 SshRateLimit.per_minute, 1, 10000),
        burst=check.integer("firewall.sshRateLimit.burst", raw.get("burst"), SshRateLimit.burst, 1, 10000))


def _port_scan(check: _Checker, raw: Any) -> PortScanTrap:
    raw = check.mapping("firewall.portScan", raw, config_keys(PortScanTrap))
    return PortScanTrap(
        enabled=check.boolean("firewall.portScan.enabled", raw.get("enabled"), PortScanTrap.enabled),
        # xt_recent remembers at most 20 packets per source (ip_pkt_list_tot), hence the cap.
        threshold=check.integer("firewall.portScan.threshold", raw.get("threshold"),
                                PortScanTrap.threshold, 1, 20, ", xt_recent keeps 20 hits"),
        window_seconds=check.integer("firewall.portScan.windowSeconds", raw.get("windowSeconds"),
                                     PortScanTrap.window_seconds, 1, 86400),
        ban_seconds=check.integer("firewall.portScan.banSeconds", raw.get("banSeconds"),
                                  PortScanTrap.ban_seconds, 1, 30 * 86400))


def _drop_log(check: _Checker, raw: Any) -> DropLog:
    raw = check.mapping("firewall.dropLog", raw, config_keys(DropLog))
    # The kernel truncates LOG prefixes at 29 characters; quotes would break the rules file.
    prefix = check.string("firewall.dropLog.prefix", raw.get("prefix"), DropLog.prefix, pattern=LOG_PREFIX,
                          what="a log prefix: at most 29 characters of letters, digits, space and _ . : - [ ]")
    return DropLog(
        prefix=prefix,
        per_minute=check.integer("firewall.dropLog.perMinute", raw.get("perMinute"), DropLog.per_minute, 1, 10000),
        burst=check.integer("firewall.dropLog.burst", raw.get("burst"), DropLog.burst, 1, 10000))


def _server(check: _Checker, raw: Any) -> ServerSettings:
    raw = check.mapping("server", raw, config_keys(ServerSettings))
    return ServerSettings(
        availability_zone=check.string("server.availabilityZone", raw.get("availabilityZone"),
                                       ServerSettings.availability_zone, pattern=AVAILABILITY_ZONE,
                                       what="a Lightsail availability zone (e.g. \"ap-northeast-1a\")"),
        blueprint_id=_blueprint(check, raw.get("blueprintId")),
        bundle_id=check.string("server.bundleId", raw.get("bundleId"), ServerSettings.bundle_id,
                               pattern=LIGHTSAIL_ID, what="a Lightsail bundle id (e.g. \"nano_3_0\")"),
        ip_address_type=check.string("server.ipAddressType", raw.get("ipAddressType"),
                                     ServerSettings.ip_address_type, IP_ADDRESS_TYPES),
        count=check.integer("server.count", raw.get("count"), ServerSettings.count, 1, 20))


def _blueprint(check: _Checker, raw: Any) -> str:
    blueprint = check.string("server.blueprintId", raw, ServerSettings.blueprint_id, pattern=LIGHTSAIL_ID,
                             what="a Lightsail blueprint id (e.g. \"ubuntu_24_04\")")
    if login_user(blueprint) is None:
        check.fail("server.blueprintId", f"\"{blueprint}\" is not a Linux image we can harden; use one of "
                                         f"{', '.join(prefix + '_*' for prefix in LOGIN_USERS)} (e.g. \"ubuntu_24_04\")")
    return blueprint


def _lab(check: _Checker, raw: Any) -> LabSettings:
    raw = check.mapping("lab", raw, config_keys(LabSettings))
    slot = raw.get("slot")
    return LabSettings(slot=None if slot is None else check.integer("lab.slot", slot, 0, 0, 15),
                       boot_seconds=check.integer("lab.bootSeconds", raw.get("bootSeconds"), LabSettings.boot_seconds,
                                                  0, 600, " seconds"))


def _verify(check: _Checker, raw: Any, target: str, secret_keys: frozenset[str] | None) -> VerifySettings:
    raw = check.mapping("verify", raw, config_keys(VerifySettings))
    scan = check.string("verify.scan", raw.get("scan"), "", SCAN_MODES) if raw.get("scan") is not None else None
    vantage = None
    if raw.get("vantage") is not None:
        if target == "lab":
            check.fail("verify.vantage", "the lab measures what anyone else sees from its own internet namespace; "
                                         "remove verify.vantage from a lab stack (it is for Lightsail targets)")
        vantage = _vantage(check, raw.get("vantage"), secret_keys)
    fleet_scan = check.string("verify.fleetScan", raw.get("fleetScan"), VerifySettings.fleet_scan, FLEET_SCAN_MODES)
    return VerifySettings(scan=scan, vantage=vantage, fleet_scan=fleet_scan)


def _vantage(check: _Checker, raw: Any, secret_keys: frozenset[str] | None) -> Vantage | None:
    path = "verify.vantage"
    raw = check.mapping(path, raw, {**config_keys(Vantage), "privateKey": 0})
    if not raw:
        return None
    host = check.string(f"{path}.host", raw.get("host"), "", pattern=HOST_NAME,
                        what="a host name or address (e.g. \"198.51.100.7\")")
    user = check.string(f"{path}.user", raw.get("user"), "", pattern=LOGIN, what="a login name (e.g. \"ubuntu\")")
    for key in ("host", "user", "hostKey", "privateKey"):
        if raw.get(key) is None:
            check.fail(f"{path}.{key}", "is required: a vantage is a host reached over SSH with its pinned key "
                                        "(see README, \"What is verified from where\")")
    host_key = raw.get("hostKey")
    if host_key is not None:
        try:
            if not isinstance(host_key, str) or not host_key.isprintable() or len(host_key) > 2000:
                raise HostKeyError("not one line of text")
            parsed = PublicHostKey.parse(host_key)
            if not KEY_TYPE.fullmatch(parsed.key_type):
                raise HostKeyError(f"{parsed.key_type!r} is not a key type")
            host_key = parsed.line
        except HostKeyError:
            check.fail(f"{path}.hostKey", f"{show(host_key)} is not a public host key (\"ssh-ed25519 AAAA...\", "
                                          "e.g. from `ssh-keyscan -t ed25519 HOST`, checked by hand)")
            host_key = ""
    _secret_private_key(check, f"{path}.privateKey", raw.get("privateKey"), secret_keys)
    port = check.integer(f"{path}.port", raw.get("port"), Vantage.port, 1, 65535)
    scan = check.string(f"{path}.scan", raw.get("scan"), Vantage.scan, SCAN_MODES)
    return Vantage(host=host, user=user, host_key=host_key or "", port=port, scan=scan)


def _secret_private_key(check: _Checker, path: str, value: Any, secret_keys: frozenset[str] | None) -> None:
    """The key must be a Pulumi secret: encrypted (`secure:`) in the stack file, a secret config
    value in the program (`secret_keys` names the top-level keys the engine holds secret)."""
    if value is None:
        return
    store = f"set it with {check.command('config', 'set', '--path', '--secret', f'{NAMESPACE}:{path}')} < KEY_FILE"
    if isinstance(value, dict) and set(value) == {"secure"} and isinstance(value["secure"], str):
        return  # encrypted in the stack file: only the engine can read it
    if not isinstance(value, str) or not PRIVATE_KEY.fullmatch(value):
        check.fail(path, f"is not an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY----- ...): {store}")
    elif secret_keys is None or f"{NAMESPACE}:{path.split('.')[0]}" not in secret_keys:
        check.fail(path, f"is stored in plain text: a private key must be a secret; {store}")


def settings_from_values(values: Mapping[str, Any], stack: str | None = None,
                         read_file: FileReader | None = None,
                         secret_keys: frozenset[str] | None = None) -> StackSettings:
    """Validate the project's config values (keys without the namespace prefix). `stack` names
    the stack in the commands that hints suggest; `read_file` reads the files the config names
    (default: relative to the working directory, where the engine runs the program);
    `secret_keys` (the program's) are the config keys the engine holds as secrets (None: values
    read from a stack file, where secrets stay encrypted)."""
    check = _Checker(stack, read_file)
    top_level = {"target": 0, "server": 0, "firewall": 0, "lab": 0, "verify": 0}
    check.mapping("", check.unpathed_keys(values, top_level), top_level)
    target = check.string("target", values.get("target"), "lightsail", TARGETS)
    firewall = _firewall(check, values.get("firewall"))
    server = _server(check, values.get("server"))
    lab = _lab(check, values.get("lab"))
    verify = _verify(check, values.get("verify"), target, secret_keys)
    if target == "lab" and firewall is not None and firewall.ssh_port != 22:
        check.fail("firewall.sshPort", f"{firewall.ssh_port}: the lab's sshd listens on 22 only; use 22 in "
                                       "lab stacks (a custom port is moved by first-boot user data on Lightsail)")
    if target == "lab":
        from lab.topology import MAX_SERVERS  # pure address arithmetic, nothing that touches the machine
        if server.count > MAX_SERVERS:
            check.fail("server.count", f"{server.count}: a lab holds at most {MAX_SERVERS} servers (they share its "
                                       f"slot's /28 of 203.0.113.0/24); use 1-{MAX_SERVERS} in lab stacks")
    if check.problems or firewall is None:
        raise ConfigError(check.problems)
    return StackSettings(target=target, firewall=firewall, server=server, lab=lab, verify=verify)


def load_yaml(text: str) -> Any:
    """yaml.safe_load through libyaml where PyYAML has it (a 100,000-CIDR blocklist loads in
    about 1 s instead of 25 s). A document it refuses is read again by the pure-Python loader,
    whose error message (the one we show) names the problem in words."""
    import yaml  # here: the deploy step loads this module for policy.json alone, on every server
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return yaml.load(text, Loader=fast)
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)


def values_from_stack_file(path: Path) -> dict[str, Any]:
    """The `hardened-lightsail:*` values of a Pulumi.<stack>.yaml (other namespaces ignored)."""
    import yaml
    try:
        document = load_yaml(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file; create it or pass --stack/--config with the right name"]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError([f"{path}:{where} is not valid YAML ({getattr(error, 'problem', error)})"]) from error
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise ConfigError([f"{path}: has no `config:` mapping (see Pulumi.dev.yaml for the format)"])
    prefix = NAMESPACE + ":"
    # parse_value as in the program, which gets every top-level value from the engine as text.
    return {key[len(prefix):]: parse_value(value) for key, value in config.items() if key.startswith(prefix)}


def stack_name_of(path: Path) -> str | None:
    """`dev` for Pulumi.dev.yaml; None for a file named otherwise."""
    match = re.fullmatch(r"Pulumi\.(.+)\.yaml", Path(path).name)
    return match.group(1) if match else None


def beside(stack_file: Path) -> FileReader:
    """Reads the files a stack file names relative to its own directory (the project directory
    for Pulumi.<stack>.yaml, where the program runs)."""
    return lambda path: (Path(stack_file).parent / path).read_text()


def load_stack_file(path: Path) -> StackSettings:
    return settings_from_values(values_from_stack_file(path), stack_name_of(path), beside(path))


def parse_value(value: Any) -> Any:
    """Pulumi hands structured config to the program as JSON strings; decode those."""
    import json
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def firewall_config_values(policy: FirewallPolicy) -> dict[str, Any]:
    """The validated policy back in config form (camelCase, every default spelled out).

    Shipped in each release as policy.json, so a deployer-side step (or an operator reading the
    server) sees exactly the policy the rules were rendered from."""
    values: dict[str, Any] = config_values(policy)
    return values


def config_values(settings: Any) -> Any:
    """Validated settings (StackSettings or any part of it) back in config form."""
    def plain(value: Any, owner: Any = None, field_name: str = "") -> Any:
        if isinstance(value, (tuple, NetworkList)):
            # Network lists in canonical order (v4 then v6, sorted), so reordering the same CIDRs in
            # the stack file changes nothing; services keep their order (it is the rules' order).
            if value and hasattr(value[0], "prefixlen"):
                if isinstance(owner, FirewallPolicy) and field_name == "blocklist":
                    # Sorted and written once per policy: it runs to hundreds of thousands.
                    return [*owner.blocklist_texts[0], *owner.blocklist_texts[1]]
                v4, v6 = split_families(value)
                return [cidr_text(n) for n in v4 + v6]
            return [plain(item) for item in value]
        if isinstance(value, PortRange):
            return str(value)
        if hasattr(value, "__dataclass_fields__"):
            return {camel: plain(getattr(value, name), value, name) for camel, name in config_keys(type(value)).items()}
        return value if isinstance(value, (bool, int, str)) or value is None else str(value)
    return plain(settings)


def load_policy_file(path: Path) -> FirewallPolicy:
    import json
    return settings_from_values({"firewall": json.loads(Path(path).read_text())}).firewall
