"""N idle threads (argv[1], default 300): for the exit-while-read test and bench/stack_threads.py."""
import sys
import threading
import time

stop = threading.Event()
for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 300):
    threading.Thread(target=stop.wait, name="idle-%d" % i, daemon=True).start()
print("READY", flush=True)
time.sleep(600)
