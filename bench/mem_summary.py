"""How long `mem summary` takes on a heap of one million GC-tracked objects, and the longest pause an
application thread sees meanwhile (medians).

Not a test: prints a table. Per Python version, a target holds N objects (half instances of a
__slots__ class, half small lists) and runs a heartbeat thread that sleeps 1 ms in a loop and
records the longest gap between two wake-ups beyond that 1 ms: how long it waited for the GIL.
  mem scan      scan_ms reported by the agent (snapshot, counting, sizes)
  tool call     the whole tool.run (request, scan, reply) in this process
  agent hold    longest_hold_ms reported by the agent (longest stretch without yielding)
  app pause     the heartbeat's longest gap during the call
  idle pause    the heartbeat's longest gap over the same time with no call (the machine's noise)
  naive         the same counting done the naive way inside the target, on a thread of its own:
                gc.get_objects() and one loop of type() and sys.getsizeof (what a one-shot
                Pympler-like summary does), its time and the app pause it causes
The first call (attach) is left out of the medians. Then one `mem diff --interval 1` per version on
the same heap while the target leaks: the time of its scans and owner search, the pauses, the memory
its first snapshot took, and the owner path it names.

Usage: python bench/mem_summary.py [-n RUNS] [--objects 1000000] [--versions 3.8,3.13]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flight_mcp.session import Sessions  # noqa: E402
from flight_mcp.tools.base import Call  # noqa: E402
from flight_mcp.tools.mem import MemParams, run  # noqa: E402
from tests.conftest import PYTHONS, TARGET_VERSIONS  # noqa: E402

TARGET = textwrap.dedent("""
    import gc, sys, threading, time
    class Item(object):
        __slots__ = ("n",)
        def __init__(self, n):
            self.n = n
    half = int(sys.argv[1]) // 2
    ITEMS = [Item(i) for i in range(half)]
    LISTS = [[i] for i in range(half)]
    GAP = [0.0]
    LEAK = []

    def leak():
        while True:
            LEAK.append(Item(-1))
            time.sleep(0.01)

    def heartbeat():
        while True:
            t = time.perf_counter()
            time.sleep(0.001)
            gap = time.perf_counter() - t - 0.001
            if gap > GAP[0]:
                GAP[0] = gap

    def naive():
        t = time.perf_counter()
        counts, sizes = {}, {}
        for o in gc.get_objects():
            k = type(o)
            counts[k] = counts.get(k, 0) + 1
            sizes[k] = sizes.get(k, 0) + sys.getsizeof(o)
        return (time.perf_counter() - t) * 1000

    threading.Thread(target=heartbeat, daemon=True).start()
    threading.Thread(target=leak, daemon=True).start()
    print("READY", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "reset":
            GAP[0] = 0.0
            print("ok", flush=True)
        elif cmd == "gap":
            print("%.3f" % (GAP[0] * 1000), flush=True)
        elif cmd == "naive":
            box = []
            th = threading.Thread(target=lambda: box.append(naive()))
            GAP[0] = 0.0
            th.start()
            th.join()
            print("%.3f %.3f" % (box[0], GAP[0] * 1000), flush=True)
""")


def bench_version(version: str, runs: int, objects: int) -> dict:
    script = Path("/tmp") / f"flight_mem_summary_{version}.py"
    script.write_text(TARGET)
    proc = subprocess.Popen([PYTHONS[version], "-u", str(script), str(objects)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    sessions = Sessions()

    def ask(cmd: str) -> str:
        proc.stdin.write(cmd + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    try:
        assert proc.stdout.readline().strip() == "READY"
        call = Call(sessions, allow_mutating=False)
        p = MemParams(pid=proc.pid, action="summary", limit=5, timeout_s=120)
        r = run(p, call)  # attach
        tracked = r.tracked_objects
        rows = []
        for _ in range(runs):
            ask("reset")
            started = time.perf_counter()
            r = run(p, call)
            wall = (time.perf_counter() - started) * 1000
            app = float(ask("gap"))
            ask("reset")
            time.sleep(wall / 1000)
            idle = float(ask("gap"))
            naive_ms, naive_gap = (float(x) for x in ask("naive").split())
            rows.append((r.scan_ms, wall, r.longest_hold_ms, app, idle, naive_ms, naive_gap))
        med = [statistics.median(x[i] for x in rows) for i in range(7)]
        ask("reset")
        d = run(MemParams(pid=proc.pid, action="diff", interval=1, limit=5, timeout_s=120), call)
        diff_app = float(ask("gap"))
        owner = next((g.owners[0].path for g in d.growers or [] if g.type == "__main__.Item" and g.owners), None)
        return {"tracked": tracked, "scan": med[0], "call": med[1], "hold": med[2], "app": med[3], "idle": med[4],
                "naive": med[5], "naive_app": med[6], "diff_scan": d.scan_ms, "diff_owners": d.owners_ms,
                "diff_hold": d.longest_hold_ms, "diff_app": diff_app, "owner": owner,
                "snapshot_mb": (d.snapshot_bytes or 0) / 2 ** 20}
    finally:
        sessions.close()
        proc.kill()
        proc.wait()
        script.unlink()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", "--runs", type=int, default=3)
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--versions", default=",".join(TARGET_VERSIONS))
    a = ap.parse_args()
    print(f"mem summary on a heap of {a.objects:,} objects, median of {a.runs} runs (ms)")
    print(f"{'python':8} {'tracked':>9} {'mem scan':>9} {'tool call':>10} {'agent hold':>11} {'app pause':>10} "
          f"{'idle pause':>11} {'naive':>7} {'naive pause':>12} {'pause ratio':>12}")
    diffs = []
    for v in a.versions.split(","):
        if not PYTHONS.get(v):
            print(f"{v:8} not installed")
            continue
        r = bench_version(v, a.runs, a.objects)
        ratio = r["naive_app"] / r["app"] if r["app"] else float("inf")
        print(f"{v:8} {r['tracked']:>9,} {r['scan']:>9.1f} {r['call']:>10.1f} {r['hold']:>11.1f} {r['app']:>10.1f} "
              f"{r['idle']:>11.1f} {r['naive']:>7.1f} {r['naive_app']:>12.1f} {ratio:>11.1f}x")
        diffs.append((v, r))
    print("\nmem diff --interval 1 on the same heap (one run; the target leaks one Item per 10 ms into LEAK)")
    print(f"{'python':8} {'scans ms':>9} {'owners ms':>10} {'agent hold':>11} {'app pause':>10} {'snapshot MB':>12}  owner found")
    for v, r in diffs:
        print(f"{v:8} {r['diff_scan']:>9.1f} {r['diff_owners']:>10.1f} {r['diff_hold']:>11.1f} {r['diff_app']:>10.1f} "
              f"{r['snapshot_mb']:>12.1f}  {r['owner']}")


if __name__ == "__main__":
    main()
