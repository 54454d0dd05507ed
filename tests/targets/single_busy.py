"""One thread, computing in pure Python without ever making a system call: no safe point."""
import sys

print("READY", flush=True)
n = 0
while True:
    n = (n * 31 + 7) % 1000003
