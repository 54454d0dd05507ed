"""A target where one thread holds the GIL in long stretches (a big sorted() inside C, which never
lets the GIL go while it runs) and others want it: two pure-Python busy loops and a thread that
wakes every few ms. `idle` as argv[1] makes every thread sleep instead; `wait FILE` makes the hog and the
spinners start only once FILE exists (a test attaches first: the agent's start competes for the GIL too)."""
import os
import sys
import threading
import time

IDLE = len(sys.argv) > 1 and sys.argv[1] == "idle"
GO = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "wait" else None
# a scrambled permutation (a reversed list sorts in one pass, ~30 ms: too close to the tests' 30 ms
# threshold for a long hold); this one takes ~90 ms per sort on this machine
DATA = [(i * 7919) % 300007 for i in range(300000)]


def start():
    while GO is not None and not os.path.exists(GO):
        time.sleep(0.01)


def hog():
    start()
    while True:
        if IDLE:
            time.sleep(0.05)
        else:
            sorted(DATA)  # holds the GIL for the whole sort


def spinner():
    start()
    n = 0
    while True:
        if IDLE:
            time.sleep(0.05)
        else:
            n += 1


def ticker():
    while True:
        time.sleep(0.002)


for fn in (hog, spinner, spinner, ticker):
    threading.Thread(target=fn, name=fn.__name__, daemon=True).start()
print("READY", flush=True)
while True:
    time.sleep(1)
