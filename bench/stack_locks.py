"""What lock-aware stack costs: the agent's stack answer (median ms) on 50-thread targets, for this
tree and, with --compare DIR, for another checkout (e.g. main) side by side, with the ratio.

Not a test: prints a table. Targets (per Python version):
  parked     tests/targets/threads50.py: 50 threads in a function of their own waiting on an Event
             (no lock waits: what every stack call pays for the lock analysis)
  deadlocks  25 pairs of threads, each pair deadlocked on two instance locks (50 lock waits, 25 cycles)
  +locals    parked, with locals=true (this tree only: the flag is new)

Usage: python bench/stack_locks.py [-n RUNS] [--versions 3.8,3.13] [--compare /path/to/main/checkout]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEADLOCKS = r'''
import threading, time

class Account:
    def __init__(self):
        self.lock = threading.Lock()

def transfer(src, dst, both):
    with src.lock:
        both.wait()
        with dst.lock:
            pass

for i in range(25):
    a, b, both = Account(), Account(), threading.Barrier(2)
    threading.Thread(target=transfer, args=(a, b, both), daemon=True).start()
    threading.Thread(target=transfer, args=(b, a, both), daemon=True).start()
time.sleep(0.5)
print("READY", flush=True)
while True:
    time.sleep(0.1)
'''


def measure(root: Path, versions: list[str], runs: int) -> dict:
    sys.path.insert(0, str(root))
    from flight_mcp.session import Sessions
    from flight_mcp.tools.base import Call
    from flight_mcp.tools.stack import StackParams, run
    from tests.conftest import PYTHONS, TARGETS_DIR
    import flight_mcp
    assert Path(flight_mcp.__file__).resolve().is_relative_to(root.resolve()), flight_mcp.__file__

    has_locals = "locals" in StackParams.model_fields
    with tempfile.TemporaryDirectory() as tmp:
        dead = Path(tmp) / "deadlocks.py"
        dead.write_text(DEADLOCKS)
        cases = {"parked": (TARGETS_DIR / "threads50.py", {}), "deadlocks": (dead, {})}
        if has_locals:
            cases["+locals"] = (TARGETS_DIR / "threads50.py", {"locals": True})
        out = {}
        for v in versions:
            if not PYTHONS.get(v):
                continue
            for name, (script, extra) in cases.items():
                proc = subprocess.Popen([PYTHONS[v], "-u", str(script)], stdout=subprocess.PIPE, text=True)
                sessions = Sessions()
                try:
                    assert proc.stdout.readline().strip() == "READY"
                    call = Call(sessions)
                    p = StackParams(pid=proc.pid, timeout_s=60, **extra)
                    run(p, call)   # attach
                    times = []
                    for _ in range(runs):
                        started = time.perf_counter()
                        r = run(p, call)
                        times.append((time.perf_counter() - started) * 1000)
                        assert r.source == "agent"
                    cycles = len(getattr(r, "deadlocks", []) or [])
                    out[f"{v} {name}"] = (statistics.median(times), cycles)
                finally:
                    sessions.close()
                    proc.kill()
                    proc.wait()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", "--runs", type=int, default=9)
    ap.add_argument("--versions", default="3.8,3.11,3.13")
    ap.add_argument("--compare", help="another checkout (its own flight_mcp, same venv) to measure beside this one")
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    versions = args.versions.split(",")
    if args.root:   # the --compare child: measure that checkout, print JSON
        print(json.dumps(measure(Path(args.root), versions, args.runs)))
        return
    here = Path(__file__).resolve().parent.parent
    other = {}
    if args.compare:
        child = subprocess.run([sys.executable, __file__, "--root", args.compare, "--versions", args.versions,
                                "-n", str(args.runs)], capture_output=True, text=True, cwd=args.compare,
                               env={**os.environ, "PYTHONPATH": args.compare})
        if child.returncode:
            sys.exit(child.stderr)
        other = json.loads(child.stdout.splitlines()[-1])
    mine = measure(here, versions, args.runs)
    print(f"agent stack, median of {args.runs} calls, milliseconds (deadlock cycles found)")
    print(f"{'case':20}{'this tree':>16}" + (f"{'compared':>16}{'ratio':>8}" if other else ""))
    for key, (ms, cycles) in mine.items():
        line = f"{key:20}{ms:>10.1f} ({cycles:>2})"
        if key in other:
            line += f"{other[key][0]:>10.1f} ({other[key][1]:>2}){ms / other[key][0]:>8.2f}"
        print(line)


if __name__ == "__main__":
    main()
