"""Checks its own floating-point results: a hijack that does not restore the vector registers
shows up as a sum that differs from the one computed before any injection (prints MISMATCH)."""
import array
import math
import threading
import time


def compute():
    xs = array.array("d", (i * 0.001 for i in range(20000)))
    s = math.fsum(math.sin(x) * math.cos(x * 0.5) for x in xs)
    t = sum(x * x / (1.0 + x) for x in xs)
    return s, t, math.sqrt(abs(s * t)) + math.exp(-s * 1e-6)


def napper():
    while True:
        time.sleep(0.05)


EXPECTED = compute()
threading.Thread(target=napper, name="napper", daemon=True).start()
print("READY", flush=True)
last = time.monotonic()
while True:
    got = compute()
    if got != EXPECTED:
        print("MISMATCH %r != %r" % (got, EXPECTED), flush=True)
    if time.monotonic() - last > 1.0:
        last = time.monotonic()
        print("TICK", flush=True)
