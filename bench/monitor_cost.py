"""monitor's cost per call of the monitored function, side by side with an unmonitored run and a watch.

Not a test: prints a table. The target is bench/overhead.py's: a process looping calls_100k() (here
10,000 calls of small(x)) and printing each iteration's main-thread CPU time (time.thread_time(): robust
against the other processes of a shared machine). For every Python version, on one fresh target,
windows in order:
  base        unmonitored
  watch       `watch __main__ small -f 'args[0] < 0'` (a filter that never matches: how the project
              measures a watch, see bench/overhead.py)
  monitor     `monitor __main__ small -c S -n 1`                    (counts, costs, histogram)
  monitor-by  `monitor __main__ small -c S -n 1 --by 'args[0] % 10'` (and reads the arguments, 10 keys)
  monitor-f   `monitor __main__ small -c S -n 1 -f 'args[0] >= 0'`  (a filter that always matches)
  after       unmonitored again (goal 1.00x: nothing is left behind)
Per-call cost = (median iteration CPU time in the window - base median) / 10,000, in microseconds.
Windows are the agent's own record of when the instrumentation was in place (Result.started,
duration_s), counting only iterations wholly inside.

Usage: python bench/monitor_cost.py [--versions 3.8,3.12] [--seconds 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import overhead  # noqa: E402  (bench/overhead.py: its target and its untraced window)
from flight_mcp.errors import FlightError  # noqa: E402
from tests.conftest import find_python  # noqa: E402

# overhead.py's target with iterations of 10,000 calls instead of 100,000: monitored iterations then
# take tens of milliseconds, so every window holds many whole ones even on a loaded machine
CALLS = 10_000
TARGET_SRC = overhead.TARGET_SRC.replace("range(100000)", "range(%d)" % CALLS)
assert TARGET_SRC != overhead.TARGET_SRC
WINDOWS = [
    ("base", None),
    ("watch", "watch __main__ small -f 'args[0] < 0' -n 10000 --timeout {s}"),
    ("monitor", "monitor __main__ small -c {s} -n 1"),
    ("monitor-by", "monitor __main__ small -c {s} -n 1 --by 'args[0] % 10'"),
    ("monitor-f", "monitor __main__ small -c {s} -n 1 -f 'args[0] >= 0'"),
    ("after", None),
]


def measure(ours: overhead.Ours, version: str, script: Path, seconds: float, log) -> dict:
    python = find_python(version)
    if python is None:
        return {"na": "not installed under pyenv"}
    t = overhead.Target(python, script, "A")
    res: dict = {}
    try:
        ours.warm(t)
        time.sleep(1.0)   # the agent's own start-up out of `base`
        for name, cmd in WINDOWS:
            if cmd is None:
                got, note = overhead.untraced(t, seconds, 3), ""
            else:
                r = ours._run(t.pid, cmd.format(s=seconds))
                got = t.between(r.started, r.started + r.duration_s)
                note = f"{r.seen} calls seen, {r.mechanism}"
            res[name] = statistics.median([c for _, c in got]) if got else None
            res["n_" + name] = len(got)
            log(f"  py{version} {name:10} n={len(got):3} cpu={'-' if res[name] is None else f'{res[name] * 1000:.2f}'}"
                f" ms/iteration {note}")
    except (FlightError, RuntimeError) as e:
        res["na"] = str(getattr(e, "message", e))[:200]
        log(f"  py{version}: n/a: {res['na']}")
    finally:
        ours.forget(t)
        t.kill()
    return res


def per_call(res: dict, name: str) -> str:
    base, x = res.get("base"), res.get(name)
    if base is None or x is None:
        return "-"
    return f"{(x - base) / CALLS * 1e6:.3f}"


def table(results: dict, versions: list[str]) -> str:
    cols = ["watch", "monitor", "monitor-by", "monitor-f"]
    lines = ["Per-call cost in microseconds (median iteration CPU time under the instrumentation minus unmonitored, "
             f"/ {CALLS:,} calls); ratio = monitor / watch", "",
             f"{'python':7} {'base us/call':>12} " + " ".join(f"{c:>11}" for c in cols)
             + f" {'monitor/watch':>13} {'after/base':>10}"]
    for v in versions:
        r = results[v]
        if r.get("base") is None:
            lines.append(f"py{v:5} n/a: {r.get('na')}")
            continue
        w, m = per_call(r, "watch"), per_call(r, "monitor")
        ratio = f"{float(m) / float(w):.2f}x" if "-" not in (w, m) and float(w) > 0 else "-"
        after = f"{r['after'] / r['base']:.2f}x" if r.get("after") else "-"
        lines.append(f"py{v:5} {r['base'] / CALLS * 1e6:>12.3f} " + " ".join(f"{per_call(r, c):>11}" for c in cols)
                     + f" {ratio:>13} {after:>10}" + (f"  ({r['na']})" if "na" in r else ""))
    lines += ["", "watch: never-matching filter (enter only); monitor: enter + leave, counting into the cycle's "
              "histogram; -by: also reads the arguments and evaluates args[0] % 10; -f: a filter that always matches."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--versions", default=",".join(overhead.VERSIONS), help="comma-separated, e.g. 3.8,3.12")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each measurement window")
    a = ap.parse_args()
    versions = [v for v in a.versions.split(",") if v]
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    ours = overhead.Ours()
    results = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="monitor-cost-") as d:
        script = Path(d) / "workload.py"
        script.write_text(TARGET_SRC)
        try:
            for v in versions:
                results[v] = measure(ours, v, script, a.seconds, log)
        finally:
            ours.close()
    print(f"flight-mcp monitor cost bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"windows of {a.seconds}s, run took {time.monotonic() - started:.0f}s")
    print(table(results, versions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
