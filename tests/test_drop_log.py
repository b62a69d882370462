"""`fw logs`: the kernel's dropped-packet lines as journalctl, dmesg and kern.log print them,
summarized per source, port and protocol, with the LOG rule's rate limit detected (unit tests;
the lab test reads real kernel lines: tests/test_live_host.py)."""
from datetime import UTC, datetime

from hardened_lightsail.drop_log import (
    DropLine,
    LogText,
    format_summary,
    limit_reached,
    log_rules,
    parse_drop_line,
    parse_limit,
    summarize,
)
from hardened_lightsail.saved_rules import parse_saved_ruleset

PREFIX = "IPTables-Dropped: "
NOW = datetime(2026, 11, 27, 7, 30, tzinfo=UTC).timestamp()
V4 = ("IPTables-Dropped: IN=eth0 OUT= MAC=02:00:00:00:00:01:02:00:00:00:00:02:08:00 SRC=198.51.100.7 "
      "DST=203.0.113.10 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=51515 DF PROTO=TCP SPT=40000 DPT={port} WINDOW=64240 "
      "RES=0x00 SYN URGP=0")
V6 = ("IPTables-Dropped: IN=eth0 OUT= MAC=02:00:00:00:00:01:02:00:00:00:00:02:86:dd "
      "SRC=2001:0db8:000b:0000:0000:0000:0000:0002 DST=2001:0db8:000c:0000:0000:0000:0000:0010 LEN=80 TC=0 "
      "HOPLIMIT=63 FLOWLBL=0 PROTO=UDP SPT=5353 DPT=5353 LEN=40")
PING = ("IPTables-Dropped: IN=eth0 OUT= SRC=192.0.2.99 DST=203.0.113.10 LEN=84 TOS=0x00 PREC=0x00 TTL=64 ID=0 DF "
        "PROTO=ICMP TYPE=8 CODE=0 ID=7 SEQ=1")


def test_a_log_line_gives_family_source_protocol_and_port_in_the_usual_notation():
    assert parse_drop_line(V4.format(port=23), PREFIX, 1.0) == DropLine(1.0, 4, "198.51.100.7", "TCP", 23)
    assert parse_drop_line(V6, PREFIX, 2.0) == DropLine(2.0, 6, "2001:db8:b::2", "UDP", 5353)
    ping = parse_drop_line(PING, PREFIX, 3.0)
    assert (ping.port, ping.icmp_type, ping.port_label) == (None, 8, "ICMP type 8")
    assert parse_drop_line(V4.format(port=23), "[UFW BLOCK] ", 1.0) is None


def test_journal_dmesg_and_kern_log_times_are_placed_and_old_lines_left_out():
    journal = LogText("journal", f"{NOW - 30:.6f} web kernel: {V4.format(port=23)}\n"
                                 f"{NOW - 7200:.6f} web kernel: {V4.format(port=25)}\n", NOW)
    assert [line.port for line in summarize(journal, PREFIX, 60).lines] == [23]
    dmesg = LogText("dmesg", f"[ 5000.000001] {V4.format(port=23)}\n[   10.000000] {V4.format(port=25)}\n"
                             "[ 5001.000000] eth0: link up\n", NOW, uptime=5010.0)
    summary = summarize(dmesg, PREFIX, 60)
    assert [(line.port, round(NOW - line.time)) for line in summary.lines] == [(23, 10)]
    kern = LogText("kern.log", f"Nov 27 16:29:00 web kernel: [ 1.0] {V4.format(port=23)}\n"
                               f"2026-11-27T16:29:30.5+09:00 web kernel: {V4.format(port=80)}\n", NOW,
                   utc_offset="+0900", year=2026)
    assert [(line.port, NOW - line.time) for line in summarize(kern, PREFIX, 5).lines] == [(23, 60.0), (80, 29.5)]


def test_the_summary_counts_sources_ports_and_protocols_per_family():
    text = "".join(f"{NOW - 60 + i:.6f} web kernel: {line}\n" for i, line in enumerate(
        [V4.format(port=23), V4.format(port=23), V4.format(port=5432), V6, PING]))
    summary = summarize(LogText("journal", text, NOW), PREFIX, 10)
    assert format_summary(summary, "ubuntu@203.0.113.10", top=3) == (
        '"IPTables-Dropped: " lines in the kernel log of ubuntu@203.0.113.10 (journal), last 10 min: 5 (IPv4 4, '
        "IPv6 1), 2026-11-27 07:29:00 UTC to 2026-11-27 07:29:04 UTC\n"
        "\n"
        "top sources    family  lines\n"
        "198.51.100.7   IPv4        3\n"
        "2001:db8:b::2  IPv6        1\n"
        "192.0.2.99     IPv4        1\n"
        "\n"
        "top ports  family  lines\n"
        "tcp/23     IPv4        2\n"
        "tcp/5432   IPv4        1\n"
        "udp/5353   IPv6        1\n"
        "\n"
        "protocol  IPv4  IPv6  lines\n"
        "TCP          3     0      3\n"
        "ICMP         1     0      1\n"
        "UDP          0     1      1\n")


def test_an_empty_log_says_so_and_the_kernels_own_suppression_is_reported():
    text = f"{NOW - 5:.6f} web kernel: net_ratelimit: 42 callbacks suppressed\n"
    summary = summarize(LogText("journal", text, NOW), PREFIX, 60)
    assert format_summary(summary, "root@192.0.2.1") == (
        '"IPTables-Dropped: " lines in the kernel log of root@192.0.2.1 (journal), last 60 min: none. Nothing was '
        "dropped and logged in that time.\nthe kernel suppressed log lines: net_ratelimit: 42 callbacks suppressed\n")


def line_at(time: float) -> DropLine:
    return DropLine(time, 4, "198.51.100.7", "TCP", 23)


def test_the_log_rules_limit_is_reached_when_lines_come_as_fast_as_it_allows():
    limit = parse_limit("10/min", 5)
    assert (limit.per_second, limit.burst) == (1 / 6, 5)
    burst = [line_at(100 + i * 0.01) for i in range(5)]
    assert limit_reached(burst, limit) == burst[-1].time  # five at once: the bucket is empty
    assert limit_reached(burst[:4], limit) is None
    steady = [line_at(100 + i * 6.5) for i in range(20)]  # slower than 10/min: never runs dry
    assert limit_reached(steady, limit) is None
    saturated = burst + [line_at(100 + 6 * i) for i in range(1, 6)]  # burst, then one per refill
    assert limit_reached(saturated, limit) is not None


def test_log_rules_are_found_with_their_prefix_and_limit():
    ruleset = parse_saved_ruleset(
        "*filter\n:INPUT DROP [0:0]\n:LOGDROP - [0:0]\n-A INPUT -j LOGDROP\n"
        '-A LOGDROP -m limit --limit 3/min -j LOG --log-prefix "[UFW BLOCK] "\n-A LOGDROP -j LOG\nCOMMIT\n',
        4, "rules.v4")
    found = log_rules([ruleset])
    assert found["[UFW BLOCK] "][4][0][1] == parse_limit("3/min", 5, "rules.v4 line 5")
    assert found[""][4] == [("rules.v4 line 6", None)]
