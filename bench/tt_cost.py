"""tt's cost on the target: per recorded call, side by side with unrecorded calls (and with a watch of
the same calls), and the memory a record holds.

Not a test: prints a table. The target (one per Python version) loops: sleep 30 ms, then 1,000 calls
of small(x) (`return x + 1`) timed with the main thread's CPU clock (time.thread_time(), far less
disturbed by this shared machine than wall time), printing "T <start wall> <wall s> <cpu s>".
- base: the median batch while nothing is instrumented.
- tt: `tt -t __main__ small -n 1000` starts during a pause, so the next batch's 1,000 calls are the
  1,000 recorded (checked: its first and last record fall inside one batch); per-call cost =
  (that batch's CPU time - base) / 1000. Repeated REPS times (table emptied between).
- watch: the same with `watch __main__ small -n 1000` (its default expr, args and kwargs, viewed on
  the calling thread).
Memory per record: (1) what the table's own objects take (sys.getsizeof of each record dict, the
arguments tuple and keyword dict it keeps alive, its two floats), read in the target through
getglobal on the agent's module; (2) the target's RSS growth over 1,000 records / 1000 (includes
allocator slack; the arguments here are small ints, so nothing big is kept alive).

Usage: python bench/tt_cost.py [--versions 3.8,3.12] [--reps 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flight_mcp import cmdline  # noqa: E402
from flight_mcp.attach.bootstrap import AGENT_MODULE, agent_build  # noqa: E402
from flight_mcp.session import Sessions  # noqa: E402
from flight_mcp.tools import all_tools  # noqa: E402
from flight_mcp.tools.base import Call  # noqa: E402
from tests.conftest import find_python  # noqa: E402

VERSIONS = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"]
CALLS = 1000

TARGET = '''
import time

def small(x):
    return x + 1

print("READY", flush=True)
while True:
    time.sleep(0.03)
    w0, c0 = time.time(), time.thread_time()
    for i in range(1000):
        small(i)
    print("T %.6f %.6f %.6f" % (w0, time.time() - w0, time.thread_time() - c0), flush=True)
'''


class Target:
    def __init__(self, python: str, script: Path):
        self.proc = subprocess.Popen([python, "-u", str(script)], stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.samples: list[tuple[float, float, float]] = []
        assert self.proc.stdout.readline().strip() == "READY"
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 4 and parts[0] == "T":
                self.samples.append((float(parts[1]), float(parts[2]), float(parts[3])))

    def batch_at(self, t: float):
        """The batch (start, wall, cpu) whose wall window holds epoch t, waiting for it to be printed."""
        for _ in range(100):
            for s, d, c in list(self.samples):
                if s - 0.0005 <= t <= s + d + 0.0005:
                    return s, d, c
            time.sleep(0.02)
        return None

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


class Ours:
    def __init__(self):
        self.sessions = Sessions()
        self.tools = all_tools()
        self.call = Call(self.sessions, allow_mutating=True, on_cli=True)

    def run(self, pid: int, cmd: str):
        tool, params = cmdline.parse(cmdline.split(cmd), self.tools, pid)
        return tool.run(params, self.call)


def per_call_us(t: Target, times: list[float], base_cpu: float) -> float | None:
    """(cpu of the batch holding all recorded calls - base) per call, in us; None if they spanned two."""
    first, last = t.batch_at(times[0]), t.batch_at(times[-1])
    if first is None or first != last or len(times) != CALLS:
        return None
    return (first[2] - base_cpu) / CALLS * 1e6


def measure(ours: Ours, python: str, script: Path, reps: int) -> dict:
    t = Target(python, script)
    try:
        ours.run(t.pid, "stack")   # attach outside every window
        time.sleep(1.0)
        base = statistics.median(c for _, _, c in t.samples[-25:])
        out = {"base_us": base / CALLS * 1e6, "tt": [], "watch": []}
        rss0 = t.rss_kb()
        for i in range(reps):
            r = ours.run(t.pid, f"tt -t __main__ small -n {CALLS}")
            if i == 0:
                time.sleep(0.2)
                out["rss_per_record_b"] = (t.rss_kb() - rss0) * 1024 / CALLS
                pkg = f"{AGENT_MODULE}_{agent_build()}"
                g = ours.run(t.pid, f"getglobal {pkg} cmd_tt -e \"(lambda sys, recs: (len(recs), sum(sys.getsizeof(r) "
                                    "+ sys.getsizeof(r['_args']) + sys.getsizeof(r['_kwargs']) + sys.getsizeof(r['time']) "
                                    "+ sys.getsizeof(r['cost_ms']) for r in recs)))(__import__('sys'), "
                                    "list(target.TABLE.records.values()))\"")
                n, size = (int(c.view.repr) for c in g.view.children)
                out["sizeof_per_record_b"] = size / n
            cost = per_call_us(t, [x.time for x in r.recording.records], base)
            if cost is not None:
                out["tt"].append(cost)
            ours.run(t.pid, "tt -da")
            w = ours.run(t.pid, f"watch __main__ small -n {CALLS}")
            cost = per_call_us(t, [x.time for x in w.records], base)
            if cost is not None:
                out["watch"].append(cost)
        out["mechanism"] = r.recording.mechanism
        return out
    finally:
        ours.sessions.detach(t.pid)
        t.kill()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", default=",".join(VERSIONS))
    ap.add_argument("--reps", type=int, default=5)
    opts = ap.parse_args()
    ours = Ours()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "tt_bench_target.py"
        script.write_text(TARGET)
        for v in opts.versions.split(","):
            python = find_python(v)
            if python is None:
                print(f"{v}: not installed, skipped")
                continue
            m = measure(ours, python, script, opts.reps)
            rows.append((v, m))
            print(f"{v} done: {m}", file=sys.stderr)
    ours.sessions.close()
    med = lambda xs: f"{statistics.median(xs):.2f}" if xs else "n/a"  # noqa: E731
    print(f"{'python':<7}{'unrecorded us/call':>20}{'tt +us/call':>13}{'watch +us/call':>16}"
          f"{'tt B/record (objects)':>23}{'tt B/record (RSS)':>19}  mechanism")
    for v, m in rows:
        print(f"{v:<7}{m['base_us']:>20.3f}{med(m['tt']):>13}{med(m['watch']):>16}"
              f"{m['sizeof_per_record_b']:>23.0f}{m['rss_per_record_b']:>19.0f}  {m['mechanism']}"
              f"  (tt runs {len(m['tt'])}, watch runs {len(m['watch'])})")
    print(f"tt/watch +us/call: extra main-thread CPU per call while recording ({CALLS} consecutive calls, median "
          "of the runs); the unrecorded call costs the first column.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
