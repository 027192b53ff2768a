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
import sqlite3
import sys
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path

from .schema import default_db_path, schema_text


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
        if what is None:
            return sqlite3.SQLITE_OK
        if what in ("INSERT", "UPDATE", "DELETE") and (arg1 or "").startswith("sqlite_"):
            # CREATE and DROP first write the schema table, and the first refusal ends it
            what = "CREATE or DROP"
        self.refused = what
        return sqlite3.SQLITE_DENY


def open_readonly(path: Path) -> tuple[sqlite3.Connection, ReadOnly]:
    if not path.is_file():
        raise QueryError(f"no flow store at {path} (a monitor creates it; see --db)")
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as e:
        raise QueryError(f"cannot open {path}: {e}") from None
    auth = ReadOnly()
    conn.set_authorizer(auth)
    return conn, auth


# ---- making cell text safe ---------------------------------------------------------------

def _escape_char(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def safe_text(s: str) -> str:
    """Control, format (bidi overrides) and separator characters as escapes."""
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else _escape_char(c) for c in s)


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
    return p


def run_query(conn: sqlite3.Connection, auth: ReadOnly, sql: str,
              params: dict[str, str]) -> tuple[list[str], list[tuple]]:
    try:
        cur = conn.execute(sql, params)
        rows = cur.fetchall()
    except sqlite3.Error as e:
        if auth.refused is not None:
            raise QueryError(f"refused: the flow store is read-only ({auth.refused} is not "
                             f"allowed); nothing was changed") from None
        msg = str(e)
        if "readonly" in msg or "read-only" in msg:
            raise QueryError(f"refused: the flow store is read-only ({msg}); "
                             f"nothing was changed") from None
        raise QueryError(f"SQL error: {safe_text(msg)}") from None
    except (sqlite3.Warning, ValueError) as e:  # e.g. more than one statement
        raise QueryError(f"SQL error: {safe_text(str(e))}") from None
    headers = [d[0] for d in cur.description] if cur.description else []
    return headers, rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.schema and not args.query:
        print("iptraf-mp sql: give a query, or --schema", file=sys.stderr)
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
            headers, rows = run_query(conn, auth, args.query, dict(args.param))
        finally:
            conn.close()
    except QueryError as e:
        print(f"iptraf-mp sql: {e}", file=sys.stderr)
        return 1
    tty = out.isatty()
    if args.format == "json":
        write_json(headers, rows, out, ascii_=tty)
    elif args.format == "csv":
        write_csv(headers, rows, out, safe=tty)
    else:
        write_table(headers, rows, out)
    out.flush()
    return 0
