"""Where the flow store lives by default (apart from the schema: the flags' help names it,
and a run without the store need not load SQLite)."""

from __future__ import annotations

import os
from pathlib import Path


def default_db_path() -> Path:
    """`$XDG_DATA_HOME/iptraf-mp/flows.db`, else `~/.local/share/iptraf-mp/flows.db`."""
    base = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "iptraf-mp" / "flows.db"
