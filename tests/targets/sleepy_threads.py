"""Two threads sleeping in a loop: a target the agent answers for."""
import threading, time

def serve_forever():
    while True:
        time.sleep(0.05)

threading.Thread(target=serve_forever, name="server", daemon=True).start()
print("READY", flush=True)
serve_forever()
