"""Busy in pure Python on the main thread, with a second thread that naps (its safe point)."""
import threading
import time

COUNTER = [0]


def napping():
    while True:
        time.sleep(0.02)


def spin():
    n = 0
    while True:
        n = (n * 31 + 7) % 1000003
        COUNTER[0] += 1


threading.Thread(target=napping, name="napper", daemon=True).start()
print("READY", flush=True)
spin()
