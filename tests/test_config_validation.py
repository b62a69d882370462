"""Stack config validation: every bad value is refused with one line that names the key path,
the value and the fix, and `scripts/fw` turns those lines into exit 2 without a traceback."""
from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest
import yaml

from hardened_lightsail.config import ConfigError, load_stack_file, settings_from_values
from hardened_lightsail.policy import (
    DropLog,
    FirewallPolicy,
    LabSettings,
    PortRange,
    PortScanTrap,
    ServerSettings,
    Service,
    SshRateLimit,
    StackSettings,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent
FW = PROJECT_DIR / "scripts" / "fw"
ADMIN = "203.0.113.7/32"
EXAMPLE_CIDRS = '(e.g. "203.0.113.7/32" or "2001:db8::/64")'
FIREWALL_KEYS = ("adminCidrs, services, sshPort, ping, pingPerSecond, confirmTimeoutSeconds, blocklist, "
                 "blocklistFiles, allowLockout, sshRateLimit, portScan, dropLog, docker, deployerAddresses")


def net(text: str):
    return ipaddress.ip_network(text)


def with_firewall(**keys) -> dict:
    """Config values with a valid admin CIDR, plus (or overriding) the given firewall keys."""
    return {"firewall": {"adminCidrs": [ADMIN], **keys}}


def with_services(*services: dict, **keys) -> dict:
    return with_firewall(services=list(services), **keys)


def service(name: str, ports, protocol: str = "tcp", **keys) -> dict:
    return {"name": name, "protocol": protocol, "ports": ports, **keys}


def problems_of(values: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings_from_values(values)
    return caught.value.problems


def many_v4(count: int) -> list[str]:
    """`count` distinct IPv4 /32s from the documentation ranges."""
    return [f"198.51.100.{host}/32" for host in range(1, count + 1)]


def many_v6(count: int) -> list[str]:
    return [f"2001:db8::{host:x}/128" for host in range(1, count + 1)]


# (test id, config values, the exact problem lines expected)
ONE_PROBLEM = [
    ("bad-cidr",
     with_firewall(adminCidrs=["203.0.113.300/32"]),
     [f'firewall.adminCidrs[0]: "203.0.113.300/32" is not a CIDR {EXAMPLE_CIDRS}']),
    ("cidr-with-host-bits-suggests-the-network",
     with_firewall(adminCidrs=["203.0.113.7/24"]),
     ['firewall.adminCidrs[0]: "203.0.113.7/24" has host bits set; did you mean "203.0.113.0/24"?']),
    ("ipv6-cidr-with-host-bits-suggests-the-network",
     with_firewall(adminCidrs=[ADMIN, "2001:db8:a::1/64"]),
     ['firewall.adminCidrs[1]: "2001:db8:a::1/64" has host bits set; did you mean "2001:db8:a::/64"?']),
    ("cidr-that-is-not-a-string",
     with_firewall(adminCidrs=[ADMIN, 42]),
     ['firewall.adminCidrs[1]: 42 is not a CIDR string (e.g. "203.0.113.7/32")']),
    ("service-source-with-bad-cidr",
     with_services(service("postgres", "5432", sources=["198.51.100.0/24", "198.51.100.0/33"])),
     [f'firewall.services[0].sources[1]: "198.51.100.0/33" is not a CIDR {EXAMPLE_CIDRS}']),
    ("service-source-with-host-bits",
     with_services(service("postgres", "5432", sources=["198.51.100.9/24"])),
     ['firewall.services[0].sources[0]: "198.51.100.9/24" has host bits set; did you mean "198.51.100.0/24"?']),
    ("port-out-of-range",
     with_services(service("http", "80"), service("alt", "70000")),
     ['firewall.services[1].ports: "70000" is not a port (1-65535)']),
    ("port-zero",
     with_services(service("http", "0")),
     ['firewall.services[0].ports: "0" is not a port (1-65535)']),
    ("range-end-out-of-range",
     with_services(service("app", "8000-70000")),
     ['firewall.services[0].ports: "8000-70000" is not a port (1-65535)']),
    ("port-as-out-of-range-number",
     with_services(service("alt", 70000)),
     ["firewall.services[0].ports: 70000 is not a port (1-65535)"]),
    ("port-that-is-a-name",
     with_services(service("https", "https")),
     ['firewall.services[0].ports: "https" is not a port or range ("443" or "8000-8010")']),
    ("reversed-range",
     with_services(service("app", "8010-8000")),
     ['firewall.services[0].ports: "8010-8000" is reversed; write "8000-8010"']),
    ("unknown-protocol",
     with_services(service("ping", "8", protocol="icmp")),
     ['firewall.services[0].protocol: "icmp" is not one of: tcp, udp']),
    ("upper-case-protocol",
     with_services(service("http", "80", protocol="TCP")),
     ['firewall.services[0].protocol: "TCP" is not one of: tcp, udp']),
    ("missing-protocol",
     with_services({"name": "http", "ports": "80"}),
     ["firewall.services[0].protocol: is required (tcp or udp)"]),
    ("missing-ports",
     with_services({"name": "http", "protocol": "tcp"}),
     ['firewall.services[0].ports: is required ("443" or "8000-8010")']),
    ("bad-service-name",
     with_services(service("Web Server", "80")),
     ['firewall.services[0].name: "Web Server" is not a service name (lowercase letters, digits, '
      "'-', up to 24 characters, e.g. \"https\")"]),
    ("duplicate-service-names",
     with_services(service("web", "80"), service("web", "443")),
     ['firewall.services[1].name: "web" is also the name of firewall.services[0]; names must be unique']),
    ("overlapping-ports-same-protocol",
     with_services(service("app", "8000-8010"), service("metrics", "8005")),
     ['firewall.services[1].ports: tcp "8005" overlaps firewall.services[0] (app, "8000-8010"); '
      "merge them into one service with both sources"]),
    ("service-on-the-ssh-port",
     with_services(service("ssh", "22")),
     ['firewall.services[0].ports: "22" includes the SSH port (22); SSH is opened only by '
      "firewall.adminCidrs: add the sources there"]),
    ("service-range-around-the-ssh-port",
     with_services(service("legacy", "20-30")),
     ['firewall.services[0].ports: "20-30" includes the SSH port (22); SSH is opened only by '
      "firewall.adminCidrs: add the sources there"]),
    ("service-on-a-custom-ssh-port",
     with_services(service("alt", "2222"), sshPort=2222),
     ['firewall.services[0].ports: "2222" includes the SSH port (2222); SSH is opened only by '
      "firewall.adminCidrs: add the sources there"]),
    ("service-with-empty-sources",
     with_services(service("http", "80", sources=[])),
     ["firewall.services[0].sources: is empty; remove the service or list who may connect"]),
    ("service-with-unknown-key",
     with_services(service("http", "80", source=["198.51.100.0/24"])),
     ["firewall.services[0].source: unknown key; did you mean 'sources'? (known: name, protocol, ports, sources)"]),
    ("empty-admin-cidrs",
     with_firewall(adminCidrs=[]),
     ["firewall.adminCidrs: is empty: SSH would be closed to everyone; add the CIDR you administer "
      'the server from (e.g. "203.0.113.7/32")']),
    ("missing-admin-cidrs",
     {"firewall": {"ping": True}},
     ["firewall.adminCidrs: is required: list the CIDRs you administer the server from "
      '(e.g. ["203.0.113.7/32"])']),
    ("missing-firewall",
     {"target": "lightsail"},
     ['firewall: is required: at least firewall.adminCidrs (see README, "Config")']),
    ("admin-cidrs-as-a-string",
     {"firewall": {"adminCidrs": ADMIN}},
     ['firewall.adminCidrs: "203.0.113.7/32" is text, not a list of CIDRs (`config set` stores a list given on '
      "the command line as text): set the items one index at a time: `scripts/pulumi config rm --path "
      "hardened-lightsail:firewall.adminCidrs` then `scripts/pulumi config set --path "
      "'hardened-lightsail:firewall.adminCidrs[0]' 203.0.113.7/32`"]),
    ("services-as-a-string",
     with_firewall(services="http"),
     ['firewall.services: "http" is text, not a list of services (`config set` stores a list given on the '
      "command line as text): set the items one index at a time: `scripts/pulumi config rm --path "
      "hardened-lightsail:firewall.services` then `scripts/pulumi config set --path "
      "'hardened-lightsail:firewall.services[0].name' https` then `scripts/pulumi config set --path "
      "'hardened-lightsail:firewall.services[0].protocol' tcp` then `scripts/pulumi config set --path "
      "'hardened-lightsail:firewall.services[0].ports' 443`; for none, only `scripts/pulumi config rm --path "
      "hardened-lightsail:firewall.services`"]),
    ("service-as-a-string",
     with_firewall(services=["http"]),
     ['firewall.services[0]: "http" is not a mapping (expected keys: name, protocol, ports, sources)']),
    ("sources-as-a-string",
     with_services(service("http", "80", sources="0.0.0.0/0")),
     ['firewall.services[0].sources: "0.0.0.0/0" is text, not a list of CIDRs (`config set` stores a list given '
      "on the command line as text): set the items one index at a time: `scripts/pulumi config rm --path "
      "'hardened-lightsail:firewall.services[0].sources'` then `scripts/pulumi config set --path "
      "'hardened-lightsail:firewall.services[0].sources[0]' 0.0.0.0/0`"]),
    ("blocklist-as-a-string",
     with_firewall(blocklist="198.51.100.0/24"),
     ['firewall.blocklist: "198.51.100.0/24" is text, not a list of CIDRs (`config set` stores a list given on '
      "the command line as text): set the items one index at a time: `scripts/pulumi config rm --path "
      "hardened-lightsail:firewall.blocklist` then `scripts/pulumi config set --path "
      "'hardened-lightsail:firewall.blocklist[0]' 198.51.100.0/24`"]),
    ("bool-as-a-string",
     with_firewall(ping="yes"),
     ['firewall.ping: "yes" is not true or false']),
    ("nested-bool-as-a-string",
     with_firewall(portScan={"enabled": "no"}),
     ['firewall.portScan.enabled: "no" is not true or false']),
    ("int-as-a-string",
     with_firewall(sshPort="2222"),
     ['firewall.sshPort: "2222" is not a whole number (1-65535)']),
    ("bool-for-an-int",
     with_firewall(sshPort=True),
     ["firewall.sshPort: True is not a whole number (1-65535)"]),
    ("ssh-port-out-of-range",
     with_firewall(sshPort=65536),
     ["firewall.sshPort: 65536 is out of range (1-65535)"]),
    ("confirm-timeout-too-short",
     with_firewall(confirmTimeoutSeconds=9),
     ["firewall.confirmTimeoutSeconds: 9 is out of range (10-3600 seconds)"]),
    ("confirm-timeout-too-long",
     with_firewall(confirmTimeoutSeconds=3601),
     ["firewall.confirmTimeoutSeconds: 3601 is out of range (10-3600 seconds)"]),
    ("confirm-timeout-as-a-string",
     with_firewall(confirmTimeoutSeconds="60s"),
     ['firewall.confirmTimeoutSeconds: "60s" is not a whole number (10-3600 seconds)']),
    ("port-scan-threshold-beyond-xt-recent",
     with_firewall(portScan={"threshold": 21}),
     ["firewall.portScan.threshold: 21 is out of range (1-20, xt_recent keeps 20 hits)"]),
    ("61-ipv4-admin-cidrs",
     with_firewall(adminCidrs=many_v4(61)),
     ["firewall.adminCidrs: 61 IPv4 CIDRs, but a Lightsail firewall rule allows at most 60 per family; "
      "merge them into wider CIDRs"]),
    ("61-ipv4-service-sources",
     with_services(service("http", "80", sources=many_v4(61))),
     ["firewall.services[0].sources: 61 IPv4 CIDRs, but a Lightsail firewall rule allows at most 60 "
      "per family; merge them into wider CIDRs"]),
    ("61-ipv6-admin-cidrs",
     with_firewall(adminCidrs=many_v6(61)),
     ["firewall.adminCidrs: 61 IPv6 CIDRs, but a Lightsail firewall rule allows at most 60 per family; "
      "merge them into wider CIDRs"]),
    ("blocklist-everyone-ipv4",
     with_firewall(blocklist=["198.51.100.0/24", "0.0.0.0/0"]),
     ['firewall.blocklist[1]: "0.0.0.0/0" would block everyone, admins included; list the networks to block']),
    ("blocklist-everyone-ipv6",
     with_firewall(blocklist=["::/0"]),
     ['firewall.blocklist[0]: "::/0" would block everyone, admins included; list the networks to block']),
    ("blocklist-bad-cidr",
     with_firewall(blocklist=["198.51.100.1/24"]),
     ['firewall.blocklist[0]: "198.51.100.1/24" has host bits set; did you mean "198.51.100.0/24"?']),
    ("bad-target",
     {"target": "aws", **with_firewall()},
     ['target: "aws" is not one of: lightsail, lab']),
    ("bad-ip-address-type",
     {"server": {"ipAddressType": "ipv5"}, **with_firewall()},
     ['server.ipAddressType: "ipv5" is not one of: dualstack, ipv4, ipv6']),
    ("docker-mode-unknown",
     with_firewall(docker="yes"),
     ['firewall.docker: "yes" is not one of: auto, on, off']),
    ("server-count-zero",
     {"server": {"count": 0}, **with_firewall()},
     ["server.count: 0 is out of range (1-20)"]),
    ("drop-log-prefix-with-a-quote",
     with_firewall(dropLog={"prefix": 'say "hi" '}),
     ['firewall.dropLog.prefix: "say "hi" " is not a log prefix: at most 29 characters of letters, digits, '
      "space and _ . : - [ ]"]),
    ("unknown-top-level-key",
     {"firewal": {}, **with_firewall()},
     ["firewal: unknown key; did you mean 'firewall'? (known: target, server, firewall, lab, verify)"]),
    ("unknown-nested-key",
     with_firewall(portScan={"treshold": 5}),
     ["firewall.portScan.treshold: unknown key; did you mean 'threshold'? "
      "(known: enabled, threshold, windowSeconds, banSeconds)"]),
]


@pytest.mark.parametrize("values, expected", [case[1:] for case in ONE_PROBLEM],
                         ids=[case[0] for case in ONE_PROBLEM])
def test_bad_value_gives_exactly_the_expected_line(values, expected):
    assert problems_of(values) == expected


def test_typo_admin_cidr_suggests_admin_cidrs():
    # The typo also leaves adminCidrs unset, and that is reported too: both lines help.
    assert problems_of({"firewall": {"adminCidr": [ADMIN]}}) == [
        f"firewall.adminCidr: unknown key; did you mean 'adminCidrs'? (known: {FIREWALL_KEYS})",
        "firewall.adminCidrs: is required: list the CIDRs you administer the server from "
        '(e.g. ["203.0.113.7/32"])',
    ]


def test_several_problems_are_all_reported_in_key_order():
    values = {
        "target": "aws",
        "firewall": {
            "adminCidrs": ["203.0.113.7/24"],
            "services": [service("http", "80"), service("alt", "70000"), service("http", "443", protocol="sctp")],
            "confirmTimeoutSeconds": 5,
            "blocklist": ["0.0.0.0/0"],
        },
        "server": {"ipAddressType": "ipv5"},
    }
    assert problems_of(values) == [
        'target: "aws" is not one of: lightsail, lab',
        'firewall.adminCidrs[0]: "203.0.113.7/24" has host bits set; did you mean "203.0.113.0/24"?',
        'firewall.services[1].ports: "70000" is not a port (1-65535)',
        'firewall.services[2].protocol: "sctp" is not one of: tcp, udp',
        "firewall.confirmTimeoutSeconds: 5 is out of range (10-3600 seconds)",
        'firewall.blocklist[0]: "0.0.0.0/0" would block everyone, admins included; list the networks to block',
        'server.ipAddressType: "ipv5" is not one of: dualstack, ipv4, ipv6',
    ]


@pytest.mark.parametrize("values", [
    with_firewall(confirmTimeoutSeconds=10),
    with_firewall(confirmTimeoutSeconds=3600),
    with_firewall(adminCidrs=many_v4(60) + many_v6(60)),
    with_services(service("dns", "53"), service("dns-udp", "53", protocol="udp")),
    with_services(service("ssh-honeypot", "22", protocol="udp")),
    with_services(service("ssh-honeypot", "22"), sshPort=2222),
    with_services(service("app", "8000-8010"), service("next", "8011-8020")),
    with_firewall(adminCidrs=["203.0.113.7"]),  # a bare address is its /32
], ids=["timeout-10", "timeout-3600", "60-cidrs-per-family", "same-port-other-protocol",
        "udp-on-the-ssh-port", "tcp-22-when-ssh-moved", "adjacent-ranges", "bare-address"])
def test_edge_values_are_accepted(values):
    settings_from_values(values)


def test_minimal_config_fills_in_every_default():
    assert settings_from_values({"firewall": {"adminCidrs": [ADMIN]}}) == StackSettings(
        target="lightsail",
        firewall=FirewallPolicy(admin_cidrs=(net(ADMIN),)),
        server=ServerSettings(),
        lab=LabSettings(),
    )
    defaults = FirewallPolicy(admin_cidrs=(net(ADMIN),))
    assert (defaults.ssh_port, defaults.ping, defaults.ping_per_second, defaults.confirm_timeout_seconds,
            defaults.blocklist, defaults.allow_lockout, defaults.deployer_addresses) == (22, True, 5, 60, (), False, ())
    assert defaults.port_scan == PortScanTrap(enabled=True, threshold=3, window_seconds=60, ban_seconds=3600)
    assert defaults.drop_log == DropLog(prefix="IPTables-Dropped: ", per_minute=10, burst=5)
    assert defaults.ssh_rate_limit == SshRateLimit(per_minute=20, burst=20)
    assert ServerSettings() == ServerSettings(availability_zone="ap-northeast-1a", blueprint_id="ubuntu_24_04",
                                              bundle_id="nano_3_0", ip_address_type="dualstack", count=1)


def test_service_sources_default_to_everyone_in_both_families():
    settings = settings_from_values(with_services(service("https", "443")))
    assert settings.firewall.services == (
        Service(name="https", protocol="tcp", ports=PortRange(443, 443),
                sources=(net("0.0.0.0/0"), net("::/0"))),
    )


FULL_STACK_FILE = """\
config:
  aws:region: ap-northeast-1
  other-project:firewall: {adminCidrs: []}
  hardened-lightsail:target: lightsail
  hardened-lightsail:server:
    availabilityZone: ap-northeast-1c
    blueprintId: debian_12
    bundleId: micro_3_0
    ipAddressType: ipv4
    count: 2
  hardened-lightsail:lab:
    slot: 3
  hardened-lightsail:firewall:
    adminCidrs: ["203.0.113.7/32", "2001:db8:a::/48"]
    sshPort: 2222
    services:
      - {name: https, protocol: tcp, ports: "443"}
      - {name: game, protocol: udp, ports: "27000-27015", sources: ["198.51.100.0/24", "2001:db8:100::/56"]}
      - {name: metrics, protocol: tcp, ports: 9100, sources: ["198.51.100.7/32"]}
    ping: false
    pingPerSecond: 2
    confirmTimeoutSeconds: 120
    blocklist: ["192.0.2.0/24", "2001:db8:bad::/48"]
    allowLockout: true
    sshRateLimit: {perMinute: 6, burst: 3}
    portScan: {enabled: false, threshold: 5, windowSeconds: 30, banSeconds: 600}
    dropLog: {prefix: "HL-DROP: ", perMinute: 30, burst: 10}
    deployerAddresses: ["203.0.113.7/32"]
"""


def test_full_stack_file_round_trips_to_the_expected_dataclasses(tmp_path):
    stack_file = tmp_path / "Pulumi.full.yaml"
    stack_file.write_text(FULL_STACK_FILE)
    assert load_stack_file(stack_file) == StackSettings(
        target="lightsail",
        firewall=FirewallPolicy(
            admin_cidrs=(net("203.0.113.7/32"), net("2001:db8:a::/48")),
            services=(
                Service("https", "tcp", PortRange(443, 443), (net("0.0.0.0/0"), net("::/0"))),
                Service("game", "udp", PortRange(27000, 27015), (net("198.51.100.0/24"), net("2001:db8:100::/56"))),
                Service("metrics", "tcp", PortRange(9100, 9100), (net("198.51.100.7/32"),)),
            ),
            ssh_port=2222,
            ping=False,
            ping_per_second=2,
            confirm_timeout_seconds=120,
            blocklist=(net("192.0.2.0/24"), net("2001:db8:bad::/48")),
            allow_lockout=True,
            ssh_rate_limit=SshRateLimit(per_minute=6, burst=3),
            port_scan=PortScanTrap(enabled=False, threshold=5, window_seconds=30, ban_seconds=600),
            drop_log=DropLog(prefix="HL-DROP: ", per_minute=30, burst=10),
            deployer_addresses=(net("203.0.113.7/32"),),
        ),
        server=ServerSettings(availability_zone="ap-northeast-1c", blueprint_id="debian_12",
                              bundle_id="micro_3_0", ip_address_type="ipv4", count=2),
        lab=LabSettings(slot=3),
    )


# --- the operator CLI: one `error:` line per problem on stderr, exit 2, no traceback

def run_fw_check(tmp_path: Path, values: dict) -> subprocess.CompletedProcess:
    stack_file = tmp_path / "Pulumi.bad.yaml"
    config = {f"hardened-lightsail:{key}": value for key, value in values.items()}
    stack_file.write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    return subprocess.run([str(FW), "check", "--config", str(stack_file)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("values, expected", [
    (with_services(service("http", "80"), service("alt", "70000")),
     ['firewall.services[1].ports: "70000" is not a port (1-65535)']),
    (with_firewall(adminCidrs=["203.0.113.7/24"]),
     ['firewall.adminCidrs[0]: "203.0.113.7/24" has host bits set; did you mean "203.0.113.0/24"?']),
    (with_firewall(blocklist=["0.0.0.0/0"]),
     ['firewall.blocklist[0]: "0.0.0.0/0" would block everyone, admins included; list the networks to block']),
    ({"target": "aws", "firewall": {"adminCidr": [ADMIN]}},
     ['target: "aws" is not one of: lightsail, lab',
      f"firewall.adminCidr: unknown key; did you mean 'adminCidrs'? (known: {FIREWALL_KEYS})",
      "firewall.adminCidrs: is required: list the CIDRs you administer the server from "
      '(e.g. ["203.0.113.7/32"])']),
], ids=["port-out-of-range", "host-bits", "blocklist-everyone", "several-at-once"])
def test_fw_check_prints_one_error_line_per_problem_and_exits_2(tmp_path, values, expected):
    result = run_fw_check(tmp_path, values)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [f"error: {line}" for line in expected]


def test_fw_check_on_invalid_yaml_names_the_line_and_exits_2(tmp_path):
    stack_file = tmp_path / "Pulumi.broken.yaml"
    stack_file.write_text("config:\n  hardened-lightsail:firewall:\n    adminCidrs: [203.0.113.7/32\n")
    result = subprocess.run([str(FW), "check", "--config", str(stack_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {stack_file}: line ") and "is not valid YAML" in line


def test_fw_check_on_a_missing_file_exits_2(tmp_path):
    missing = tmp_path / "Pulumi.nope.yaml"
    result = subprocess.run([str(FW), "check", "--config", str(missing)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"error: {missing}: no such file; create it or pass --stack/--config with the right name"]


def test_lab_stacks_keep_ssh_on_22_because_the_lab_sshd_listens_there():
    from hardened_lightsail.config import ConfigError, settings_from_values
    with pytest.raises(ConfigError) as raised:
        settings_from_values({"target": "lab", "firewall": {"adminCidrs": ["192.0.2.0/24"], "sshPort": 2222}})
    assert raised.value.problems == [
        "firewall.sshPort: 2222: the lab's sshd listens on 22 only; use 22 in lab stacks "
        "(a custom port is moved by first-boot user data on Lightsail)"]


def test_an_unknown_blueprint_is_refused_with_the_supported_families():
    from hardened_lightsail.config import ConfigError, settings_from_values
    with pytest.raises(ConfigError) as raised:
        settings_from_values({"server": {"blueprintId": "windows_server_2022"},
                              "firewall": {"adminCidrs": ["203.0.113.7/32"]}})
    assert raised.value.problems == [
        'server.blueprintId: "windows_server_2022" is not a Linux image we can harden; use one of ubuntu_*, '
        'debian_*, amazon_linux_*, centos_*, almalinux_* (e.g. "ubuntu_24_04")']


# --- verify: how the outside verification probes, and from where

VANTAGE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2h3HbdTKM1w3WQ3Hd2X1b3lXmZQ9u5Yy6yYtq0f6S"
PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
SET_SECRET = ("set it with `scripts/pulumi config set --path --secret "
              "hardened-lightsail:verify.vantage.privateKey -s dev` < KEY_FILE")


def vantage(**keys) -> dict:
    return {"host": "198.51.100.7", "user": "probe", "hostKey": VANTAGE_KEY, "privateKey": {"secure": "v1:abc"},
            **keys}


def verify_problems(verify: dict, target: str = "lightsail", secret_keys=None) -> list[str]:
    try:
        settings_from_values({**with_firewall(), "target": target, "verify": verify}, "dev", secret_keys=secret_keys)
    except ConfigError as error:
        return error.problems
    return []


def test_the_deployer_scans_fully_in_the_lab_and_quickly_on_lightsail_unless_told():
    lab = settings_from_values({**with_firewall(), "target": "lab"})
    lightsail = settings_from_values(with_firewall())
    assert (lab.verify.deployer_scan("lab"), lightsail.verify.deployer_scan("lightsail")) == ("full", "quick")
    told = settings_from_values({**with_firewall(), "verify": {"scan": "full"}})
    assert told.verify.deployer_scan("lightsail") == "full"


def test_a_fleets_full_scans_are_split_unless_every_server_is_asked_for():
    assert settings_from_values(with_firewall()).verify.fleet_scan == "split"
    assert settings_from_values({**with_firewall(), "verify": {"fleetScan": "every"}}).verify.fleet_scan == "every"
    assert verify_problems({"fleetScan": "all"}) == [
        'verify.fleetScan: "all" is not one of: split, every']


def test_a_vantage_is_read_with_its_pinned_key_and_no_private_key_in_the_settings():
    settings = settings_from_values({**with_firewall(), "verify": {"vantage": vantage(port=2222)}})
    assert settings.verify.vantage.host_key == VANTAGE_KEY and settings.verify.vantage.port == 2222
    assert settings.verify.vantage.scan == "full"
    assert "privateKey" not in repr(settings) and "private" not in repr(settings.verify)
    # The program gets the key decrypted: fine when the engine holds `verify` as a secret.
    decrypted = {**with_firewall(), "verify": {"vantage": vantage(privateKey=PRIVATE)}}
    assert settings_from_values(decrypted, "dev", secret_keys=frozenset({"hardened-lightsail:verify"})).verify.vantage


@pytest.mark.parametrize("verify, expected", [
    ({"scan": "thorough"}, ['verify.scan: "thorough" is not one of: full, quick']),
    ({"vantage": vantage(privateKey=PRIVATE)},
     [f"verify.vantage.privateKey: is stored in plain text: a private key must be a secret; {SET_SECRET}"]),
    ({"vantage": vantage(privateKey="hunter2")},
     [f"verify.vantage.privateKey: is not an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY----- ...): "
      f"{SET_SECRET}"]),
    ({"vantage": vantage(hostKey="ssh-ed25519")},
     ['verify.vantage.hostKey: "ssh-ed25519" is not a public host key ("ssh-ed25519 AAAA...", e.g. from '
      '`ssh-keyscan -t ed25519 HOST`, checked by hand)']),
    ({"vantage": vantage(host="-oProxyCommand=x")},
     ['verify.vantage.host: "-oProxyCommand=x" is not a host name or address (e.g. "198.51.100.7")']),
    ({"vantage": {"host": "198.51.100.7", "user": "probe"}},
     ['verify.vantage.hostKey: is required: a vantage is a host reached over SSH with its pinned key (see README, '
      '"What is verified from where")',
      'verify.vantage.privateKey: is required: a vantage is a host reached over SSH with its pinned key (see '
      'README, "What is verified from where")']),
    ({"vantage": vantage(scan="slow", prot=1)},
     ["verify.vantage.prot: unknown key; did you mean 'port'? (known: host, user, hostKey, port, scan, privateKey)",
      'verify.vantage.scan: "slow" is not one of: full, quick']),
])
def test_bad_verify_settings_name_the_key_and_the_fix(verify, expected):
    assert verify_problems(verify) == expected


def test_a_lab_stack_measures_from_its_internet_namespace_not_a_vantage():
    assert verify_problems({"vantage": vantage()}, target="lab") == [
        "verify.vantage: the lab measures what anyone else sees from its own internet namespace; remove "
        "verify.vantage from a lab stack (it is for Lightsail targets)"]


def test_fw_check_refuses_a_plain_text_vantage_key_with_exit_2(tmp_path):
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump({"config": {"hardened-lightsail:firewall": {"adminCidrs": [ADMIN]},
                                               "hardened-lightsail:verify": {"vantage": vantage(privateKey=PRIVATE)}}}))
    result = subprocess.run([str(FW), "check", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: verify.vantage.privateKey: is stored in plain text"), result.stderr
    assert "BEGIN OPENSSH" not in result.stdout + result.stderr.replace("-----BEGIN OPENSSH PRIVATE KEY----- ...", "")
