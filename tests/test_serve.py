"""`iptraf-mp serve` in a real browser: headless Chromium (Debian's package) opens the pages
Datasette serves for a store made from a replayed corpus capture, and what it renders is
checked against the capture's tshark reference. Screenshots are kept in build/test-artifacts/.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import CORPUS, need_corpus, reference

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "build" / "test-artifacts"
CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("datasette") is None,
                       reason="Datasette is not installed (pip install '.[web]'; make does)"),
    pytest.mark.skipif(CHROMIUM is None,
                       reason="chromium is not installed (apt-get install chromium; make does)"),
]
CAPTURE = "ssh_ssh.pcap"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    need_corpus("real")
    tmp = tmp_path_factory.mktemp("serve")
    db = tmp / "flows.db"
    subprocess.run([sys.executable, "-m", "iptraf_mp", "-r", str(CORPUS / "real" / CAPTURE),
                    "-B", "--shards", "0", "--db", str(db)], check=True, capture_output=True,
                   timeout=120, cwd=REPO)
    port = _free_port()
    log = open(tmp / "serve.log", "w")  # noqa: SIM115  (the server's, closed at the end)
    proc = subprocess.Popen([sys.executable, "-m", "iptraf_mp", "serve", "--db", str(db),
                             "--port", str(port), "--time-limit", "300"], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/", timeout=2).read()
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("serve did not start: " +
                                     (tmp / "serve.log").read_text()) from None
            time.sleep(0.2)
    yield base, db, port, proc
    proc.terminate()
    proc.wait(10)
    log.close()
    # one line of its own, no traceback of the refused queries
    assert (tmp / "serve.log").read_text().count("Traceback") == 0


def _browser(url: str, shot: str | None = None) -> str:
    """What Chromium renders of `url` (its DOM after scripts ran); with `shot`, also a
    screenshot kept as a test artifact."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--window-size=1280,900", "--virtual-time-budget=3000"]
    if shot is not None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        subprocess.run([*args, f"--screenshot={ARTIFACTS / shot}", url], check=True,
                       capture_output=True, timeout=90)
        assert (ARTIFACTS / shot).stat().st_size > 5000
    out = subprocess.run([*args, "--dump-dom", url], check=True, capture_output=True,
                         text=True, timeout=90)
    return out.stdout


def _http(url: str) -> str:
    try:
        return urllib.request.urlopen(url, timeout=30).read().decode()
    except urllib.error.HTTPError as e:  # Datasette answers a refused query with a 400
        return e.read().decode()


def test_the_capture_s_connections_are_on_the_table_page(served) -> None:
    base, db, _port, _proc = served
    dom = _browser(f"{base}/flows/tcp_connections?_size=max", "serve-tcp_connections.png")
    ref = reference(CORPUS / "real" / CAPTURE)
    pairs = [(c["a"].rsplit(":", 1), c["b"].rsplit(":", 1)) for c in ref["tcp_connections"]]
    assert pairs
    for (a_addr, a_port), (b_addr, b_port) in pairs:
        assert a_addr in dom and b_addr in dom
        assert f">{a_port}<" in dom or f">{b_port}<" in dom
    with sqlite3.connect(db) as c:
        n = c.execute("SELECT count(*) FROM tcp_connections").fetchone()[0]
    assert f"{n} row" in dom
    assert "B to A: IP bytes in this direction" in dom  # the metadata's column description


def test_the_traffic_chart_has_a_bar_per_bucket(served) -> None:
    base, db, _port, _proc = served
    dom = _browser(f"{base}/-/traffic", "serve-traffic.png")
    assert '<svg id="traffic-chart"' in dom
    import re

    m = re.search(r'data-bucket-seconds="(\d+)" data-buckets="(\d+)"', dom)
    assert m, dom[:2000]
    width = int(m.group(1))
    with sqlite3.connect(db) as c:
        buckets = c.execute(
            "SELECT count(DISTINCT CAST(ts / ? AS INTEGER)) FROM (SELECT ts FROM flow_samples "
            "UNION ALL SELECT ts FROM other_samples)", (width,)).fetchone()[0]
    assert int(m.group(2)) == buckets == dom.count('class="bucket"') > 0


def test_canned_queries_answer_the_report_s_questions(served) -> None:
    base, _db, _port, _proc = served
    index = _browser(f"{base}/flows", "serve-database.png")
    for name in ("top_hosts", "top_ports", "protocols", "traffic_per_minute",
                 "top_tcp_sources", "connections_to_port"):
        assert f"/flows/{name}" in index
    ref = reference(CORPUS / "real" / CAPTURE)["totals"]
    dom = _browser(f"{base}/flows/protocols")
    # the tcp row: its bytes as tshark counts them (Datasette shows integers as they are)
    assert f">{ref['tcp']['bytes']}<" in dom and f">{ref['udp']['bytes']}<" in dom


def test_it_is_read_only_time_limited_and_local(served) -> None:
    base, db, port, _proc = served
    assert "Statement must be a SELECT" in _http(f"{base}/flows?sql=DELETE+FROM+tcp_connections")
    slow = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
            "SELECT count(*) FROM r")
    t0 = time.monotonic()
    assert "took too long" in _http(f"{base}/flows.json?sql=" + urllib.request.quote(slow))
    assert time.monotonic() - t0 < 10  # the 300 ms limit, not the endless query
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM tcp_connections").fetchone()[0] > 0
    # listening on the loopback address only: /proc/net/tcp lists 0100007F:PORT, state 0A
    listen = [ln.split() for ln in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    mine = [f[1] for f in listen if f[1].endswith(f":{port:04X}") and f[3] == "0A"]
    assert mine == [f"0100007F:{port:04X}"]


def test_a_missing_store_or_datasette_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "iptraf_mp", "serve", "--db",
                        str(tmp_path / "none.db")], capture_output=True, text=True, timeout=60,
                       cwd=REPO)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no flow store" in r.stderr
