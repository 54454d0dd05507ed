"""Allocation-heavy: two threads build and drop lists, dicts and big buffers (malloc, mmap, munmap),
while a third thread sleeps in short naps (the safe point)."""
import threading
import time


def churn(seed):
    keep = []
    i = seed
    while True:
        i += 1
        keep.append({"k%d" % j: [j] * (i % 50) for j in range(20)})
        keep.append(bytearray(200000 + (i % 7) * 40000))  # above the mmap threshold
        if len(keep) > 40:
            del keep[:20]


def napper():
    while True:
        time.sleep(0.05)


for s in range(2):
    threading.Thread(target=churn, args=(s,), name="churn-%d" % s, daemon=True).start()
threading.Thread(target=napper, name="napper", daemon=True).start()
print("READY", flush=True)
last = time.monotonic()
while True:
    time.sleep(0.2)
    if time.monotonic() - last > 1.0:
        last = time.monotonic()
        print("TICK", flush=True)
