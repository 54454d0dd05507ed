"""50 named threads blocked on an Event, plus the main thread sleeping."""
import threading
import time

stop = threading.Event()


def parked(i):
    stop.wait()


for i in range(50):
    threading.Thread(target=parked, args=(i,), name="parked-%02d" % i, daemon=True).start()
print("READY", flush=True)
while True:
    time.sleep(0.1)
