"""One sanitiser (iptraf_mp/core/text.py) for everything a person reads: the log, stderr, `sql`
output to pipes and terminals alike, and the screen. Hostile characters become visible
escapes; printable Unicode stays."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from rich.cells import cell_len

from iptraf_mp.core.text import safe_text

from .test_pipeline import iptraf_mp_command, tcp4_frame, write_pcap

HOSTILE = "e\x1b]0;TITLE\x07\x1b[31m\u202eth0"


def test_safe_text_escapes_controls_and_format_characters_only():
    assert safe_text("plain eth0") == "plain eth0"
    assert safe_text("中文名 ünï") == "中文名 ünï"
    assert safe_text(HOSTILE) == "e\\x1b]0;TITLE\\x07\\x1b[31m\\u202eth0"
    assert safe_text("a\u2028b\U000e0001") == "a\\u2028b\\U000e0001"


def hostile_pcapng(path: Path) -> Path:
    from iptraf_mp.capture.capfile import PcapngWriter

    with PcapngWriter(path) as w:
        i = w.add_interface(HOSTILE, 1)
        w.write(i, 1_700_000_000.0, tcp4_frame("10.0.0.1", 1000, "10.0.0.2", 80, 0x02), 54)
    return path


def test_log_escapes_hostile_interface_names(tmp_path):
    cap = hostile_pcapng(tmp_path / "h.pcapng")
    log = tmp_path / "l.log"
    p = subprocess.run([*iptraf_mp_command(), "-r", str(cap), "-B", "--no-db", "-L", str(log)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    text = log.read_text()
    assert "\u202e" not in text and "\x1b" not in text and "\x07" not in text
    assert "e\\x1b]0;TITLE\\x07\\x1b[31m\\u202eth0" in text


def test_error_messages_escape_a_hostile_file_name(tmp_path):
    bad = tmp_path / "x\x1b]0;TITLE\x07.pcap"
    bad.write_bytes(b"not a capture at all")
    p = subprocess.run([*iptraf_mp_command(), "-r", str(bad), "-B", "--no-db"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "\x1b" not in p.stderr and "\x07" not in p.stderr
    assert "x\\x1b]0;TITLE\\x07.pcap" in p.stderr


def test_sql_output_to_a_pipe_is_escaped_as_to_a_terminal(tmp_path):
    cap = write_pcap(tmp_path / "c.pcap", [(1_700_000_000.0, tcp4_frame(
        "10.0.0.1", 1000, "10.0.0.2", 80, 0x02))])
    db = tmp_path / "f.db"
    assert subprocess.run([*iptraf_mp_command(), "-r", str(cap), "-B", "--db", str(db)],
                          capture_output=True, timeout=60).returncode == 0
    # a hostile interface name, as a capture file could have given it
    with sqlite3.connect(db) as c:
        c.execute("UPDATE tcp_connections SET iface = ?", (HOSTILE,))
    q = ["sql", "--db", str(db), "SELECT iface FROM tcp_connections"]
    csv_out = subprocess.run([*iptraf_mp_command(), *q, "--format", "csv"],
                             capture_output=True, text=True, timeout=60).stdout
    assert "\x1b" not in csv_out and "\u202e" not in csv_out
    assert "e\\x1b]0;TITLE\\x07\\x1b[31m\\u202eth0" in csv_out
    js = subprocess.run([*iptraf_mp_command(), *q, "--format", "json"],
                        capture_output=True, text=True, timeout=60).stdout
    assert js.isascii()  # \u escapes: the value itself survives intact
    assert json.loads(js)[0]["iface"] == HOSTILE


def test_wide_characters_keep_the_screen_s_columns():
    from iptraf_mp.console.screen import Frame, safe

    f = Frame(40, 2)
    f.boxed(0, safe("中文名") + " rest")
    f.put(1, 0, "x" * 50)
    f.put(1, 38, safe("中文"))  # clipped in the middle of 文: a space takes its column
    for row in f.text():
        assert cell_len(row) == 40, row
    assert "中文名 rest" in f.text()[0]
