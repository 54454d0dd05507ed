"""How long `stack` takes on a target with 200 threads, with and without --native (medians).

Not a test: prints a table. Per Python version, against tests/targets/many_threads.py:
  attach+stack   first call: injection, agent start and the agent's stack
  agent stack    later calls answered by the in-process agent (the default source)
  --native       read from outside with pystack (ptrace stop, Python + native frames, merge)
  external       the same outside reading without native frames (what the fallback shows)
Times are for the tool call in this process (tool.run); the CLI adds its own start (~0.3 s).

Usage: python bench/stack_threads.py [-n RUNS] [--threads 200] [--versions 3.8,3.13]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flight_mcp.attach import external_stack  # noqa: E402
from flight_mcp.session import Sessions  # noqa: E402
from flight_mcp.tools.base import Call  # noqa: E402
from flight_mcp.tools.stack import StackParams, run  # noqa: E402
from tests.conftest import PYTHONS, TARGET_VERSIONS, TARGETS_DIR  # noqa: E402


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def bench_version(version: str, runs: int, threads: int) -> dict:
    proc = subprocess.Popen([PYTHONS[version], "-u", str(TARGETS_DIR / "many_threads.py"), str(threads)],
                            stdout=subprocess.PIPE, text=True)
    sessions = Sessions()
    try:
        assert proc.stdout.readline().strip() == "READY"
        call = Call(sessions)
        shown = {}

        def agent():
            r = run(StackParams(pid=proc.pid, timeout_s=60), call)
            assert r.source == "agent", r.notes
            shown["agent"] = len(r.threads)

        def native():
            r = run(StackParams(pid=proc.pid, native=True, timeout_s=60), call)
            shown["native"] = len(r.threads)

        def external():
            shown["external"] = len(external_stack.read(proc.pid, native=False, timeout=60)["threads"])

        first = timed(agent)
        out = {"attach+stack": first}
        for name, fn in (("agent stack", agent), ("--native", native), ("external", external)):
            out[name] = statistics.median(timed(fn) for _ in range(runs))
        out["threads seen"] = shown
        return out
    finally:
        sessions.close()
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", "--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=200)
    ap.add_argument("--versions", default=",".join(TARGET_VERSIONS))
    args = ap.parse_args()
    cols = ("attach+stack", "agent stack", "--native", "external")
    print(f"stack on a target with {args.threads} threads: median of {args.runs} runs, milliseconds")
    print(f"{'python':8}" + "".join(f"{c:>15}" for c in cols) + "   threads shown (agent/native/external)")
    for v in args.versions.split(","):
        if not PYTHONS.get(v):
            print(f"{v:8} not installed")
            continue
        r = bench_version(v, args.runs, args.threads)
        seen = r["threads seen"]
        print(f"{v:8}" + "".join(f"{r[c]:>15.0f}" for c in cols) +
              f"   {seen['agent']}/{seen['native']}/{seen['external']}")


if __name__ == "__main__":
    main()
