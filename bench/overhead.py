"""Instrumentation overhead, flight-mcp side by side with flight_profiler 1.0.7 (issue 3).

Not a test: prints a table. Workloads, each run by a real target process that loops it forever and
prints its own per-iteration timings ("T <start wall time> <seconds>") on stdout:
  A  calls_100k(): 100,000 calls of a small Python function small(x)
  B  fib25():      recursive fib(25) (242,785 calls of fib)
For every Python version and every tool, on one fresh target per (tool, workload), windows in order:
  base      untraced
  trace     `trace __main__ <workload>` active (limit high enough that the deadline ends it)
  after-tr  untraced again, after the trace ended
  watch     (A only) `watch __main__ small -f 'args[0] < 0'`, a filter that never matches
  after-w   untraced again, after the watch ended
Figures are medians of the target's own iteration times (main-thread CPU time, time.thread_time(), which
this noisy 2-core machine disturbs far less than wall time; wall ratios are shown too), counting only
iterations that started and ended inside the window in which the instrumentation was active (ours: the
agent's own start/duration; flight_profiler: its own "add/clear wrapper" log lines in the target's output).
Ratios are against `base`; the watch cost is (watched - untraced) / calls per iteration. flight_profiler's
never-matching watch takes ~5 s per iteration and removes itself after 5-9 s, so its iterations are
prorated by its log times (see FlightProfiler._prorated).

Our tool is driven in-process through its Python API (Sessions + cmdline.parse + tool.run, like
flight_mcp/demo.py). flight_profiler runs as its CLI; its agent is imported from the target's environment,
so its targets run with the interpreter of /work/fp-venvs/<ver> (or /work/fp-venv for 3.11). Its agent
listens on a fixed port (127.0.0.1:16000), so only one of its targets exists at a time: all targets here
are run one after the other and killed (by pid) before the next starts.

Usage: python bench/overhead.py [--versions 3.8,3.12] [--seconds 2] [--tools ours,fp]
Goals (issue 3): trace overhead <= flight_profiler's; never-true watch < 2 us per call; 1.00x after.
"""
from __future__ import annotations

import argparse
import os
import signal
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
from flight_mcp.errors import FlightError  # noqa: E402
from flight_mcp.session import Sessions  # noqa: E402
from flight_mcp.tools import all_tools  # noqa: E402
from flight_mcp.tools.base import Call  # noqa: E402
from tests.conftest import find_python  # noqa: E402

VERSIONS = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"]
FP_VENV_311 = Path("/work/fp-venv")
FP_VENVS = Path("/work/fp-venvs")
FIB_CALLS = 242785  # calls of fib made by fib(25)
# flight_profiler's wrapper was seen to take effect up to ~0.15 s after its log line says it was added.
SETTLE_S = 0.3
CALLS = {"A": 100_000, "B": FIB_CALLS}
FUNC = {"A": "calls_100k", "B": "fib25"}

TARGET_SRC = '''\
import sys, threading, time

def small(x):
    return x + 1

def calls_100k():
    s = 0
    for i in range(100000):
        s = small(i)
    return s

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def fib25():
    return fib(25)

# An idle thread, as most services have: flight-mcp attaches only through a thread blocked in a system
# call, and a single thread that computes without ever making one offers no such point.
threading.Thread(target=time.sleep, args=(1e6,), daemon=True).start()
work = globals()[sys.argv[1]]
out = sys.stdout
out.write("READY\\n")
out.flush()
clock, wall, cpu = time.perf_counter, time.time, time.thread_time
while True:
    w, t0, c0 = wall(), clock(), cpu()
    work()
    out.write("T %.6f %.9f %.9f\\n" % (w, clock() - t0, cpu() - c0))
    out.flush()
'''


class Target:
    """A looping workload process; a reader thread keeps (start wall time, seconds) of every iteration."""

    def __init__(self, python: str, script: Path, workload: str):
        self.proc = subprocess.Popen([python, "-u", str(script), FUNC[workload]], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.pid = self.proc.pid
        self.samples: list[tuple[float, float, float]] = []  # (start wall time, wall s, thread CPU s)
        self.events: list[tuple[float, str]] = []  # (wall time read, line) of every other line
        first = self.proc.stdout.readline().strip()
        if first != "READY":
            self.kill()
            raise RuntimeError(f"target did not start with {python}: {first!r}")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # flight_profiler logs into this stream too: keep only our lines
            parts = line.split()
            if len(parts) == 4 and parts[0] == "T":
                try:
                    self.samples.append((float(parts[1]), float(parts[2]), float(parts[3])))
                except ValueError:
                    pass
            else:
                self.events.append((time.time(), line))

    def between(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """(wall, cpu) of the iterations that started and ended inside [t0, t1]."""
        return [(d, c) for s, d, c in list(self.samples) if s >= t0 and s + d <= t1]

    def wait_iterations(self, t0: float, n: int, cap_s: float) -> None:
        """Until n iterations started after t0 have finished, or cap_s passed."""
        end = time.time() + cap_s
        while time.time() < end and sum(1 for s, _, _ in list(self.samples) if s >= t0) < n:
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def untraced(t: Target, seconds: float, min_iters: int) -> list[tuple[float, float]]:
    t0 = time.time()
    time.sleep(seconds)
    t.wait_iterations(t0, min_iters + 1, seconds * 4)
    return t.between(t0, time.time())


class Ours:
    name = "flight-mcp"

    def __init__(self):
        self.sessions = Sessions()
        self.tools = all_tools()
        self.call = Call(self.sessions)

    def python(self, version: str) -> str | None:
        return find_python(version)

    def _run(self, pid: int, cmd: str):
        tool, params = cmdline.parse(cmdline.split(cmd), self.tools, pid)
        return tool.run(params, self.call)

    def warm(self, t: Target) -> None:
        self._run(t.pid, "stack")  # attach (inject) outside every measured window

    def active(self, t: Target, cmd: str, seconds: float, min_iters: int, limit: int | None = None,
               base_wall: float | None = None) -> tuple[list[tuple[float, float]], str]:
        # The deadline ends the capture; the limit is high enough never to be reached first. The window is
        # the agent's own record of when the instrumentation was in place.
        r = self._run(t.pid, f"{cmd} -n 10000 --timeout {seconds}")
        got = t.between(r.started, r.started + r.duration_s)  # started: epoch seconds
        if len(got) < min_iters:  # iterations slower than the window: widen it once
            r = self._run(t.pid, f"{cmd} -n 10000 --timeout {seconds * 4}")
            got = t.between(r.started, r.started + r.duration_s)
        return got, f"{r.seen} seen, {r.matched} matched, {r.mechanism}"

    def forget(self, t: Target) -> None:
        self.sessions.detach(t.pid)

    def close(self) -> None:
        self.sessions.close()


class FlightProfiler:
    name = "flight_profiler"

    def __init__(self):
        self.venvs: dict[str, Path | None] = {}

    def python(self, version: str) -> str | None:
        for venv in (FP_VENVS / version, FP_VENV_311 if version == "3.11" else None):
            if venv is not None and (venv / "bin" / "flight_profiler").exists():
                self.venvs[version] = venv
                return str(venv / "bin" / "python")
        return None

    def _cli(self, t: Target, cmd: str) -> subprocess.Popen:
        venv = Path(t.proc.args[0]).parent.parent
        return subprocess.Popen(["timeout", "-k", "5", "300", str(venv / "bin" / "flight_profiler"), str(t.pid),
                                 "--cmd", cmd, "--no-color"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    def warm(self, t: Target) -> None:
        p = self._cli(t, "help")
        out, _ = p.communicate(timeout=120)
        if "AVAILABLE COMMANDS" not in out:
            raise RuntimeError(f"flight_profiler did not attach: {out.strip()[-300:]}")

    def active(self, t: Target, cmd: str, seconds: float, min_iters: int, limit: int | None = None,
               base_wall: float | None = None) -> tuple[list[tuple[float, float]], str]:
        # A trace is ended by its limit: stopping its client with SIGINT (Ctrl-C) while a trace runs killed the
        # target's main thread in our runs (the wrapper raises SystemError from remove_trace_profile once the
        # agent's event loop is closed). A watch whose filter never matches can only be ended by SIGINT, which
        # removes its wrapper cleanly. Window: from the target's own log line "add wrapper successfully"
        # (its "Spy was successfully added" comes ~0.3-1 s before the wrapper is in effect) to the SIGINT, or
        # to the "clear wrapper" line when the limit ends it.
        launched = time.time()
        p = self._cli(t, cmd.replace("'", "").replace(" < ", "<") + f" -n {limit or 100000}")
        lines: list[str] = []

        def read():
            for line in p.stdout:
                lines.append(line)
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        start = self._event(t, launched, "add wrapper successfully", 60)
        if start is None:
            p.kill()
            raise RuntimeError(f"flight_profiler {cmd!r}: no wrapper: {''.join(lines)[-300:]}")
        start += SETTLE_S
        if limit is None:
            # It also ends a watch by itself after some seconds (~9 s seen): the window ends there too.
            time.sleep(seconds)
            deadline = start + max(seconds * 8, 40)
            while (time.time() < deadline and len(t.between(start, time.time())) < min_iters
                   and self._event(t, start, "clear wrapper successfully", 0) is None):
                time.sleep(0.05)
            end = time.time()
            p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=max(seconds * 20, 60) if limit else 30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        cleared = self._event(t, start, "clear wrapper successfully", 5)
        end = min(cleared or time.time(), time.time() if limit is not None else end)
        reader.join(5)
        note = f"{sum(1 for ln in lines if ln.startswith('─'))} records printed"
        got = t.between(start, end)
        if limit is None and len(got) < min_iters and base_wall:
            time.sleep(0.5 + 2 * base_wall)  # the iteration running at the clear reports when it ends
            got = self._prorated(t, launched, base_wall)
            note += f"; {len(got)} iterations prorated by its log times"
        return got, note

    @staticmethod
    def _log_time(t: Target, since: float, text: str) -> float | None:
        """The target-side time stamp of its log line (local time, milliseconds): when the wrapper changed."""
        for when, line in list(t.events):
            if when >= since and text in line:
                stamp = line.split(" [")[0].strip()
                return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:23]) / 1000
        return None

    def _prorated(self, t: Target, since: float, base_wall: float) -> list[tuple[float, float]]:
        # Its never-matching watch costs ~5 s per iteration here and it removed its wrapper by itself after
        # 5-9 s, leaving at most one iteration wholly inside the window. So every iteration that overlaps the
        # wrapped interval counts: the parts of it outside ran at the untraced speed (base_wall), the rest
        # made the remaining calls; the result is the time a wholly wrapped iteration would take.
        added = self._log_time(t, since, "add wrapper successfully")
        cleared = self._log_time(t, since, "clear wrapper successfully")
        if added is None or cleared is None:
            return []
        out = []
        for s, d, c in list(t.samples):
            outside = max(0.0, added - s) + max(0.0, s + d - cleared)
            unwrapped_share = outside / base_wall
            if s + d <= added or s >= cleared or unwrapped_share > 0.9:  # too little wrapped to scale up
                continue
            wall = (d - outside) / (1 - unwrapped_share)
            out.append((wall, wall * c / d))  # CPU: the iteration's own CPU/wall share
        return out

    @staticmethod
    def _event(t: Target, since: float, text: str, wait_s: float) -> float | None:
        deadline = time.time() + wait_s
        while True:
            for when, line in list(t.events):
                if when >= since and text in line:
                    return when
            if time.time() >= deadline:
                return None
            time.sleep(0.02)

    def forget(self, t: Target) -> None:
        pass

    def close(self) -> None:
        pass


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def measure(tool, version: str, workload: str, script: Path, seconds: float, log) -> dict:
    python = tool.python(version)
    if python is None:
        return {"na": f"no interpreter with {tool.name} for {version}"}
    t = Target(python, script, workload)
    res: dict = {"n": {}}
    try:
        tool.warm(t)
        time.sleep(1.0)  # both agents were seen busy for a moment after attaching: keep that out of `base`
        min_iters = 3
        windows = [("base", None), ("trace", f"trace __main__ {FUNC[workload]}"), ("after-tr", None)]
        if workload == "A":
            windows += [("watch", "watch __main__ small -f 'args[0] < 0'"), ("after-w", None)]
        for name, cmd in windows:
            t0 = time.monotonic()
            if cmd is None:
                got, note = untraced(t, seconds, min_iters), ""
            else:
                # flight_profiler's trace must end by its limit: about `seconds` at 3x the untraced time
                limit = max(min_iters + 2, min(1000, int(seconds / (3 * res["base"])))) if name == "trace" else None
                got, note = tool.active(t, cmd, seconds, min_iters, limit, res.get("base_wall"))
            res[name] = med([c for _, c in got])
            res[name + "_wall"] = med([w for w, _ in got])
            res["n"][name] = len(got)
            log(f"  {tool.name:15} py{version} {workload} {name:8} n={len(got):4} "
                f"cpu={_ms(res[name])} wall={_ms(res[name + '_wall'])} ms  ({time.monotonic() - t0:.1f}s{'; ' + note if note else ''})")
            if not t.alive():
                res["na"] = f"target died during {name}"
                break
    except (FlightError, RuntimeError, subprocess.SubprocessError) as e:
        res["na"] = str(getattr(e, "message", e))[:200]
        log(f"  {tool.name} py{version} {workload}: n/a: {res['na']}")
    finally:
        tool.forget(t)
        t.kill()
    return res


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.2f}"


def _ratio(a, b) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def table(results: dict, versions: list[str], tools: list) -> str:
    lines = ["Overhead: medians of the target's own per-iteration main-thread CPU times (wall-clock ratio for "
             "comparison); ratios vs the untraced `base` window of the same target", "",
             f"{'python':7} {'tool':16} {'wl':3} {'base ms':>9} {'trace ms':>10} {'trace/base':>10} {'(wall)':>8} "
             f"{'after-tr':>9} {'watch us/call':>14} {'base us/call':>13} {'after-w':>8}"]
    for v in versions:
        for tool in tools:
            for wl in ("A", "B"):
                r = results.get((v, tool.name, wl), {})
                if "na" in r and r.get("base") is None:
                    lines.append(f"py{v:5} {tool.name:16} {wl:3} n/a: {r['na']}")
                    continue
                b = r.get("base")
                watch = "-"
                if wl == "A" and r.get("watch") is not None and b:
                    untr = statistics.median([x for x in (b, r.get("after-tr")) if x is not None])
                    watch = f"{(r['watch'] - untr) / CALLS[wl] * 1e6:.3f}"
                per_call = f"{b / CALLS[wl] * 1e6:.3f}" if b else "-"
                lines.append(f"py{v:5} {tool.name:16} {wl:3} {_ms(b):>9} {_ms(r.get('trace')):>10} "
                             f"{_ratio(r.get('trace'), b):>10} {_ratio(r.get('trace_wall'), r.get('base_wall')):>8} "
                             f"{_ratio(r.get('after-tr'), b):>9} {watch:>14} "
                             f"{per_call:>13} {_ratio(r.get('after-w'), b) if wl == 'A' else '-':>8}"
                             + (f"  ({r['na']})" if "na" in r else ""))
    lines += ["", "Trace overhead ratio (trace/base, CPU) side by side:",
              f"{'python':7} {'ours A':>8} {'fp A':>8} {'ours B':>8} {'fp B':>8}"]
    for v in versions:
        row = [_ratio(results.get((v, n, wl), {}).get("trace"), results.get((v, n, wl), {}).get("base"))
               for wl in ("A", "B") for n in ("flight-mcp", "flight_profiler")]
        lines.append(f"py{v:5} " + " ".join(f"{c:>8}" for c in row))
    lines += ["", "A = 100,000 calls of small(x) per iteration; B = fib(25) (242,785 calls). watch us/call = "
              "(median under `watch __main__ small -f 'args[0] < 0'` - untraced median) / 100,000.",
              "after-tr / after-w = untraced median after the trace / watch ended, over base (goal 1.00x).",
              "CPU = time.thread_time() of the target's main thread (where the probes run): robust against other "
              "processes on this 2-core machine; wall also counts the tools' own threads and the machine's noise."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--versions", default=",".join(VERSIONS), help="comma-separated, e.g. 3.8,3.12")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each measurement window")
    ap.add_argument("--tools", default="ours,fp", help="ours, fp or both")
    a = ap.parse_args()
    versions = [v for v in a.versions.split(",") if v]
    tools = [{"ours": Ours, "fp": FlightProfiler}[n]() for n in a.tools.split(",")]
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    results: dict = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="overhead-") as d:
        script = Path(d) / "workload.py"
        script.write_text(TARGET_SRC)
        try:
            for v in versions:
                if find_python(v) is None:
                    log(f"py{v}: not installed under pyenv, skipped")
                for wl in ("A", "B"):
                    for tool in tools:  # one target at a time (flight_profiler's fixed port)
                        results[(v, tool.name, wl)] = measure(tool, v, wl, script, a.seconds, log)
        finally:
            for tool in tools:
                tool.close()
    print(f"flight-mcp overhead bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} CPUs, windows of {a.seconds}s, run took {time.monotonic() - started:.0f}s")
    print(table(results, versions, tools))
    return 0


if __name__ == "__main__":
    sys.exit(main())
