"""Main thread stuck in a C call holding the GIL, two threads deadlocked, one waiting for the GIL
(tests/test_stack_native.py)."""
import ctypes
import threading
import time

a, b = threading.Lock(), threading.Lock()
has_a, has_b = threading.Event(), threading.Event()
blocking = []


def take_a_then_b():
    with a:
        has_a.set(); has_b.wait()
        blocking.append("left")
        with b:  # DEADLOCK-LEFT
            pass


def take_b_then_a():
    with b:
        has_b.set(); has_a.wait()
        blocking.append("right")
        with a:  # DEADLOCK-RIGHT
            pass


def tick_forever():
    while True:
        time.sleep(0.02)  # wakes up, then waits for the GIL the main thread never gives back


threading.Thread(target=tick_forever, name="ticker", daemon=True).start()
threading.Thread(target=take_a_then_b, name="left", daemon=True).start()
threading.Thread(target=take_b_then_a, name="right", daemon=True).start()
while len(blocking) < 2:
    time.sleep(0.01)
time.sleep(0.3)  # GIL released: both threads get into their blocking acquire, GIL dropped


def hold_the_gil():
    print("READY", flush=True)
    ctypes.PyDLL(None).sleep(600)  # libc sleep with the GIL held: no Python runs anywhere


hold_the_gil()
