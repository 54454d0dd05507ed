"""A worker thread that, every few seconds, runs a catastrophically backtracking regular expression: one
C call (the re engine never lets the GIL go) that holds the GIL for seconds while the other threads wait.

argv: MARKER_DIR [STALL_S] [GAP_S]. Right before stall N the worker creates MARKER_DIR/stall-N, right
after it MARKER_DIR/done-N: tests synchronise on those, never on the clock. The stall's length is
calibrated at start (each extra character doubles the backtracking), so it is about STALL_S on every
Python version."""
import math
import os
import re
import sys
import threading
import time

MARKERS = sys.argv[1]
STALL_S = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
GAP_S = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
PATTERN = re.compile(r"(a+)+$")
counter = 0  # what getglobal reads
config = {"service": "regex", "stalls": 0}


def backtrack(n):
    return PATTERN.match("a" * n + "b")  # STALL-HERE


def calibrate():
    n = 14
    while True:
        started = time.thread_time()  # CPU time: a loaded machine does not shorten the stall
        backtrack(n)
        took = time.thread_time() - started
        if took > 0.03:
            return n + max(0, round(math.log2(STALL_S / took)))
        n += 1


def mark(name):
    open(os.path.join(MARKERS, name), "w").close()


def worker(n):
    i = 0
    while True:
        time.sleep(GAP_S)
        i += 1
        mark("stall-%d" % i)
        backtrack(n)
        config["stalls"] = i
        mark("done-%d" % i)


N = calibrate()
threading.Thread(target=worker, args=(N,), name="regex-worker", daemon=True).start()
print("READY", flush=True)
while True:
    time.sleep(0.05)
    counter += 1
