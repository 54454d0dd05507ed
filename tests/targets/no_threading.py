"""Starts without importing threading. When the file named in argv[1] appears (the test creates
it after attaching and running commands), imports threading on the main thread and prints
whether threading still recognises the main thread."""
import os
import sys
import time

if "threading" in sys.modules:
    if sys.flags.no_site:
        print("THREADING ALREADY IMPORTED", flush=True)
    else:  # a .pth file of this installation imports it: start again without site (same pid)
        os.execv(sys.executable, [sys.executable, "-S", "-u"] + sys.argv)


def tick():
    time.sleep(0.02)


print("READY", flush=True)
while not os.path.exists(sys.argv[1]):
    tick()
import threading  # noqa: E402

print("MAIN_IS_CURRENT %s" % (threading.main_thread() is threading.current_thread()), flush=True)
print("MAIN_NAME %s" % threading.current_thread().name, flush=True)
