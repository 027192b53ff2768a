"""The compiled core against its interpreted twin, and the build that makes it.

The same source runs both ways (Cython's pure-Python mode): every corpus capture, fixture
and generated stream must give byte-identical JSON compiled and interpreted
(IPTRAF_MP_INTERPRETED=1), in one process and across shards. A compiled module built from
other source than the one beside it is refused in one line.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

import iptraf_mp.core as core
from iptraf_mp import StaleBuild

from .conftest import corpus_files
from .helpers.streams import seed_frames, stream

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = [*corpus_files("real"), *corpus_files("large"), *corpus_files("malformed"),
            *sorted((ROOT / "fixtures").glob("*.pcap*"))]
CLI = [sys.executable, "-m", "iptraf_mp"]


def _env(interpreted: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("IPTRAF_MP_INTERPRETED", None)
    if interpreted:
        env["IPTRAF_MP_INTERPRETED"] = "1"
    return env


def _need_compiled() -> None:
    if core.INTERPRETED or not core.compiled_modules():
        if os.environ.get("CI"):
            pytest.fail("CI runs the suite on the compiled build, and the core is not compiled")
        pytest.skip("the core is not compiled here (run `make`); nothing to compare")


def _json(cap: Path, out: Path, interpreted: bool, shards: int) -> bytes:
    r = subprocess.run([*CLI, "-r", str(cap), "-B", "--shards", str(shards), "--json", str(out)],
                       env=_env(interpreted), capture_output=True, text=True, timeout=600)
    assert "Traceback" not in r.stderr, r.stderr
    return out.read_bytes() + f"\nexit {r.returncode}\n{r.stderr}".encode()


def _compare(cap: Path, tmp_path: Path, shards: tuple[int, ...] = (0,)) -> None:
    """Compiled against interpreted, one process (and `shards`); that the shard count
    changes nothing is test_determinism's, on the compiled build."""
    twin = _json(cap, tmp_path / "interpreted.json", True, 0)
    for n in shards:
        assert _json(cap, tmp_path / f"compiled{n}.json", False, n) == twin, n


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_compiled_output_is_the_interpreted_twins(cap: Path, tmp_path: Path) -> None:
    _need_compiled()
    _compare(cap, tmp_path)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_output_is_the_interpreted_twins_on_generated_streams(
        seed: int, tmp_path: Path) -> None:
    _need_compiled()
    seeds = seed_frames([ROOT / "fixtures", *{p.parent for p in corpus_files("malformed")}])
    cap = stream(seed, 3000, seeds, tmp_path / "stream.pcapng")
    _compare(cap, tmp_path, (0, 2))


def test_compiled_output_is_the_interpreted_twins_on_bulk_traffic(tmp_path: Path) -> None:
    """Where the fast path takes almost every packet: the generated bench capture."""
    _need_compiled()
    cap = tmp_path / "gen.pcap"
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_capture.py"), str(cap),
                    "--packets", "40000", "--connections", "2000"], check=True,
                   stdout=subprocess.DEVNULL)
    _compare(cap, tmp_path, (0, 2))


def test_version_says_compiled_or_interpreted() -> None:
    out = {}
    for interpreted in (False, True):
        r = subprocess.run([*CLI, "--version"], env=_env(interpreted), capture_output=True,
                           text=True, check=True)
        out[interpreted] = r.stdout.strip()
    assert out[True] == "iptraf-mp 0.1.0, interpreted core (IPTRAF_MP_INTERPRETED is set)"
    if core.compiled_modules():
        assert out[False] == (f"iptraf-mp 0.1.0, compiled core "
                              f"({len(core.compiled_modules())} modules)")
    else:
        assert out[False] == "iptraf-mp 0.1.0, interpreted core (not compiled: run `make`)"


def test_interpreted_runs_the_source() -> None:
    """IPTRAF_MP_INTERPRETED really passes the compiled modules over."""
    code = ("import iptraf_mp.core.fastpath as f, iptraf_mp.core.tcptable as t;"
            "print(f.__file__, t.__file__)")
    r = subprocess.run([sys.executable, "-c", code], env=_env(True), capture_output=True,
                       text=True, check=True)
    assert [Path(p).suffix for p in r.stdout.split()] == [".py", ".py"]


def _fake_build(here: Path, source: bytes) -> dict[str, str]:
    (here / "mod.py").write_bytes(source)
    (here / f"mod{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    return {"mod.py": hashlib.sha256(source).hexdigest()}


def test_a_compiled_module_of_other_source_is_refused(tmp_path: Path) -> None:
    built = _fake_build(tmp_path, b"x = 1\n")
    core.check_fresh(tmp_path, built)  # as built: fine
    (tmp_path / "mod.py").write_bytes(b"x = 2\n")  # the source edited after the build
    with pytest.raises(StaleBuild, match=r"iptraf_mp/core/mod\.py is not what its compiled "):
        core.check_fresh(tmp_path, built)
    with pytest.raises(StaleBuild):  # a compiled module no build recorded (an old build's)
        core.check_fresh(tmp_path, {})
    (tmp_path / "mod.pxd").write_text("cdef int x\n")  # a declaration file added since
    with pytest.raises(StaleBuild, match=r"mod\.pxd"):
        core.check_fresh(tmp_path, _fake_build(tmp_path, b"x = 1\n"))


def test_a_stale_build_stops_the_command_in_one_line(tmp_path: Path) -> None:
    """What an operator sees: one line and exit status 2, no traceback, when a compiled
    module is older than its source (here: a copy of the package with one source edited)."""
    _need_compiled()
    import shutil

    pkg = tmp_path / "iptraf_mp"
    shutil.copytree(ROOT / "iptraf_mp", pkg)
    src = pkg / "core" / "engine.py"
    src.write_text(src.read_text() + "\n# edited\n")
    env = _env(False)
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT}"
    r = subprocess.run([sys.executable, "-m", "iptraf_mp", "--version"], env=env, cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "iptraf_mp/core/engine.py is not what its compiled module was built from" in r.stderr


def test_a_build_that_fails_half_way_vouches_for_nothing(tmp_path: Path) -> None:
    """A Cython error in one module after a good build: the build fails, and the modules of
    the earlier build, which no longer match every source, are refused (the digests are
    written only when every module has been built)."""
    _need_compiled()
    import shutil

    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy2(ROOT / "setup.py", tree)
    shutil.copy2(ROOT / "pyproject.toml", tree)
    # copy2 keeps the times: cythonize recompiles only what is newer than its .c
    shutil.copytree(ROOT / "iptraf_mp", tree / "iptraf_mp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    core_dir = tree / "iptraf_mp" / "core"
    assert (core_dir / "_digests.py").exists()
    src = core_dir / "jsonline.py"
    # valid Python, but no name Cython can resolve: a compile error in this module alone
    src.write_text(src.read_text() + "\n\ndef _broken() -> None:\n    _no_such_name()\n")
    env = _env(False)
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert "_no_such_name" in r.stderr
    assert not (core_dir / "_digests.py").exists()
    env["PYTHONPATH"] = str(tree)
    r = subprocess.run([sys.executable, "-m", "iptraf_mp", "--version"], env=env, cwd=tree,
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "is not what its compiled module was built from" in r.stderr
