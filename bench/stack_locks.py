"""What lock-aware stack costs the target: the agent's stack command (median ms per call), this
tree's agent beside another checkout's (e.g. main, --compare DIR), both loaded into ONE process of
each Python version and called alternately, so that a loaded machine slows both alike.

Not a test: prints a table. Workloads (50 threads each, plus the main thread):
  parked     50 threads in a function of their own waiting on an Event: no lock waits, what every
             stack call pays for the lock analysis (a call per thread decoded, found not to be a lock)
  deadlocks  25 pairs of threads, each pair deadlocked on two instance locks (50 waits, 25 cycles)
  +locals    parked, with locals=true (this tree only: the flag is new)
The transport and the host add the same to both (bench/stack_threads.py measures a whole call).

Usage: python bench/stack_locks.py [-n RUNS] [--versions 3.8,3.11,3.13] [--compare /path/to/main]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import PYTHONS, TARGET_VERSIONS  # noqa: E402

DRIVER = r'''
import importlib.util, json, statistics, sys, threading, time

def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path + "/__init__.py", submodule_search_locations=[path])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module(name + ".cmd_stack")

agents = {"this": load("agent_this", sys.argv[1])}
if sys.argv[2]:
    agents["compared"] = load("agent_compared", sys.argv[2])
runs = int(sys.argv[3])

stop = threading.Event()
def parked(i):
    stop.wait()

class Account:
    def __init__(self):
        self.lock = threading.Lock()

def transfer(src, dst, both):
    with src.lock:
        both.wait()
        with dst.lock:
            pass

def timed(fn):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000

def bench(case, extra=None):
    times = {k: [] for k in agents}
    for _ in range(runs):
        for name, cmd in agents.items():
            if extra and name != "this":
                continue
            args = {"async_tasks": False, "locals": bool(extra)}
            times[name].append(timed(lambda: cmd.stack(args, None)))
    cycles = len(agents["this"].stack({"async_tasks": False, "locals": False}, None).get("deadlocks") or [])
    return {k: (statistics.median(v), cycles) for k, v in times.items() if v}

out = {}
ts = [threading.Thread(target=parked, args=(i,), daemon=True) for i in range(50)]
for t in ts:
    t.start()
time.sleep(0.3)
out["parked"] = bench("parked")
out["+locals"] = bench("+locals", extra=True)
stop.set()
for t in ts:
    t.join()
for i in range(25):
    a, b, both = Account(), Account(), threading.Barrier(2)
    threading.Thread(target=transfer, args=(a, b, both), daemon=True).start()
    threading.Thread(target=transfer, args=(b, a, both), daemon=True).start()
time.sleep(0.5)
out["deadlocks"] = bench("deadlocks")
print(json.dumps(out))
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", "--runs", type=int, default=30)
    ap.add_argument("--versions", default=",".join(TARGET_VERSIONS))
    ap.add_argument("--compare", default="", help="another checkout whose agent is measured beside this one")
    args = ap.parse_args()
    other = str(Path(args.compare).resolve() / "flight_mcp" / "agent") if args.compare else ""
    print(f"agent stack command, median of {args.runs} calls in the target, milliseconds (deadlock cycles)")
    print(f"{'python':8}{'case':11}{'this tree':>14}" + (f"{'compared':>10}{'ratio':>8}" if other else ""))
    for v in args.versions.split(","):
        if not PYTHONS.get(v):
            print(f"{v:8}not installed")
            continue
        r = subprocess.run([PYTHONS[v], "-c", DRIVER, str(ROOT / "flight_mcp" / "agent"), other, str(args.runs)],
                           capture_output=True, text=True, timeout=600)
        if r.returncode:
            print(f"{v:8}failed: {r.stderr.strip().splitlines()[-1:]}")
            continue
        for case, got in json.loads(r.stdout).items():
            ms, cycles = got["this"]
            line = f"{v:8}{case:11}{ms:>9.2f} ({cycles:>2})"
            if "compared" in got:
                line += f"{got['compared'][0]:>10.2f}{ms / got['compared'][0]:>8.2f}"
            print(line)


if __name__ == "__main__":
    main()
