"""`fw diff`: the PR-comment markdown that says what a policy change opens and closes, per layer
and family, with the release hash change, blocklist and settings changes and the head's lint;
and the command itself, run for real against a git repository made by the test."""
from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest
import yaml

from hardened_lightsail.config import settings_from_values
from hardened_lightsail.policy_diff import NO_CHANGE, Side, diff_markdown

FW = Path(__file__).resolve().parent.parent / "scripts" / "fw"
ADMIN = "203.0.113.7/32"
GITHUB_COMMENT_LIMIT = 65_536
HTTP = {"name": "http", "protocol": "tcp", "ports": "80"}
HTTPS = {"name": "https", "protocol": "tcp", "ports": "443"}
POSTGRES = {"name": "postgres", "protocol": "tcp", "ports": "5432"}
CHANGED_HEADER = ("| change | port | family | source | cloud | host | reachable |\n"
                  "|---|---|---|---|---|---|---|")
UNCHANGED_HEADER = ("| port | family | source | cloud | host | reachable |\n"
                    "|---|---|---|---|---|---|")
OPENS_ROW = "closed → **open** | closed → **open** | no → **YES** |"
CLOSES_ROW = "open → **closed** | open → **closed** | YES → **no** |"
ALL_FILES = "Release files that change: `cloud-ports.json`, `policy.json`, `rules.v4`, `rules.v6`"
NO_FINDINGS = "**Lint of the proposed policy**: no findings"
# The exposure of the admin CIDR plus http (tcp/80 for anyone) with ping: unchanged in several tests.
HTTP_ONLY_ROWS = """| tcp/22 | IPv4 | 203.0.113.7/32 | open | open | YES |
| tcp/22 | IPv4 | anyone else | closed | closed | no |
| tcp/22 | IPv6 | anyone else | closed | closed | no |
| tcp/80 | IPv4 | anyone else | open | open | YES |
| tcp/80 | IPv6 | anyone else | open | open | YES |
| ping | IPv4 | anyone else | open | open | YES |
| ping | IPv6 | anyone else | open | open | YES |"""


def side(label: str, firewall: dict | None) -> Side:
    """A rendered side from `firewall` config values (admin CIDR defaulted); None: no stack file."""
    if firewall is None:
        return Side.rendered(label, None)
    return Side.rendered(label, settings_from_values({"firewall": {"adminCidrs": [ADMIN], **firewall}}).firewall)


def diff_of(base: dict | None, head: dict, **options) -> tuple[str, Side, Side]:
    base_side, head_side = side("origin/main:Pulumi.web.yaml", base), side("Pulumi.web.yaml", head)
    return diff_markdown("web", "origin/main", base_side, head_side, **options), base_side, head_side


def release_line(base: Side, head: Side) -> str:
    return f"Release: `{base.hash}` → `{head.hash}` (`origin/main` → working tree)"


# --- what opens and what closes, on both families

def test_added_service_opens_for_anyone_on_ipv4_and_ipv6():
    markdown, base, head = diff_of({"services": [HTTP]}, {"services": [HTTP, HTTPS]})
    assert markdown == f"""### Firewall diff: stack `web`

{release_line(base, head)}

**2 opened, 0 closed** (reachable from outside) · cloud layer +2/−0 · host layer +2/−0

{CHANGED_HEADER}
| 🔓 opens | tcp/443 | IPv4 | anyone else | {OPENS_ROW}
| 🔓 opens | tcp/443 | IPv6 | anyone else | {OPENS_ROW}

<details><summary>Unchanged: 7 rows</summary>

{UNCHANGED_HEADER}
{HTTP_ONLY_ROWS}

</details>

{ALL_FILES}

{NO_FINDINGS}
"""


def test_removed_service_closes_on_ipv4_and_ipv6():
    markdown, base, head = diff_of({"services": [HTTP, HTTPS]}, {"services": [HTTP]})
    assert markdown == f"""### Firewall diff: stack `web`

{release_line(base, head)}

**0 opened, 2 closed** (reachable from outside) · cloud layer +0/−2 · host layer +0/−2

{CHANGED_HEADER}
| 🔒 closes | tcp/443 | IPv4 | anyone else | {CLOSES_ROW}
| 🔒 closes | tcp/443 | IPv6 | anyone else | {CLOSES_ROW}

<details><summary>Unchanged: 7 rows</summary>

{UNCHANGED_HEADER}
{HTTP_ONLY_ROWS}

</details>

{ALL_FILES}

{NO_FINDINGS}
"""


def test_narrowed_source_closes_for_anyone_else_and_the_kept_network_stays_open():
    # From the whole internet (both families) down to one IPv4 network: that network could
    # already connect, so nothing opens; everyone else, on both families, is shut out.
    markdown, base, head = diff_of({"services": [POSTGRES]},
                                   {"services": [{**POSTGRES, "sources": ["198.51.100.0/24"]}]})
    assert markdown == f"""### Firewall diff: stack `web`

{release_line(base, head)}

**0 opened, 2 closed** (reachable from outside) · cloud layer +0/−2 · host layer +0/−2

{CHANGED_HEADER}
| 🔒 closes | tcp/5432 | IPv4 | anyone else | {CLOSES_ROW}
| 🔒 closes | tcp/5432 | IPv6 | anyone else | {CLOSES_ROW}

<details><summary>Unchanged: 6 rows</summary>

{UNCHANGED_HEADER}
| tcp/22 | IPv4 | 203.0.113.7/32 | open | open | YES |
| tcp/22 | IPv4 | anyone else | closed | closed | no |
| tcp/22 | IPv6 | anyone else | closed | closed | no |
| tcp/5432 | IPv4 | 198.51.100.0/24 | open | open | YES |
| ping | IPv4 | anyone else | open | open | YES |
| ping | IPv6 | anyone else | open | open | YES |

</details>

{ALL_FILES}

{NO_FINDINGS}
"""


def test_widened_source_opens_for_anyone_else_on_both_families():
    markdown, base, head = diff_of({"services": [{**POSTGRES, "sources": ["198.51.100.0/24", "2001:db8:5::/48"]}]},
                                   {"services": [POSTGRES]})
    assert markdown == f"""### Firewall diff: stack `web`

{release_line(base, head)}

**2 opened, 0 closed** (reachable from outside) · cloud layer +2/−0 · host layer +2/−0

{CHANGED_HEADER}
| 🔓 opens | tcp/5432 | IPv4 | anyone else | {OPENS_ROW}
| 🔓 opens | tcp/5432 | IPv6 | anyone else | {OPENS_ROW}

<details><summary>Unchanged: 7 rows</summary>

{UNCHANGED_HEADER}
| tcp/22 | IPv4 | 203.0.113.7/32 | open | open | YES |
| tcp/22 | IPv4 | anyone else | closed | closed | no |
| tcp/22 | IPv6 | anyone else | closed | closed | no |
| tcp/5432 | IPv4 | 198.51.100.0/24 | open | open | YES |
| tcp/5432 | IPv6 | 2001:db8:5::/48 | open | open | YES |
| ping | IPv4 | anyone else | open | open | YES |
| ping | IPv6 | anyone else | open | open | YES |

</details>

{ALL_FILES}

{NO_FINDINGS}
"""


def test_changed_admin_cidrs_open_ssh_for_the_new_admins_and_close_it_for_the_old_on_both_families():
    markdown, base, head = diff_of({"adminCidrs": [ADMIN, "2001:db8:7::/64"]},
                                   {"adminCidrs": ["198.51.100.9/32", "2001:db8:8::/64"]})
    assert markdown == f"""### Firewall diff: stack `web`

{release_line(base, head)}

**2 opened, 2 closed** (reachable from outside) · cloud layer +2/−2 · host layer +2/−2

{CHANGED_HEADER}
| 🔓 opens | tcp/22 | IPv4 | 198.51.100.9/32 | {OPENS_ROW}
| 🔓 opens | tcp/22 | IPv6 | 2001:db8:8::/64 | {OPENS_ROW}
| 🔒 closes | tcp/22 | IPv4 | 203.0.113.7/32 | {CLOSES_ROW}
| 🔒 closes | tcp/22 | IPv6 | 2001:db8:7::/64 | {CLOSES_ROW}

<details><summary>Unchanged: 4 rows</summary>

{UNCHANGED_HEADER}
| tcp/22 | IPv4 | anyone else | closed | closed | no |
| tcp/22 | IPv6 | anyone else | closed | closed | no |
| ping | IPv4 | anyone else | open | open | YES |
| ping | IPv6 | anyone else | open | open | YES |

</details>

{ALL_FILES}

{NO_FINDINGS}
"""


def test_moved_ssh_port_closes_the_old_port_and_opens_the_new_one():
    markdown, _, _ = diff_of({}, {"sshPort": 2222})
    assert f"| 🔓 opens | tcp/2222 | IPv4 | 203.0.113.7/32 | {OPENS_ROW}" in markdown
    assert f"| 🔒 closes | tcp/22 | IPv4 | 203.0.113.7/32 | {CLOSES_ROW}" in markdown
    assert "**Other settings**\n- `firewall.sshPort`: `22` → `2222`" in markdown


def test_missing_base_file_is_a_new_stack_where_everything_allowed_opens():
    markdown, _, head = diff_of(None, {"services": [HTTP], "ping": False})
    assert markdown == f"""### Firewall diff: stack `web`

Release: none → `{head.hash}`: `origin/main:Pulumi.web.yaml` does not exist, so this is a new stack and everything it allows opens.

**3 opened, 0 closed** (reachable from outside) · cloud layer +3/−0 · host layer +3/−0

{CHANGED_HEADER}
| 🔓 opens | tcp/22 | IPv4 | 203.0.113.7/32 | {OPENS_ROW}
| 🔓 opens | tcp/80 | IPv4 | anyone else | {OPENS_ROW}
| 🔓 opens | tcp/80 | IPv6 | anyone else | {OPENS_ROW}

<details><summary>Unchanged: 4 rows</summary>

{UNCHANGED_HEADER}
| tcp/22 | IPv4 | anyone else | closed | closed | no |
| tcp/22 | IPv6 | anyone else | closed | closed | no |
| ping | IPv4 | anyone else | closed | closed | no |
| ping | IPv6 | anyone else | closed | closed | no |

</details>

{NO_FINDINGS}
"""


def test_same_release_says_no_firewall_change_and_keeps_the_table_collapsed():
    markdown, _, head = diff_of({"services": [HTTP]}, {"services": [HTTP]})
    assert markdown == f"""### Firewall diff: stack `web`

**{NO_CHANGE}**: `origin/main` and the working tree render the same release `{head.hash}`.

<details><summary>Exposure (unchanged): 7 rows</summary>

{UNCHANGED_HEADER}
{HTTP_ONLY_ROWS}

</details>

{NO_FINDINGS}
"""


def test_settings_only_change_has_no_exposure_change_but_names_the_setting_and_files():
    markdown, base, head = diff_of({}, {"confirmTimeoutSeconds": 30, "portScan": {"threshold": 5}})
    assert NO_CHANGE not in markdown
    assert markdown.startswith(f"""### Firewall diff: stack `web`

{release_line(base, head)}

**0 opened, 0 closed** (reachable from outside) · cloud layer +0/−0 · host layer +0/−0

The exposure is the same on both sides; what does change is listed below.

<details><summary>Exposure (unchanged): 5 rows</summary>
""")
    assert markdown.endswith(f"""</details>

**Other settings**
- `firewall.confirmTimeoutSeconds`: `60` → `30`
- `firewall.portScan.threshold`: `3` → `5`

Release files that change: `policy.json`, `rules.v4`, `rules.v6`

{NO_FINDINGS}
""")


def test_blocklist_change_is_counted_per_family_with_a_short_sample():
    base_blocklist = ["192.0.2.0/24", "198.51.100.0/24", "2001:db8:bad::/48"]
    head_blocklist = ["198.51.100.0/24", *[f"100.64.{n}.0/24" for n in range(7)], "2001:db8:bad::/48",
                      "2001:db8:beef::/48"]
    markdown, _, _ = diff_of({"blocklist": base_blocklist}, {"blocklist": head_blocklist})
    assert "**0 opened, 0 closed**" in markdown
    assert """**Blocklist** (host layer, dropped before anything else): IPv4 +7/−1, IPv6 +1/−0 CIDRs; now 8 IPv4 and 2 IPv6 entries
- added (IPv4): `100.64.0.0/24`, `100.64.1.0/24`, `100.64.2.0/24`, `100.64.3.0/24`, `100.64.4.0/24` and 2 more
- added (IPv6): `2001:db8:beef::/48`
- removed (IPv4): `192.0.2.0/24`

Release files that change: `ipsets`, `policy.json`
""" in markdown


def test_lint_of_the_head_lists_errors_first():
    markdown, _, _ = diff_of({}, {"adminCidrs": ["0.0.0.0/0"], "blocklist": ["192.0.2.0/24"]})
    assert markdown.endswith(
        "**Lint of the proposed policy**: 1 error(s), 1 warning(s) (`pulumi up` refuses a policy with errors)\n\n"
        "- ❌ error: lock-out: firewall.blocklist[0] 192.0.2.0/24 blocks (part of) admin CIDR 0.0.0.0/0. Refusing "
        "to ship it: fix firewall.adminCidrs/blocklist, or set firewall.allowLockout: true for a rollback drill\n"
        "- ⚠️ warning: SSH is open to 0.0.0.0/0 (firewall.adminCidrs): that is most of the internet; list the "
        "addresses you really administer from\n")


# --- size: a PR comment holds 65,536 characters

def big_firewall(services: int, sources_per_family: int) -> dict:
    return {"services": [{"name": f"svc{index}", "protocol": "tcp", "ports": str(10000 + index),
                          "sources": [f"10.{index}.{n}.0/24" for n in range(sources_per_family)]
                          + [f"2001:db8:{index:x}:{n:x}::/64" for n in range(sources_per_family)]}
                         for index in range(services)]}


def test_huge_policy_fits_a_comment_with_the_summary_and_changed_rows_first():
    # 40 services x 10 sources per family: 800 rows open, ~85,000 characters if all were shown.
    markdown, _, _ = diff_of({}, big_firewall(40, 10))
    assert len(markdown) < GITHUB_COMMENT_LIMIT
    assert "**800 opened, 0 closed** (reachable from outside) · cloud layer +800/−0 · host layer +800/−0" in markdown
    shown_opens = markdown.count("| 🔓 opens |")
    assert 500 < shown_opens < 800
    assert f"\n\n… {800 - shown_opens:,} more changed rows (not shown to keep this short; raise `--max-chars` " \
           "to see them)" in markdown
    assert "<details><summary>Unchanged" not in markdown  # the changed rows took the whole budget
    assert markdown.endswith(f"{ALL_FILES}\n\n{NO_FINDINGS}\n")


def test_small_max_chars_keeps_the_summary_and_cuts_the_changed_rows_with_a_count():
    markdown, _, _ = diff_of({}, big_firewall(3, 20), max_chars=6_000)
    assert len(markdown) <= 6_000
    assert "**120 opened, 0 closed**" in markdown
    shown_opens = markdown.count("| 🔓 opens |")
    assert f"\n\n… {120 - shown_opens} more changed rows" in markdown
    assert markdown.endswith(f"{ALL_FILES}\n\n{NO_FINDINGS}\n")


def test_small_max_chars_shows_every_changed_row_and_cuts_the_unchanged_ones_inside_details():
    big = big_firewall(3, 20)
    markdown, _, _ = diff_of(big, {"services": [*big["services"], HTTPS]}, max_chars=6_000)
    assert len(markdown) <= 6_000
    assert f"| 🔓 opens | tcp/443 | IPv4 | anyone else | {OPENS_ROW}\n" \
           f"| 🔓 opens | tcp/443 | IPv6 | anyone else | {OPENS_ROW}\n\n<details><summary>Unchanged: 131 rows" in markdown
    shown_unchanged = markdown.count("| open | open | YES |") + markdown.count("| closed | closed | no |")
    assert f"\n\n… {131 - shown_unchanged} more unchanged rows (`scripts/fw check` lists them all)" \
           f"\n\n</details>" in markdown


def test_ten_thousand_entry_blocklist_is_summarised_not_listed():
    blocklist = [str(n) for n in ipaddress.ip_network("100.64.0.0/10").subnets(new_prefix=24)][:10_000]
    markdown, _, _ = diff_of({"blocklist": ["192.0.2.0/24"]}, {"blocklist": blocklist})
    assert len(markdown) < 5_000
    assert "IPv4 +10,000/−1, IPv6 +0/−0 CIDRs; now 10,000 IPv4 and 0 IPv6 entries" in markdown
    assert "`100.64.4.0/24` and 9,995 more" in markdown


# --- the command, run for real against a git repository the test makes

STACK_YAML = """\
config:
  aws:region: ap-northeast-1
  hardened-lightsail:firewall:
    adminCidrs:
      - 203.0.113.7/32
      - 2001:db8:7::/64
    services:
      - name: http
        protocol: tcp
        ports: "80"
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=fw diff test", "-c", "user.email=test@example.invalid",
                    "-c", "commit.gpgsign=false", *args], check=True, capture_output=True)


@pytest.fixture
def stack_repo(tmp_path: Path) -> Path:
    """A git repository with Pulumi.web.yaml committed on its first commit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "Pulumi.web.yaml").write_text(STACK_YAML)
    git(repo, "add", "Pulumi.web.yaml")
    git(repo, "commit", "-q", "-m", "base policy")
    return repo


def fw_diff(config: Path, base: str = "HEAD", cwd: Path | None = None) -> subprocess.CompletedProcess:
    # Run from elsewhere on purpose: --base is resolved in the repository of the config file.
    return subprocess.run([str(FW), "diff", "--base", base, "--config", str(config)], capture_output=True, text=True,
                          cwd=cwd or config.parent.parent, timeout=120)


def test_fw_diff_reads_the_base_from_the_git_repository_of_the_config_file(stack_repo: Path):
    stack_file = stack_repo / "Pulumi.web.yaml"
    stack_file.write_text(STACK_YAML.replace('        ports: "80"\n', '        ports: "80"\n'
                                             '      - name: https\n        protocol: tcp\n        ports: "443"\n'))
    result = fw_diff(stack_file, cwd=Path("/"))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("### Firewall diff: stack `web`\n\nRelease: `")
    assert f"| 🔓 opens | tcp/443 | IPv4 | anyone else | {OPENS_ROW}\n" \
           f"| 🔓 opens | tcp/443 | IPv6 | anyone else | {OPENS_ROW}\n\n" in result.stdout


def test_fw_diff_of_comments_key_order_and_cidr_order_is_no_firewall_change(stack_repo: Path):
    stack_file = stack_repo / "Pulumi.web.yaml"
    stack_file.write_text("""\
# Reviewed 2024-05: only the layout of this file changed.
config:
  hardened-lightsail:firewall:
    services:
      - ports: '80'      # the port first now
        name: http
        protocol: tcp
    adminCidrs: ["2001:db8:7::/64", "203.0.113.7/32"]   # v6 first
  aws:region: ap-northeast-1
""")
    result = fw_diff(stack_file)
    assert (result.returncode, result.stderr) == (0, "")
    assert f"**{NO_CHANGE}**: `HEAD` and the working tree render the same release `" in result.stdout


def test_fw_diff_with_the_file_missing_at_the_base_reports_a_new_stack(stack_repo: Path):
    new_file = stack_repo / "Pulumi.staging.yaml"
    new_file.write_text(STACK_YAML)
    result = fw_diff(new_file)
    assert (result.returncode, result.stderr) == (0, "")
    assert "`HEAD:Pulumi.staging.yaml` does not exist, so this is a new stack and everything it allows opens." \
        in result.stdout
    assert "**6 opened, 0 closed**" in result.stdout


def test_fw_diff_with_an_invalid_base_exits_2_naming_the_base_file_and_the_key(stack_repo: Path):
    stack_file = stack_repo / "Pulumi.web.yaml"
    stack_file.write_text(STACK_YAML.replace("203.0.113.7/32", "203.0.113.7/24"))
    git(stack_repo, "commit", "-q", "-am", "a bad policy")
    stack_file.write_text(STACK_YAML)
    result = fw_diff(stack_file)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ('error: base HEAD:Pulumi.web.yaml: firewall.adminCidrs[0]: "203.0.113.7/24" has host '
                             'bits set; did you mean "203.0.113.0/24"?\n')


def test_fw_diff_with_invalid_base_and_head_reports_both(stack_repo: Path):
    stack_file = stack_repo / "Pulumi.web.yaml"
    stack_file.write_text("config: [\n")
    git(stack_repo, "commit", "-q", "-am", "broken YAML")
    stack_file.write_text(STACK_YAML.replace('ports: "80"', 'ports: "80000"'))
    result = fw_diff(stack_file)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        'error: head Pulumi.web.yaml: firewall.services[0].ports: "80000" is not a port (1-65535)',
        "error: base HEAD:Pulumi.web.yaml: line 2 is not valid YAML (expected the node content, but found "
        "'<stream end>')",
    ]


def test_fw_diff_with_an_unknown_base_ref_exits_2(stack_repo: Path):
    result = fw_diff(stack_repo / "Pulumi.web.yaml", base="origin/no-such-branch")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"error: --base origin/no-such-branch: no such commit in {stack_repo} (fetch it first, "
                             "e.g. `git fetch origin main`, and pass origin/main)\n")


def test_fw_diff_outside_a_git_repository_exits_2(tmp_path: Path):
    stack_file = tmp_path / "Pulumi.web.yaml"
    stack_file.write_text(STACK_YAML)
    result = fw_diff(stack_file)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"error: {stack_file}: not inside a git repository, so --base HEAD has nothing to "
                             "compare with\n")


def test_fw_diff_exits_0_when_the_head_has_lint_errors_because_it_is_a_report(stack_repo: Path):
    stack_file = stack_repo / "Pulumi.web.yaml"
    values = yaml.safe_load(STACK_YAML)
    values["config"]["hardened-lightsail:firewall"]["blocklist"] = ["203.0.113.0/24"]
    stack_file.write_text(yaml.safe_dump(values))
    result = fw_diff(stack_file)
    assert (result.returncode, result.stderr) == (0, "")
    assert "**Lint of the proposed policy**: 2 error(s), 0 warning(s) (`pulumi up` refuses a policy with errors)" \
        in result.stdout
    assert "- ❌ error: lock-out: firewall.blocklist[0] 203.0.113.0/24 blocks (part of) admin CIDR 203.0.113.7/32." \
        in result.stdout


def test_fw_diff_help_says_lint_errors_do_not_fail_it():
    result = subprocess.run([str(FW), "diff", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "Exit 0 when both sides are valid, even if the working tree's policy has lint errors" in result.stdout
