"""How long `vmtool getInstances` takes on a heap of one million objects (medians).

Not a test: prints a table. Per Python version, a target holding N instances of a class (plus
the list that holds them) is searched for that class:
  heap scan      search_ms reported by the agent: gc.get_objects() filtered by type
  tool call      the whole tool.run (request, scan, expression, reply) in this process
  + subclasses   the same with subclasses included (type set instead of one type)
  count-by       --count-by over all N instances (one expression evaluation per instance)
The first call (attach) is left out of the medians. The CLI adds its own start (~0.3 s).

Usage: python bench/vmtool_heap.py [-n RUNS] [--objects 1000000] [--versions 3.8,3.13]
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
from flight_mcp.tools.vmtool import VmtoolParams, run  # noqa: E402
from tests.conftest import PYTHONS, TARGET_VERSIONS  # noqa: E402

TARGET = textwrap.dedent("""
    import sys, time
    class Item(object):
        __slots__ = ("n",)
        def __init__(self, n):
            self.n = n
    class Special(Item):
        __slots__ = ()
    ITEMS = [Item(i) for i in range(int(sys.argv[1]))]
    ITEMS.append(Special(-1))
    print("READY", flush=True)
    while True:
        time.sleep(0.5)
""")


def bench_version(version: str, runs: int, objects: int) -> dict:
    script = Path("/tmp") / f"flight_vmtool_heap_{version}.py"
    script.write_text(TARGET)
    proc = subprocess.Popen([PYTHONS[version], "-u", str(script), str(objects)], stdout=subprocess.PIPE, text=True)
    sessions = Sessions()
    try:
        assert proc.stdout.readline().strip() == "READY"
        call = Call(sessions, allow_mutating=False)

        def once(**kw) -> tuple[float, float, int]:
            p = VmtoolParams(pid=proc.pid, module="__main__", cls="Item", expr="len(instances)", timeout_s=120, **kw)
            started = time.perf_counter()
            r = run(p, call)
            return (time.perf_counter() - started) * 1000, r.search_ms, r.total

        once()  # attach
        plain = [once() for _ in range(runs)]
        subs = [once(subclasses=True) for _ in range(runs)]
        counted = [once(count_by="target.n % 10") for _ in range(max(1, runs // 2))]
        return {"found": plain[0][2], "found_subclasses": subs[0][2],
                "scan_ms": statistics.median(x[1] for x in plain),
                "call_ms": statistics.median(x[0] for x in plain),
                "subclasses_ms": statistics.median(x[0] for x in subs),
                "count_by_ms": statistics.median(x[0] for x in counted)}
    finally:
        sessions.close()
        proc.kill()
        proc.wait()
        script.unlink()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", "--runs", type=int, default=5)
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--versions", default=",".join(TARGET_VERSIONS))
    a = ap.parse_args()
    print(f"vmtool getInstances on {a.objects:,} instances, median of {a.runs} runs (ms)")
    print(f"{'python':8} {'found':>9} {'heap scan':>10} {'tool call':>10} {'+subclasses':>12} {'count-by':>10}")
    for v in a.versions.split(","):
        if not PYTHONS.get(v):
            print(f"{v:8} not installed")
            continue
        r = bench_version(v, a.runs, a.objects)
        print(f"{v:8} {r['found']:>9,} {r['scan_ms']:>10.1f} {r['call_ms']:>10.1f} {r['subclasses_ms']:>12.1f} "
              f"{r['count_by_ms']:>10.1f}")


if __name__ == "__main__":
    main()
