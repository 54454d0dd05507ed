"""The main thread stuck inside a garbage collection: a gc callback blocks in C with the GIL held."""
import ctypes
import gc


def on_gc(phase, info):
    if phase == "start":
        print("READY", flush=True)
        ctypes.PyDLL(None).sleep(600)


gc.callbacks.append(on_gc)
gc.collect()
