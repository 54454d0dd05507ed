"""A thread started by pthread_create running libc sleep(): never registered with the interpreter."""
import ctypes, time
libc = ctypes.CDLL(None)
tid = ctypes.c_ulong()
addr = ctypes.cast(libc.sleep, ctypes.c_void_p)
libc.pthread_create(ctypes.byref(tid), None, addr, ctypes.c_void_p(1000))
print("READY", flush=True)
time.sleep(600)
