"""CPU-busy in pure Python on the main thread; a second thread sleeps in short naps (the safe point)."""
import sys
import threading
import time


def napper():
    while True:
        time.sleep(0.05)


threading.Thread(target=napper, name="napper", daemon=True).start()
print("READY", flush=True)
n = 0
last = time.monotonic()
while True:
    n = (n * 1103515245 + 12345) & 0x7FFFFFFF
    if time.monotonic() - last > 1.0:
        last = time.monotonic()
        print("TICK", flush=True)
