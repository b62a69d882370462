"""Reads a running server over SSH, read-only, for `fw check --host`, `fw diff --from-host` and
`fw logs`: its live rules (iptables-save, ip6tables-save, ipset save; through `sudo -n` when the
login user is not root), its addresses and routes, what its sshd lets in (`sshd -T`, the payload's
own check) and its kernel log of dropped packets.

One SSH connection per command, with the user's own ssh: their config, agent and known_hosts
(an unknown host key is refused, never accepted blindly), or the key and known-hosts file given.
Nothing on the server is written. Deployer side: the pure analysis never imports this."""
from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .documentation_routes import unrouted_documentation_address
from .drop_log import LogText
from .host_error import HostError
from .release import PAYLOAD_DIR
from .rule_conditions import HostFacts, IpSet
from .saved_rules import SavedRuleset, parse_ipset_save, parse_saved_ruleset

PROJECT_DIR = Path(__file__).resolve().parent.parent
SSH_TIMEOUT_SECONDS = 60
CONNECT_TIMEOUT_SECONDS = 10
# Tables iptables-nft itself makes: any other nftables table filters packets this analysis can't see.
IPTABLES_NFT_TABLES = {f"{family} {name}" for family in ("ip", "ip6")
                       for name in ("filter", "nat", "mangle", "raw", "security")}


LOGIN_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
ADDRESS = re.compile(r"[A-Za-z0-9:][A-Za-z0-9.:-]{0,252}")  # a host name, an IPv4 or an IPv6 address


@dataclass(frozen=True)
class SshTarget:
    user: str
    address: str
    port: int | None = None
    identity: str | None = None  # private key file
    known_hosts: str | None = None  # a known_hosts file to check the host key against
    options: tuple[str, ...] = ()  # further `-o KEY=VALUE` options (from a stack's sshCommand)

    @classmethod
    def parse(cls, text: str, **settings: Any) -> SshTarget:
        """USER@ADDRESS (ADDRESS: a name, an IPv4 address, or an IPv6 address, bare or in [])."""
        user, at, address = text.rpartition("@")
        address = address[1:-1] if address.startswith("[") and address.endswith("]") else address
        # Neither may start with "-": ssh would take "-oProxyCommand=..." as an option and run it.
        if not at or not LOGIN_USER.fullmatch(user) or not ADDRESS.fullmatch(address):
            raise HostError(f"--host {text!r}: give the login as USER@ADDRESS, e.g. ubuntu@203.0.113.10 "
                            "(the port goes in --ssh-port)")
        return cls(user=user, address=address, **settings)

    def __str__(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.user}@{address}" + (f" port {self.port}" if self.port else "")

    def argv(self) -> list[str]:
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_SECONDS}",
                "-o", "ControlMaster=no", "-o", "ControlPath=none"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.identity:
            argv += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        for option in self.options:
            argv += ["-o", option]
        return [*argv, f"{self.user}@{self.address}", "sh", "-s"]


# --- the remote side: one POSIX sh script per read, sent on stdin ------------------------------

SCRIPT_HEAD = r"""set -u
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
# capture NAME CMD...: stdout as it is, stderr lines marked, then the exit status.
capture() {
  printf '@@hl-begin %s\n' "$1"; shift
  { { "$@" 2>&1 1>&3 3>&-; printf '@@hl-status %s\n' "$?" >&3; } | sed 's/^/@@hl-stderr /'; } 3>&1
}
have() { command -v "$1" >/dev/null 2>&1; }
capture whoami id -un
"""

RULES_SCRIPT = r"""
capture iptables-save as_root iptables-save
capture ip6tables-save as_root ip6tables-save
if have ipset; then capture ipset-save as_root ipset save; fi
if have nft; then capture nft-tables as_root nft list tables; fi
capture addresses ip -o addr show
capture routes sh -c 'ip -4 route show default; ip -6 route show default'
capture forwarding cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/all/forwarding
"""
# The payload's own sshd check (hlfw verify runs the same file), sent as it is.
SSHD_SCRIPT = (PAYLOAD_DIR / "hlfw-sshd.sh").read_text() + "\ncapture sshd sshd_login_report\n"
SSHD_SETTINGS, SSHD_WARNING = "sshd: ", "warning: "

LOG_SCRIPT = r"""
capture clock sh -c 'date +%s; cut -d" " -f1 /proc/uptime; date +%z; date +%Y'
if [ -S /run/systemd/journal/socket ] && have journalctl; then
  capture journal as_root journalctl -k -o short-unix --no-pager --since "@$(( $(date +%s) - MINUTES * 60 ))"
elif as_root dmesg >/dev/null 2>&1; then
  capture dmesg as_root dmesg
elif [ -r /var/log/kern.log ]; then
  capture kern.log tail -n 200000 /var/log/kern.log
else
  capture dmesg as_root dmesg
fi
"""


@dataclass
class Section:
    stdout: str = ""
    stderr: str = ""
    status: int | None = None


def parse_sections(text: str) -> dict[str, Section]:
    """The script's output, split back into one Section per captured command."""
    sections: dict[str, Section] = {}
    current: Section | None = None
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("@@hl-begin "):
            if current is not None:
                current.stdout = "\n".join(out) + ("\n" if out else "")
            current, out = sections.setdefault(line.split(" ", 1)[1], Section()), []
        elif current is None:
            continue
        elif line.startswith("@@hl-status "):
            current.status = int(line.split()[1])
        elif line.startswith("@@hl-stderr "):
            current.stderr += line[len("@@hl-stderr "):] + "\n"
        else:
            out.append(line)
    if current is not None:
        current.stdout = "\n".join(out) + ("\n" if out else "")
    return sections


def run_script(target: SshTarget, script: str) -> dict[str, Section]:
    """Run `script` on the host (one new SSH connection) and return its sections."""
    refusal = unrouted_documentation_address(target.address)
    if refusal:  # a lab's address while the lab is down: ssh would dial out through the default route
        raise HostError(f"{target}: {refusal}")
    try:
        result = subprocess.run(target.argv(), input=SCRIPT_HEAD + script, capture_output=True, text=True,
                                timeout=SSH_TIMEOUT_SECONDS)
    except FileNotFoundError:
        raise HostError("ssh is not installed here (Debian: apt-get install openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise HostError(f"{target}: no answer within {SSH_TIMEOUT_SECONDS} s") from None
    if result.returncode == 255 or "@@hl-begin whoami" not in result.stdout:
        raise HostError(_ssh_failure(target, result.stderr))
    return parse_sections(result.stdout)


def _ssh_failure(target: SshTarget, stderr: str) -> str:
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "ssh failed without a message"
    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return (f"{target}: the host key is not known (or changed): {last}. Check it and connect once with "
                f"`ssh {target.user}@{target.address}` to pin it, or give a known_hosts file with --known-hosts")
    if "Permission denied" in stderr:
        return (f"{target}: SSH refused the login ({last}). Give the private key with --identity FILE "
                "(the stack's key is a secret in its state and is not exported)")
    return f"{target}: can't connect over SSH: {last}"


def _require(sections: dict[str, Section], name: str, target: SshTarget, needed_for: str) -> Section:
    section = sections.get(name)
    if section is None or section.status is None:
        raise HostError(f"{target}: {name} did not run (the connection ended early)")
    if section.status != 0:
        error = section.stderr.strip() or section.stdout.strip()
        user = sections["whoami"].stdout.strip() if "whoami" in sections else target.user
        if "password is required" in error or "terminal is required" in error or ("sudo:" in error and \
                "not allowed" in error):
            raise HostError(f"{target}: {user} can't run {name} as root: `sudo -n` {error.splitlines()[-1]}. "
                            f"Log in as root, or allow {user} to run iptables-save, ip6tables-save, ipset and "
                            "dmesg/journalctl through sudo without a password")
        if section.status == 127:
            raise HostError(f"{target}: {name} is not installed there ({needed_for})")
        raise HostError(f"{target}: {name} failed (exit {section.status}): "
                        f"{error.splitlines()[-1] if error else 'no message'}")
    return section


# --- what the rules read tells ---------------------------------------------------------------

@dataclass
class LiveRules:
    target: SshTarget
    v4: SavedRuleset
    v6: SavedRuleset
    ipsets_read: bool
    other_nft_tables: list[str] = field(default_factory=list)
    legacy_tables_too: bool = False
    sshd_settings: str = ""  # "config=/etc/ssh/sshd_config passwordauthentication=no ..."
    sshd_warnings: list[str] = field(default_factory=list)  # ways in with a password


def _facts(sections: dict[str, Section], sets: dict[str, IpSet] | None) -> HostFacts:
    addresses, interfaces = [], set()
    for line in sections.get("addresses", Section()).stdout.splitlines():
        words = line.split()
        if len(words) >= 4 and words[2] in ("inet", "inet6") and words[1] != "lo":
            interface = ipaddress.ip_interface(words[3])
            # Where a connection from outside can arrive (Lightsail's IPv4: the private address).
            if not (interface.ip.is_loopback or interface.ip.is_link_local or interface.ip.is_multicast):
                addresses.append(ipaddress.ip_network(f"{interface.ip}/{interface.ip.max_prefixlen}"))
    for line in sections.get("routes", Section()).stdout.splitlines():
        match = re.search(r"\bdev (\S+)", line)
        if match:
            interfaces.add(match.group(1))
    switches = sections.get("forwarding", Section()).stdout.split()
    return HostFacts(sets=sets, public_interfaces=frozenset(interfaces) or None,
                     local_addresses=tuple(addresses) or None,
                     forwarding=("1" in switches) if switches else None)


def read_rules(target: SshTarget) -> LiveRules:
    """The host's live rules, both families, with its sets, addresses and routes."""
    return _rules_from(target, run_script(target, RULES_SCRIPT + SSHD_SCRIPT))


def _rules_from(target: SshTarget, sections: dict[str, Section]) -> LiveRules:
    v4_text = _require(sections, "iptables-save", target, "the rules can't be read without it").stdout
    v6_section = sections.get("ip6tables-save")
    v6_text = v6_section.stdout if v6_section and v6_section.status == 0 else ""
    ipsets = sections.get("ipset-save")
    sets = parse_ipset_save(ipsets.stdout) if ipsets and ipsets.status == 0 else None
    facts = _facts(sections, sets if sets is not None else ({} if ipsets is None else None))
    sshd = sections.get("sshd", Section()).stdout.splitlines()
    nft = sections.get("nft-tables")
    other = [line.split(None, 1)[1] for line in (nft.stdout.splitlines() if nft and nft.status == 0 else [])
             if line.startswith("table ") and line.split(None, 1)[1] not in IPTABLES_NFT_TABLES]
    return LiveRules(
        target=target,
        v4=parse_saved_ruleset(v4_text, 4, label=f"{target} iptables-save", facts=facts),
        v6=parse_saved_ruleset(v6_text, 6, label=f"{target} ip6tables-save", facts=facts),
        ipsets_read=sets is not None, other_nft_tables=other,
        legacy_tables_too="iptables-legacy tables present" in v4_text + v6_text,
        sshd_settings=next((line[len(SSHD_SETTINGS):] for line in sshd if line.startswith(SSHD_SETTINGS)), ""),
        sshd_warnings=[line[len(SSHD_WARNING):] for line in sshd if line.startswith(SSHD_WARNING)])


def read_log(target: SshTarget, minutes: int) -> tuple[LiveRules, LogText]:
    """The live rules and the kernel log (the last `minutes` when the journal can filter)."""
    sections = run_script(target, RULES_SCRIPT + LOG_SCRIPT.replace("MINUTES", str(int(minutes))))
    rules = _rules_from(target, sections)
    clock = _require(sections, "clock", target, "needed to place log lines in time").stdout.split()
    for source in ("journal", "dmesg", "kern.log"):
        if source in sections:
            text = _require(sections, source, target, "the kernel log can't be read without it").stdout
            return rules, LogText(source, text, float(clock[0]), float(clock[1]), clock[2], int(clock[3]))
    raise HostError(f"{target}: no kernel log to read (no journal, dmesg or /var/log/kern.log)")


# --- finding a stack's server ------------------------------------------------------------------

def target_from_stack(stack: str, identity: str | None = None, known_hosts: str | None = None,
                      port: int | None = None) -> SshTarget:
    """The first server of `stack`, as its outputs tell a user: `sshCommand` (user, port, key
    file, options) and `publicIp`, read with `scripts/pulumi stack output`."""
    try:
        result = subprocess.run([str(PROJECT_DIR / "scripts" / "pulumi"), "stack", "output", "--json", "-s", stack],
                                capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HostError(f"stack {stack}: `scripts/pulumi stack output` did not answer within 120 s") from None
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise HostError(f"stack {stack}: can't read its outputs with `scripts/pulumi stack output -s {stack}`: "
                        f"{lines[-1] if lines else f'exit {result.returncode}'}")
    outputs = json.loads(result.stdout or "{}")
    if not outputs.get("sshCommand") or not outputs.get("publicIp"):
        raise HostError(f"stack {stack} has no sshCommand/publicIp outputs: run `scripts/pulumi up -s {stack}` first")
    return target_from_ssh_command(outputs["sshCommand"], identity=identity, known_hosts=known_hosts, port=port)


def target_from_ssh_command(command: str, identity: str | None = None, known_hosts: str | None = None,
                            port: int | None = None) -> SshTarget:
    """Reads `ssh [-i KEY] [-p PORT] [-o OPTION]... USER@HOST` (a stack's sshCommand output);
    explicit settings win over what the command says."""
    words = shlex.split(command)
    settings: dict[str, Any] = {"identity": None, "port": None}
    options, destination, index = [], None, 1
    while index < len(words):
        word = words[index]
        if word in ("-i", "-p", "-o", "-l") and index + 1 < len(words):
            value = words[index + 1]
            if word == "-i":
                settings["identity"] = value
            elif word == "-p":
                settings["port"] = int(value)
            elif word == "-o":
                options.append(value)
            index += 2
            continue
        if not word.startswith("-"):
            destination = word
            break
        index += 1
    if destination is None:
        raise HostError(f"can't find USER@HOST in the stack's sshCommand `{command}`")
    target = SshTarget.parse(destination, identity=identity or settings["identity"],
                             port=port or settings["port"], known_hosts=known_hosts, options=tuple(options))
    if known_hosts:  # the user's choice replaces the lab's "no host key checking" options
        target = SshTarget(target.user, target.address, target.port, target.identity, known_hosts,
                           tuple(o for o in options if not o.startswith(("StrictHostKeyChecking", "UserKnownHostsFile"))))
    return target
