"""iptraf-mp core: the pure engine: no I/O, no wall clock, no processes.

Its hot modules are compiled by Cython from this same source (setup.py). Two things are
checked here, once, before any of them is imported:
- with IPTRAF_MP_INTERPRETED set, the compiled modules are passed over and the source runs:
  the reference twin the differential tests compare the compiled core with;
- a compiled module whose source has changed since it was built is refused in one line
  (run `make`), so an edited .py is never shadowed by an old .so.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import os
import sys
from pathlib import Path

from iptraf_mp import StaleBuild

_HERE = Path(__file__).parent


def _run_the_source() -> None:
    """Put a finder before the standard ones that finds this package's modules as source,
    whatever is compiled beside them (imported only then: importlib.abc costs ~20 ms)."""
    import importlib.abc
    import importlib.util

    class SourceFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname: str, path: object = None,
                      target: object = None) -> importlib.machinery.ModuleSpec | None:
            prefix, _, name = fullname.rpartition(".")
            if prefix != __name__:
                return None
            src = _HERE / f"{name}.py"
            if not src.exists():
                return None
            return importlib.util.spec_from_file_location(fullname, src)

    sys.meta_path.insert(0, SourceFinder())


def compiled_modules(here: Path = _HERE) -> list[str]:
    """The core modules with a compiled build beside their source."""
    found = set()
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        found |= {so.name[: -len(suffix)] for so in here.glob(f"*{suffix}")}
    return sorted(name for name in found if "." not in name)


def _built() -> dict[str, str]:
    try:
        from ._digests import BUILT
    except ImportError:
        return {}
    return dict(BUILT)


def check_fresh(here: Path = _HERE, built: dict[str, str] | None = None) -> None:
    """Raise StaleBuild if a compiled module in `here` was built from other source than
    what lies beside it (`built`: file name -> sha256 of what it was built from)."""
    if built is None:
        built = _built()
    for name in compiled_modules(here):
        for file in (f"{name}.py", f"{name}.pxd"):
            src = here / file
            if not src.exists() and file not in built:
                continue
            now = hashlib.sha256(src.read_bytes()).hexdigest() if src.exists() else None
            if now != built.get(file):
                raise StaleBuild(
                    f"iptraf-mp: iptraf_mp/core/{file} is not what its compiled module was "
                    "built from: run `make` (or `pip install -e .`) to rebuild, or set "
                    "IPTRAF_MP_INTERPRETED=1 to run the source")


INTERPRETED = bool(os.environ.get("IPTRAF_MP_INTERPRETED"))
if INTERPRETED:
    _run_the_source()
else:
    check_fresh()
