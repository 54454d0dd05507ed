"""300 idle threads: a reading from outside takes long enough to kill the target during it."""
import threading, time
stop = threading.Event()
for i in range(300):
    threading.Thread(target=stop.wait, daemon=True).start()
print("READY", flush=True)
time.sleep(600)
