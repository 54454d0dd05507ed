"""A target where one thread holds the GIL in long stretches (a big sorted() inside C, which never
lets the GIL go while it runs) and others want it: two pure-Python busy loops and a thread that
wakes every few ms. `idle` as argv[1] makes every thread sleep instead."""
import sys
import threading
import time

IDLE = len(sys.argv) > 1 and sys.argv[1] == "idle"
DATA = list(range(1000000, 0, -1))


def hog():
    while True:
        if IDLE:
            time.sleep(0.05)
        else:
            sorted(DATA)  # holds the GIL for the whole sort


def spinner():
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
