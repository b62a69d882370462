"""`fw check --rules`: the hand-written ruleset of the article this project started from is
caught on every one of its quiet bugs; our own rendered rules lint clean."""
import subprocess
from pathlib import Path

import pytest

from golden_cases import case_names, load_case
from hardened_lightsail.rules_lint import RulesFileError, lint_ruleset, parse_filter_table

HERE = Path(__file__).resolve().parent
ARTICLE = HERE / "rulesets" / "article.v4"
FW = HERE.parent / "scripts" / "fw"


def test_the_articles_ruleset_is_caught_on_each_quiet_bug():
    messages = [str(f) for f in lint_ruleset(parse_filter_table(ARTICLE.read_text()))]
    assert messages == [
        'warning: rules.v4: `-A INPUT -s 203.0.113.5/32 -p tcp --dport 22 -m comment --comment "line 11" -j ACCEPT` '
        'can never match: `-A INPUT -p tcp --dport 22 -m comment --comment "line 8" -j ACCEPT` above it already '
        'accepts every packet it would',
        "warning: chain port-scan is never jumped to: its rules never run",
        "warning: line 7: `-m state` is the old interface; use `-m conntrack --ctstate`",
        "warning: line 8: SSH (tcp/22) is accepted from anywhere; accept it only from the addresses you "
        "administer from",
        "warning: line 12: LOG without -m limit: a flood fills the disk",
    ]


def test_a_ruleset_that_accepts_by_default_is_an_error():
    ruleset = parse_filter_table("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 80 -j ACCEPT\nCOMMIT\n")
    assert [str(f) for f in lint_ruleset(ruleset)] == [
        "error: INPUT accepts whatever no rule drops: set `:INPUT DROP` (default deny)"]


@pytest.mark.parametrize("case", case_names())
def test_our_rendered_rules_lint_clean(case):
    _, release = load_case(case)
    for family in (4, 6):
        ruleset = parse_filter_table(release.files[f"rules.v{family}"].decode(), family)
        assert len(ruleset.rules) == len(release.rulesets[family // 6].rules)  # every rule was read
        assert lint_ruleset(ruleset) == []


def test_an_unreadable_line_names_its_number():
    with pytest.raises(RulesFileError, match="line 2: no -j target"):
        parse_filter_table("*filter\n-A INPUT -p tcp --dport 22\nCOMMIT\n")


def test_cli_lints_a_file_and_warns_when_no_ipv6_rules_are_given(tmp_path):
    result = subprocess.run([str(FW), "check", "--rules", str(ARTICLE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "no IPv6 rules given (--rules6)" in result.stdout
    assert result.stdout.rstrip().endswith("0 error(s), 6 warning(s)")
    missing = subprocess.run([str(FW), "check", "--rules", str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
