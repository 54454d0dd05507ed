"""A target for the source and console tools: functions, a class, a nested function, generated
code, and a thread that prints to stdout every few milliseconds (the console must not mix in)."""
import functools
import json
import sys
import threading
import time


def plain(a, b=2):
    """Adds."""
    return a + b


def deco(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


class Shop(object):
    rate = 3

    def price(self, n):
        total = n * self.rate
        return total

    @deco
    def decorated(self, x):
        return x * 2

    @staticmethod
    def helper():
        return "help"

    def outer(self, k):
        def inner(v):
            return v + k
        return inner(1)


GENERATED = {}
exec(compile("def made(x):\n    return x\n", "<string>", "exec"), GENERATED)
made = GENERATED["made"]
dumps = json.dumps
length = len

PRINTS = [0]


def chatter():
    while True:
        PRINTS[0] += 1
        sys.stdout.write("app-line %d\n" % PRINTS[0])  # one write: a line never split by another thread
        sys.stdout.flush()
        time.sleep(0.01)


if __name__ == "__main__":
    print("READY", flush=True)
    if "--chatter" in sys.argv:
        threading.Thread(target=chatter, name="chatter", daemon=True).start()
    shop = Shop()
    while True:
        plain(1)
        shop.price(2)
        time.sleep(0.05)
