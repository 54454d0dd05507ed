"""Target whose worker thread already runs a profiler when trace comes: argv[1] is "python" (a
sys.setprofile function counting events) or "cprofile" (cProfile.Profile enabled on that thread).
After every round the worker writes the events its own profiler saw to the file argv[2]. Python 3.8+."""
import os
import sys
import threading
import time

MODE = sys.argv[1]


def step(i):
    return i * 2


def work():
    return sum(step(i) for i in range(50))


def worker():
    if MODE == "python":
        seen = [0]

        def counter(frame, event, arg):
            seen[0] += 1
        sys.setprofile(counter)
        count = lambda: seen[0]
    else:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
        count = lambda: sum(entry.callcount for entry in prof.getstats())
    while True:
        work()
        time.sleep(0.02)
        with open(sys.argv[2] + ".tmp", "w") as f:
            f.write(str(count()))
        os.replace(sys.argv[2] + ".tmp", sys.argv[2])


threading.Thread(target=worker, name="worker", daemon=True).start()
time.sleep(0.2)
print("READY", flush=True)
while True:
    time.sleep(0.5)
