"""Shared test helpers: where the corpus is, and running the real CLI in-process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("IPTRAF_MP_SHARED", ROOT.parent / "shared"))
CORPUS = SHARED / "corpus"
FIXTURES = ROOT / "fixtures"


@pytest.fixture(autouse=True, scope="session")
def _private_user_dirs(tmp_path_factory):
    """Tests never touch the user's data or config (the flow store's default database, the
    console's config file): both point into a temporary directory for the whole session."""
    base = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ("XDG_DATA_HOME", "XDG_CONFIG_HOME")}
    os.environ["XDG_DATA_HOME"] = str(base / "data")
    os.environ["XDG_CONFIG_HOME"] = str(base / "config")
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def corpus_files(folder: str) -> list[Path]:
    d = CORPUS / folder
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if not p.name.endswith(".json") and p.is_file())


def need_corpus(folder: str) -> None:
    if not (CORPUS / folder).is_dir():
        pytest.skip(f"corpus folder {CORPUS / folder} is absent (../shared not beside the repo)")


def reference(path: Path) -> dict:
    return json.loads(Path(str(path) + ".tshark.json").read_text())


def run_cli_json(tmp_path: Path, *argv: str) -> tuple[int, list[dict]]:
    """Run `iptraf-mp ARGV --json FILE` in-process; return (exit code, records)."""
    from iptraf_mp.app.cli import main

    out = tmp_path / "out.jsonl"
    rc = main([*argv, "--json", str(out)])
    recs = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return rc, recs
