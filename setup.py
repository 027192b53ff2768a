"""Builds the compiled core: the modules of iptraf_mp/core, compiled by Cython from their own
Python source (pure-Python mode). Without Cython or a C compiler the package installs
interpreted and says so in one line; `iptraf-mp --version` tells which one runs."""

import hashlib
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
CORE = HERE / "iptraf_mp" / "core"
# The hot path, compiled. Not compiled: decode_dpkt (the dpkt twin, off the hot path) and
# the modules that run once a refresh (merge, lines, text, rate): interpreted they cost
# nothing measurable, and keeping them so keeps them easy to debug.
COMPILED = ["model", "frame", "fastindex", "batch_format", "decode", "engine", "tcptable",
            "othertable", "fastpath", "split", "publication", "jsonline", "rank", "snapshot",
            "merge"]
DIGESTS = CORE / "_digests.py"  # what each compiled module was built from (core/__init__.py)


def digests() -> str:
    lines = ['"""Written by setup.py: the sha256 of each compiled module\'s source."""', "",
             "BUILT = {"]
    for name in COMPILED:
        for suffix in (".py", ".pxd"):
            src = CORE / f"{name}{suffix}"
            if src.exists():
                digest = hashlib.sha256(src.read_bytes()).hexdigest()
                lines.append(f'    "{name}{suffix}": "{digest}",')
    lines.append("}")
    return "\n".join(lines) + "\n"


class OptionalBuildExt(build_ext):
    """A failed compile leaves the interpreted package, with one line saying so."""

    _failed = False
    built_from = ""  # the digests of the source cythonize read (extensions())

    def run(self) -> None:
        try:
            super().run()
        except Exception as err:  # noqa: BLE001 - any failure means: interpreted
            self._interpreted(err)
            return
        if self.extensions and not self._failed:
            # only now: until every module is built from it, no source is vouched for
            DIGESTS.write_text(self.built_from)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as err:  # noqa: BLE001
            self._interpreted(err)

    def _interpreted(self, err: Exception) -> None:
        self._failed = True
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"iptraf-mp: the core could not be compiled ({reason}): installed interpreted",
              file=sys.stderr)
        forget_build()


def forget_build() -> None:
    """Interpreted: no compiled module of an earlier build may stay to shadow the source."""
    DIGESTS.unlink(missing_ok=True)
    for path in CORE.iterdir():
        if path.suffix == ".so" or path.suffix == ".pyd":
            path.unlink()


def extensions() -> tuple[list, str]:
    """The compiled modules, and the digests of the source they are compiled from."""
    if os.environ.get("IPTRAF_MP_INTERPRETED"):
        print("iptraf-mp: IPTRAF_MP_INTERPRETED is set: installed interpreted", file=sys.stderr)
        forget_build()
        return [], ""
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("iptraf-mp: Cython is not installed: installed interpreted", file=sys.stderr)
        forget_build()
        return [], ""
    # The digests of the source as it is now, written once the build has succeeded
    # (OptionalBuildExt.run); meanwhile none, so an earlier build's modules are refused
    # (core/__init__.py) if this one fails half-way (a Cython error in one module).
    built_from = digests()
    DIGESTS.unlink(missing_ok=True)
    mods = [Extension(f"iptraf_mp.core.{name}", [f"iptraf_mp/core/{name}.py"])
            for name in COMPILED]
    return cythonize(mods, language_level=3, quiet=True,
                     compiler_directives={"boundscheck": False, "wraparound": False,
                                          "initializedcheck": False, "cdivision": True,
                                          "embedsignature": False}), built_from


MODULES, OptionalBuildExt.built_from = extensions()
setup(ext_modules=MODULES, cmdclass={"build_ext": OptionalBuildExt})
