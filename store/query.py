"""`iptraf-mp sql`: query the flow store, read-only.

    iptraf-mp sql "SELECT ..." [--db PATH] [--format table|csv|json] [-p NAME VALUE ...]
    iptraf-mp sql --schema

Three locks keep a query from changing the store, each enough on its own: the file is opened
with `mode=ro`, `PRAGMA query_only` is on, and an authorizer refuses every statement that
would write, ATTACH another file (which could be written) or change a setting. It reads a
store a monitor is writing (WAL readers never block the writer, nor it them).

Cells are shown as data, never interpreted: interface names come from capture files and
other text may too, so rich markup stays literal and control characters are escaped before
they can reach the terminal.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import signal
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path

from iptraf_mp.core.text import safe_text, say

from .paths import default_db_path
from .schema import schema_text


class QueryError(Exception):
    """A query cannot run (a one-line reason)."""


# What a read-only store refuses, by authorizer action code, with the word users know.
_REFUSED = {
    sqlite3.SQLITE_INSERT: "INSERT", sqlite3.SQLITE_UPDATE: "UPDATE",
    sqlite3.SQLITE_DELETE: "DELETE", sqlite3.SQLITE_ATTACH: "ATTACH",
    sqlite3.SQLITE_DETACH: "DETACH", sqlite3.SQLITE_ALTER_TABLE: "ALTER TABLE",
    sqlite3.SQLITE_REINDEX: "REINDEX", sqlite3.SQLITE_ANALYZE: "ANALYZE",
    sqlite3.SQLITE_CREATE_INDEX: "CREATE INDEX", sqlite3.SQLITE_CREATE_TABLE: "CREATE TABLE",
    sqlite3.SQLITE_CREATE_TEMP_INDEX: "CREATE INDEX",
    sqlite3.SQLITE_CREATE_TEMP_TABLE: "CREATE TABLE",
    sqlite3.SQLITE_CREATE_TEMP_TRIGGER: "CREATE TRIGGER",
    sqlite3.SQLITE_CREATE_TEMP_VIEW: "CREATE VIEW",
    sqlite3.SQLITE_CREATE_TRIGGER: "CREATE TRIGGER", sqlite3.SQLITE_CREATE_VIEW: "CREATE VIEW",
    sqlite3.SQLITE_CREATE_VTABLE: "CREATE VIRTUAL TABLE", sqlite3.SQLITE_DROP_INDEX: "DROP",
    sqlite3.SQLITE_DROP_TABLE: "DROP", sqlite3.SQLITE_DROP_TEMP_INDEX: "DROP",
    sqlite3.SQLITE_DROP_TEMP_TABLE: "DROP", sqlite3.SQLITE_DROP_TEMP_TRIGGER: "DROP",
    sqlite3.SQLITE_DROP_TEMP_VIEW: "DROP", sqlite3.SQLITE_DROP_TRIGGER: "DROP",
    sqlite3.SQLITE_DROP_VIEW: "DROP", sqlite3.SQLITE_DROP_VTABLE: "DROP",
}
# Pragmas that only read, allowed with an argument (a table name); any other pragma given a
# value could change a setting (query_only, writable_schema, journal_mode...).
_READ_PRAGMAS = {"table_info", "table_xinfo", "table_list", "index_list", "index_info",
                 "index_xinfo", "foreign_key_list", "foreign_key_check", "integrity_check",
                 "quick_check"}


# Functions that reach outside the data: fts3_tokenizer() reads and registers tokenizers
# by raw pointer (it leaks an address and can be made to call one); load_extension() loads
# code.
_REFUSED_FUNCTIONS = {"fts3_tokenizer", "load_extension"}
_SCHEMA_TABLES = {"sqlite_master", "sqlite_schema", "sqlite_temp_master",
                  "sqlite_temp_schema"}
DEFAULT_TIMEOUT = 30.0  # s
DEFAULT_MAX_ROWS = 1_000_000
HEAP_LIMIT = 512 << 20  # bytes SQLite may allocate for one query (a runaway recursive CTE)


class ReadOnly:
    """The authorizer; remembers what it refused, for the error message."""

    def __init__(self) -> None:
        self.refused: str | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, _db: str | None,
                 _trigger: str | None) -> int:
        what = _REFUSED.get(action)
        if what is None and action == sqlite3.SQLITE_PRAGMA and arg2 is not None \
                and (arg1 or "").lower() not in _READ_PRAGMAS:
            what = f"PRAGMA {arg1} = ..."
        if what is None and action == sqlite3.SQLITE_FUNCTION \
                and (arg2 or "").lower() in _REFUSED_FUNCTIONS:
            what = f"the function {arg2}()"
        if what is None:
            return sqlite3.SQLITE_OK
        if what == "UPDATE" and (arg1 or "").lower() in _SCHEMA_TABLES:
            # SQLite asks this while a table-valued pragma (pragma_table_info()) reads the
            # schema; the schema table can never be updated by a statement (SQLite refuses
            # it without writable_schema, a setting refused above)
            return sqlite3.SQLITE_OK
        if what in ("INSERT", "UPDATE", "DELETE") and (arg1 or "").startswith("sqlite_"):
            # CREATE and DROP first write the schema table, and the first refusal ends it
            what = "CREATE or DROP"
        self.refused = what
        return sqlite3.SQLITE_DENY


class Limits:
    """A query's time limit and ^C, checked by SQLite's progress handler (a query runs in
    SQLite's C code, where Python's own signal handling cannot stop it)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = float("inf")
        self.why: str | None = None

    def start(self) -> None:
        self.why = None
        if self.seconds > 0:
            self.deadline = time.monotonic() + self.seconds

    def interrupt(self, _signum=None, _frame=None) -> None:
        self.why = "interrupted"

    def __call__(self) -> int:
        if self.why is None and time.monotonic() > self.deadline:
            self.why = f"stopped after {self.seconds:g} s (--timeout)"
        return 1 if self.why is not None else 0


def _connect(path: Path, immutable: bool) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    if immutable:
        uri += "&immutable=1"
    conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only = ON")
        # temporary tables in memory, under the heap limit (on disk they would grow unbounded)
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute(f"PRAGMA hard_heap_limit = {HEAP_LIMIT}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def open_readonly(path: Path) -> tuple[sqlite3.Connection, ReadOnly]:
    """A read-only connection. A store that SQLite cannot open even so (a read-only copy, a
    folder we cannot write: reading a WAL-mode file needs its -shm file) is opened as
    immutable, which reads the main file alone: what a running monitor has not yet moved
    out of its -wal file is then not seen, and the reader is told."""
    if not path.is_file():
        raise QueryError(f"no flow store at {path} (a monitor creates it; see --db)")
    try:
        conn = _connect(path, immutable=False)
    except sqlite3.Error as first:
        try:
            conn = _connect(path, immutable=True)
        except sqlite3.Error:
            raise QueryError(f"cannot open {path}: {first}") from None
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            say(f"{path} is read-only here: read without its -wal file (the latest "
                f"checkpoints may be missing)", "iptraf-mp sql")
    auth = ReadOnly()
    conn.set_authorizer(auth)
    return conn, auth


# ---- making cell text safe ---------------------------------------------------------------

def cell_text(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        return "x'" + v.hex() + "'"
    return safe_text(str(v))


def _dedupe(headers: Sequence[str]) -> list[str]:
    """Repeated column names as `sqlite-utils query` renames them: id, id_2, id_3."""
    seen: set[str] = set()
    out = []
    for h in headers:
        name, n = h, 1
        while name in seen:
            n += 1
            name = f"{h}_{n}"
        seen.add(name)
        out.append(name)
    return out


def _json_binary(v: object) -> dict:
    if isinstance(v, bytes):
        return {"$base64": True, "encoded": base64.b64encode(v).decode("latin-1")}
    raise TypeError(f"cannot encode {type(v).__name__}")


# ---- output ------------------------------------------------------------------------------

def write_json(headers: Sequence[str], rows: Iterable[Sequence], out, ascii_: bool) -> None:
    """A list of objects, one per line, exactly as `sqlite-utils query` prints it."""
    keys = _dedupe(headers)
    first = True
    prev = None
    for row in rows:
        if prev is not None:
            out.write(("[" if first else " ") + _dumps(keys, prev, ascii_) + ",\n")
            first = False
        prev = row
    if prev is None:
        out.write("[]\n")
    else:
        out.write(("[" if first else " ") + _dumps(keys, prev, ascii_) + "]\n")


def _dumps(keys: list[str], row: Sequence, ascii_: bool) -> str:
    return json.dumps(dict(zip(keys, row, strict=True)), default=_json_binary,
                      ensure_ascii=ascii_)


def write_csv(headers: Sequence[str], rows: Iterable[Sequence], out, safe: bool) -> None:
    w = csv.writer(out, lineterminator="\n")
    conv = cell_text if safe else (lambda v: "" if v is None else
                                   v.hex() if isinstance(v, bytes) else v)
    w.writerow([conv(h) for h in headers])
    for row in rows:
        w.writerow([conv(v) for v in row])


def write_table(headers: Sequence[str], rows: Iterable[Sequence], out) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    rows = list(rows)
    numeric = [all(isinstance(r[i], int | float) for r in rows if r[i] is not None)
               for i in range(len(headers))]
    # Text objects are never parsed for markup: a cell reading "[red]" prints as such.
    table = Table(box=box.SIMPLE_HEAD, header_style="bold",
                  caption=Text(f"{len(rows)} row" + ("" if len(rows) == 1 else "s")),
                  caption_justify="left")
    for h, num in zip(headers, numeric, strict=True):
        table.add_column(Text(safe_text(h)), justify="right" if num else "left",
                         overflow="fold")
    for r in rows:
        table.add_row(*(Text(cell_text(v)) for v in r))
    tty = out.isatty()
    # a pipe gets whole lines rather than cells folded to 80 columns
    console = Console(file=out, width=None if tty else 100000, highlight=False,
                      soft_wrap=False, emoji=False, markup=False)
    console.print(table)


# ---- command -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iptraf-mp sql",
        description="Query the flow history (read-only). Tables: sessions, interfaces, "
                    "tcp_connections, flow_samples, other_flows, other_samples, counters; "
                    "views: tcp_entries, tcp_traffic, other_traffic. See --schema.")
    p.add_argument("query", nargs="?", help="one SQL statement (SELECT, WITH, PRAGMA ...)")
    p.add_argument("--db", metavar="PATH",
                   help=f"the flow store (default: {default_db_path()})")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (default), csv, or json (a list of objects)")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   default=[], help="a :NAME parameter for the query (repeatable)")
    p.add_argument("--schema", action="store_true", help="print the schema and exit")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SEC",
                   help=f"stop a query after SEC seconds (default {DEFAULT_TIMEOUT:g}; "
                        f"0 = no limit); ^C stops it too")
    p.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, metavar="N",
                   help=f"refuse a result of more than N rows (default {DEFAULT_MAX_ROWS:,}; "
                        f"0 = no limit): add a LIMIT")
    return p


def run_query(conn: sqlite3.Connection, auth: ReadOnly, sql: str,
              params: dict[str, str], limits: Limits | None = None,
              max_rows: int = 0) -> tuple[list[str], list[tuple]]:
    limits = limits or Limits(0)
    conn.set_progress_handler(limits, 10_000)
    limits.start()
    try:
        cur = conn.execute(sql, params)
        if max_rows > 0:
            rows = cur.fetchmany(max_rows + 1)
            if len(rows) > max_rows:
                raise QueryError(f"more than {max_rows:,} rows: add a LIMIT, or give "
                                 f"--max-rows")
        else:
            rows = cur.fetchall()
    except sqlite3.Error as e:
        if limits.why is not None:
            raise QueryError(f"query {limits.why}") from None
        if auth.refused is not None and auth.refused.startswith("the function"):
            raise QueryError(f"refused: {auth.refused} is not allowed") from None
        if auth.refused is not None:
            raise QueryError(f"refused: the flow store is read-only ({auth.refused} is not "
                             f"allowed); nothing was changed") from None
        msg = str(e)
        if "readonly" in msg or "read-only" in msg:
            raise QueryError(f"refused: the flow store is read-only ({msg}); "
                             f"nothing was changed") from None
        raise QueryError(f"SQL error: {safe_text(msg)}") from None
    except MemoryError:  # SQLite's heap limit reached (the module raises it for SQLITE_NOMEM)
        raise QueryError(f"query stopped: it needed more than {HEAP_LIMIT >> 20} MiB") \
            from None
    except (sqlite3.Warning, ValueError) as e:  # e.g. more than one statement
        raise QueryError(f"SQL error: {safe_text(str(e))}") from None
    headers = [d[0] for d in cur.description] if cur.description else []
    return headers, rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.schema and not args.query:
        say("give a query, or --schema", "iptraf-mp sql")
        return 2
    path = Path(args.db).expanduser() if args.db else default_db_path()
    out = sys.stdout
    try:
        conn, auth = open_readonly(path)
        try:
            if args.schema:
                text = schema_text(conn)
                out.write("\n".join(safe_text(line) for line in text.splitlines()) + "\n")
                return 0
            limits = Limits(args.timeout)
            old = signal.signal(signal.SIGINT, limits.interrupt)
            try:
                headers, rows = run_query(conn, auth, args.query, dict(args.param), limits,
                                          args.max_rows)
            finally:
                signal.signal(signal.SIGINT, old)
        finally:
            conn.close()
    except QueryError as e:
        say(str(e), "iptraf-mp sql")
        return 1
    if args.format == "json":
        # \uXXXX escapes keep every character's value and let none act on a terminal
        write_json(headers, rows, out, ascii_=True)
    elif args.format == "csv":
        # CSV has no escapes of its own: a pipe may end in a terminal (| less, | cat)
        write_csv(headers, rows, out, safe=True)
    else:
        write_table(headers, rows, out)
    out.flush()
    return 0
