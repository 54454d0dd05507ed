"""What trace's recorder pays for knowing where calls raised (issue 12, item 10): the recorder before
(a .so built from an earlier commit) and after (this tree's), side by side in ONE process per
Python version, rounds interleaved so the machine's noise hits both alike.

Not a test: prints a table. Each round records, with each recorder, three workloads run by the
recorded thread (the recorder's own events only: no probe, no agent, no host):
  A  returns:  100,000 calls of small(x) that return normally (the hot path that must not move)
  B  fib(20):  21,891 recursive calls
  C  raises:   10,000 calls of reserve() that raise KeyError, caught by the caller
Figures: medians over the rounds of the thread's CPU time (time.thread_time(): other processes on a
busy machine disturb it far less than wall time), milliseconds per workload; `untraced` is the
workload alone.
Python <= 3.11 records through a profile function; 3.12+ through a sys.monitoring tool, as in a
target (the frame evaluator's note of raised types is not part of this: it runs only in targets).

Usage: python bench/exc_recorder_cost.py --before /path/to/old/_flight_mcp_recorder.abi3.so
           [--versions 3.8,3.11,3.12,3.13] [--rounds 15]
(--before: e.g. from `git archive <commit> | tar -x -C /tmp/base` and `pip install -e /tmp/base`.)
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
AFTER = sorted(glob.glob(os.path.join(HERE, "..", "flight_mcp", "agent", "_flight_mcp_recorder*.so")))

CHILD = r'''
import json, statistics, sys, time
from importlib.machinery import ExtensionFileLoader
import importlib.util

def load(path, alias):
    loader = ExtensionFileLoader("_flight_mcp_recorder", path)
    spec = importlib.util.spec_from_file_location("_flight_mcp_recorder", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module

def small(x):
    return x + 1

def returns():
    for i in range(100000):
        small(i)

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def fib20():
    fib(20)

def reserve(stock, sku):
    return stock[sku]

def raises():
    stock = {}
    for i in range(10000):
        try:
            reserve(stock, i)
        except KeyError:
            pass

WORK = {"A returns": returns, "B fib(20)": fib20, "C raises": raises}
MON = hasattr(sys, "monitoring")

class Events(object):
    def __init__(self, module, tool):
        self.tool = tool
        mon = sys.monitoring
        ev = mon.events
        unwinds = getattr(module, "mon_unwinds", module.mon_ends)
        c_raises = getattr(module, "mon_c_raises", module.mon_c_ends)
        self.callbacks = ((ev.PY_START, module.mon_begins), (ev.PY_RESUME, module.mon_begins),
                          (ev.PY_THROW, module.mon_begins), (ev.PY_RETURN, module.mon_ends),
                          (ev.PY_YIELD, module.mon_ends), (ev.PY_UNWIND, unwinds),
                          (ev.CALL, module.mon_call), (ev.C_RETURN, module.mon_c_ends),
                          (ev.C_RAISE, c_raises))
        self.events = 0
        mon.use_tool_id(tool, "bench")
        for event, fn in self.callbacks:
            mon.register_callback(tool, event, fn)
            self.events |= event
        module.configure_monitoring(self.switch, type(len), type(list.append))

    def switch(self, on):
        sys.monitoring.set_events(self.tool, self.events if on else 0)

def run(module, fn):
    rec = module.Recording(fn.__code__, None, "[yield]", lambda code: 0, sys.setprofile, 0.0001, -1, 100000, MON)
    t0 = time.thread_time()
    rec.activate(sys.getprofile())
    fn()
    rec.deactivate()
    rec.finish()
    return (time.thread_time() - t0) * 1000.0

before, after = load(sys.argv[1], "before"), None
if MON:
    Events(before, 3)
after = load(sys.argv[2], "after")
if MON:
    Events(after, 4)
rounds = int(sys.argv[3])
times = {}
for r in range(rounds):
    for name, fn in WORK.items():
        t0 = time.thread_time(); fn(); base = (time.thread_time() - t0) * 1000.0
        times.setdefault((name, "untraced"), []).append(base)
        order = (("before", before), ("after", after)) if r % 2 else (("after", after), ("before", before))
        for label, module in order:
            times.setdefault((name, label), []).append(run(module, fn))
print(json.dumps({"%s|%s" % k: statistics.median(v) for k, v in times.items()}))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="the earlier build's _flight_mcp_recorder*.so")
    ap.add_argument("--versions", default="3.8,3.9,3.10,3.11,3.12,3.13")
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    print(f"{'python':8}{'workload':12}{'untraced':>10}{'before':>10}{'after':>10}{'after/before':>14}")
    for version in a.versions.split(","):
        exe = sorted(glob.glob(os.path.join(root, "versions", version + ".*", "bin", "python" + version)))
        if not exe:
            print(f"py{version}: not installed")
            continue
        out = subprocess.run([exe[-1], "-c", CHILD, a.before, AFTER[0], str(a.rounds)], capture_output=True,
                             text=True, timeout=900)
        if out.returncode:
            print(f"py{version}: failed: {out.stderr.strip()[-500:]}")
            continue
        figures = json.loads(out.stdout)
        for work in ("A returns", "B fib(20)", "C raises"):
            base, old, new = (figures[f"{work}|{k}"] for k in ("untraced", "before", "after"))
            print(f"py{version:6}{work:12}{base:10.2f}{old:10.2f}{new:10.2f}{new / old:13.2f}x")
    print(f"medians of {a.rounds} interleaved rounds, CPU ms per workload; after/before 1.00x = no change")


if __name__ == "__main__":
    main()
