"""A worker thread that, when a test asks, runs a catastrophically backtracking regular expression: one
C call (the re engine never lets the GIL go) that holds the GIL for seconds while the other threads wait.

argv: MARKER_DIR [STALL_S]. Stall N begins when the test creates MARKER_DIR/go-N; right before it the
worker creates MARKER_DIR/stall-N, right after it MARKER_DIR/done-N: tests synchronise on those, never
on the clock, and no stall runs that no test asked for (each burns a core for seconds). A go-N that
says "hooked" makes the worker wait until mark() is instrumented first (with the flight_mcp_hooks
that tests/conftest.py's TARGET_SEES_INSTRUMENTATION pastes in front of this source), then HOOKED_S
more: the capture that instrumented it has begun beating (every 0.2 s) before the stall silences it.
The stall's length is calibrated at start (each extra character multiplies the backtracking by about
1.6), so it is at least STALL_S (and less than 1.7 times it) of CPU time on every Python version."""
import math
import os
import re
import sys
import threading
import time

MARKERS = sys.argv[1]
STALL_S = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
PATTERN = re.compile(r"(a|aa)+$")
HOOKED_S = 1.0
counter = 0  # what getglobal reads
config = {"service": "regex", "stalls": 0}


def backtrack(n):
    return PATTERN.match("a" * n + "b")  # STALL-HERE


def calibrate():
    n = 20
    while True:
        started = time.thread_time()  # CPU time: a loaded machine does not shorten the stall
        backtrack(n)
        took = time.thread_time() - started
        if took > 0.05:
            return n + max(0, math.ceil(math.log(STALL_S / took, 1.618)))
        n += 1


def mark(name):
    open(os.path.join(MARKERS, name), "w").close()


def asked(i):
    """Waits for go-i; True when it asks to wait for mark() to be instrumented first."""
    go = os.path.join(MARKERS, "go-%d" % i)
    while not os.path.exists(go):
        time.sleep(0.05)  # seldom: a thread running Python when the process is read looks like a stall
    with open(go) as f:
        return f.read().strip() == "hooked"


def worker(n):
    i = 0
    while True:
        i += 1
        if asked(i):
            while not flight_mcp_hooks(mark.__code__):  # noqa: F821 (pasted in by the test)
                time.sleep(0.005)
            time.sleep(HOOKED_S)
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
