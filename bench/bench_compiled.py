"""The compiled core against its anchors (issue: the compiled core), side by side in one run.

For each capture (echo-connections x12, and the generated 1M-packet bench capture):
- wall clock, best of ROUNDS: tshark -q -z conv,tcp (the anchor), iptraf-mp --shards 0
  compiled, --shards 0 interpreted (IPTRAF_MP_INTERPRETED=1, the twin), --shards 1 and 2;
  peak memory (ru_maxrss) of each;
- instructions per packet (valgrind's callgrind, deterministic): a 100,000-packet prefix
  minus a 1-packet prefix, so start-up is left out, compiled and interpreted.

    python bench/bench_compiled.py [--rounds 3] [--no-callgrind]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ECHO = ROOT.parent / "shared" / "corpus" / "large" / "zeek_echo-connections.pcap"
IPTRAF = [str(Path(sys.executable).parent / "iptraf-mp")]
REC = struct.Struct("<IIII")


def repeat_pcap(src: Path, dst: Path, times: int) -> int:
    """`src` `times` over, each copy shifted past the previous one's end; packets written."""
    data = src.read_bytes()
    if data[:4] != b"\xd4\xc3\xb2\xa1":
        raise SystemExit(f"{src}: expected a little-endian microsecond pcap")
    recs = []
    pos = 24
    while pos + 16 <= len(data):
        sec, usec, caplen, wirelen = REC.unpack_from(data, pos)
        recs.append((sec, usec, data[pos + 16:pos + 16 + caplen], wirelen))
        pos += 16 + caplen
    span = recs[-1][0] - recs[0][0] + 10
    with open(dst, "wb") as out:
        out.write(data[:24])
        for k in range(times):
            for sec, usec, frame, wirelen in recs:
                out.write(REC.pack(sec + k * span, usec, len(frame), wirelen))
                out.write(frame)
    return len(recs) * times


def prefix(src: Path, dst: Path, packets: int) -> None:
    data = src.read_bytes()
    pos = 24
    for _ in range(packets):
        pos += 16 + REC.unpack_from(data, pos)[2]
    dst.write_bytes(data[:pos])


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (KiB) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.execvpe(cmd[0], cmd, env or os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"failed ({status}): {' '.join(cmd)}")
    del before
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def instructions(cmd: list[str], env: dict) -> int:
    with tempfile.NamedTemporaryFile(suffix=".cg") as out:
        r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}",
                            *cmd], env=env, capture_output=True, text=True)
        m = re.search(r"Collected : (\d+)", r.stderr)
        if r.returncode != 0 or not m:
            raise SystemExit(f"callgrind failed: {r.stderr[-500:]}")
        return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-callgrind", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-compiled-"))
    compiled = dict(os.environ)
    compiled.pop("IPTRAF_MP_INTERPRETED", None)
    interp = dict(compiled, IPTRAF_MP_INTERPRETED="1")
    check = subprocess.run([*IPTRAF, "--version"], capture_output=True, text=True, env=compiled)
    print(check.stdout.strip())
    # What an installed package has, and what PYTHONDONTWRITEBYTECODE (set on some machines,
    # this one included) would otherwise deny every run: the bytecode of the project's own
    # modules (pip compiles its dependencies at install time). Without it each run compiles
    # the source again: start-up 769M instead of 397M instructions, 0.12 s instead of 0.08.
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(ROOT / d) for d in
                    ("iptraf_mp", "shards", "store"))], check=True, stdout=subprocess.DEVNULL)
    if "compiled" not in check.stdout or "interpreted" in check.stdout.split("compiled")[0]:
        print("the compiled core is not built: run `make` first")
    caps = {}
    if ECHO.exists():
        caps["echo x12"] = work / "echo12.pcap"
        n = repeat_pcap(ECHO, caps["echo x12"], 12)
        print(f"echo-connections x12: {n:,} packets")
    caps["generated 1M"] = work / "gen1m.pcap"
    subprocess.run([sys.executable, str(HERE / "gen_capture.py"), str(caps["generated 1M"]),
                    "--packets", "1000000", "--connections", "20000"], check=True)
    for name, cap in caps.items():
        packets = int(subprocess.run(["capinfos", "-Mc", str(cap)], capture_output=True,
                                     text=True).stdout.split()[-1])
        runs = {
            "tshark -q -z conv,tcp": (["tshark", "-r", str(cap), "-q", "-z", "conv,tcp"],
                                      compiled),
            "--shards 0 compiled": ([*IPTRAF, "-r", str(cap), "-B", "--shards", "0",
                                     "--json", os.devnull], compiled),
            "--shards 0 interpreted": ([*IPTRAF, "-r", str(cap), "-B", "--shards", "0",
                                        "--json", os.devnull], interp),
            "--shards 1 compiled": ([*IPTRAF, "-r", str(cap), "-B", "--shards", "1",
                                     "--json", os.devnull], compiled),
            "--shards 2 compiled": ([*IPTRAF, "-r", str(cap), "-B", "--shards", "2",
                                     "--json", os.devnull], compiled),
        }
        best: dict[str, tuple[float, float, int]] = {}
        for _ in range(args.rounds):  # interleaved rounds: the machine's drift hits all alike
            for label, (cmd, env) in runs.items():
                w = timed(cmd, env)
                if label not in best or w[0] < best[label][0]:
                    best[label] = w
        anchor = best["tshark -q -z conv,tcp"][0]
        print(f"\n{name}: {packets:,} packets, best of {args.rounds}")
        print("| run | wall s | packets/s | x tshark | CPU us/packet | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, (wall, cpu, rss) in best.items():
            print(f"| {label} | {wall:.2f} | {packets / wall:,.0f} | {anchor / wall:.2f} | "
                  f"{cpu / packets * 1e6:.2f} | {rss / 1024:.0f} |")
        if args.no_callgrind or not shutil.which("valgrind"):
            continue
        p100k, p1 = work / f"{name[:4]}-100k.pcap", work / f"{name[:4]}-1.pcap"
        prefix(cap, p100k, 100_000)
        prefix(cap, p1, 1)
        print(f"\n{name}: instructions per packet, --shards 0 (callgrind, 100,000 packets "
              "minus 1)")
        print("| build | instructions/packet | start-up instructions |")
        print("|---|---:|---:|")
        for label, env in (("compiled", compiled), ("interpreted", interp)):
            base = [*IPTRAF, "-B", "--shards", "0", "--json", os.devnull, "-r"]
            big = instructions([*base, str(p100k)], env)
            one = instructions([*base, str(p1)], env)
            print(f"| {label} | {(big - one) / 99_999:,.0f} | {one:,} |")
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
