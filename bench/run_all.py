"""`make bench`: run every bench/bench_*.py, one after the other, each in its own process
(so none inherits another's memory or imports), and print what each printed.

    python bench/run_all.py [NAME ...]     e.g. `run_all.py pipeline live` for just those two

A benchmark that fails is reported and the others still run; the exit status says whether
all of them succeeded.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# scripts that run more than once, with these arguments (the others run once, without)
RUNS = {"bench_live.py": [[], ["--capture-procs"]]}


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in argv]
    failed = []
    for script in scripts:
        for args in RUNS.get(script.name, [[]]):
            name = " ".join([script.name, *args])
            print(f"\n==== {name} ====", flush=True)
            started = time.monotonic()
            # stdout and stderr go straight through: long benchmarks show progress as they go
            rc = subprocess.run([sys.executable, str(script), *args], cwd=HERE.parent).returncode
            print(f"==== {name}: exit {rc}, {time.monotonic() - started:.0f} s ====",
                  flush=True)
            if rc != 0:
                failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
