"""`iptraf-mp sql` under hostile or careless queries: a time limit, ^C, a memory limit and a
row limit; functions that reach outside the data refused; harmless schema pragmas allowed;
stores that cannot be written (a read-only copy or mount) still queried."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from .conftest import FIXTURES
from .test_pipeline import iptraf_mp_command

RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
# UNION (not ALL) keeps every row seen, to drop duplicates: memory grows without end
GREEDY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION SELECT x + 1 FROM c) SELECT count(*) FROM c"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = tmp_path_factory.mktemp("store") / "flows.db"
    p = subprocess.run([*iptraf_mp_command(), "-r", str(FIXTURES / "timeout.pcap"), "-B",
                        "--db", str(db)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return db


def sql(db, *args, timeout=120):
    return subprocess.run([*iptraf_mp_command(), "sql", "--db", str(db), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_a_runaway_query_stops_at_the_time_limit(store):
    t0 = time.monotonic()
    p = sql(store, "--timeout", "1", RUNAWAY)
    assert p.returncode == 1
    assert time.monotonic() - t0 < 10
    assert p.stderr.strip() == "iptraf-mp sql: query stopped after 1 s (--timeout)"


def test_ctrl_c_interrupts_a_query(store):
    p = subprocess.Popen([*iptraf_mp_command(), "sql", "--db", str(store), "--timeout", "0",
                          RUNAWAY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    _out, err = p.communicate(timeout=10)
    assert time.monotonic() - t0 < 3
    assert p.returncode == 1 and "interrupted" in err, err


def test_a_greedy_query_stops_at_the_memory_limit(store):
    p = subprocess.run([*iptraf_mp_command(), "sql", "--db", str(store), "--timeout", "0",
                        GREEDY], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert "needed more than 512 MiB" in p.stderr, p.stderr


def test_too_many_rows_are_refused_with_advice(store):
    p = sql(store, "--max-rows", "5",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 6) "
            "SELECT x FROM c")
    assert p.returncode == 1 and "more than 5 rows" in p.stderr and "LIMIT" in p.stderr
    assert sql(store, "--max-rows", "6", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
               "SELECT x+1 FROM c LIMIT 6) SELECT x FROM c").returncode == 0


def test_fts3_tokenizer_is_refused(store):
    p = sql(store, "SELECT fts3_tokenizer('simple')")
    assert p.returncode == 1 and "fts3_tokenizer() is not allowed" in p.stderr, p.stderr


def test_table_valued_pragmas_are_allowed(store):
    p = sql(store, "--format", "csv", "SELECT name FROM pragma_table_info('sessions') "
            "ORDER BY cid LIMIT 2")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["name", "id", "started"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a read-only bind mount (root "
                    "writes through permission bits)")
def test_a_store_on_a_read_only_mount_is_queried(store, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(store, src / "flows.db")
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        p = sql(ro / "flows.db", "--format", "csv", "SELECT count(*) AS n FROM sessions")
    finally:
        subprocess.run(["umount", "-l", str(ro)])
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["n", "1"]
