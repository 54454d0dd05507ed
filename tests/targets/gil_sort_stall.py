"""A worker thread that, when a test asks, sorts a big list of tuples: one C call (list.sort never lets
the GIL go; comparing tuples element by element makes it long) that holds the GIL for seconds.

argv: MARKER_DIR [STALL_S], as tests/targets/gil_regex_stall.py: sort N begins when the test creates
MARKER_DIR/go-N, with MARKER_DIR/stall-N right before it and MARKER_DIR/done-N right after. The list's
length is calibrated at start so one sort takes about STALL_S of CPU time."""
import os
import sys
import threading
import time

MARKERS = sys.argv[1]
STALL_S = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
orders = {"pending": 0}  # what getglobal reads


def rows(n):
    return [(0, 0, 0, 0, 0, 0, 0, (i * 7919) % 1000003) for i in range(n)]


def sort_orders(data):
    return sorted(data)  # STALL-HERE


def calibrate():
    n = 20000
    while True:
        data = rows(n)
        started = time.thread_time()  # CPU time: a loaded machine does not shorten the stall
        sort_orders(data)
        took = time.thread_time() - started
        if took > 0.05:
            return rows(int(n * STALL_S / took))
        n *= 2


def mark(name):
    open(os.path.join(MARKERS, name), "w").close()


def worker(data):
    i = 0
    while True:
        i += 1
        while not os.path.exists(os.path.join(MARKERS, "go-%d" % i)):
            time.sleep(0.05)  # seldom: a thread running Python when the process is read looks like a stall
        mark("stall-%d" % i)
        sort_orders(data)
        orders["pending"] = i
        mark("done-%d" % i)


DATA = calibrate()
threading.Thread(target=worker, args=(DATA,), name="sort-worker", daemon=True).start()
print("READY", flush=True)
while True:
    time.sleep(0.05)
