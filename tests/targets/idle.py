"""Idle target with globals that are hard to show: a huge container, self-references, broken reprs."""
import time

CONFIG = {"db": {"host": "localhost", "port": 5432}, "retries": 3}
HUGE = list(range(1000000))
HUGE_DICT = {"key%d" % i: i for i in range(100000)}
LOOP = [1, 2]
LOOP.append(LOOP)
LONG_TEXT = "x" * 1000000


class BadRepr:
    def __repr__(self):
        raise ValueError("repr is broken on purpose")


class RecursiveRepr:
    def __repr__(self):
        return "R(%r)" % (self,)


class Settings:
    region = "eu-west"
    limits = {"max": 10}


BAD = BadRepr()
RECURSIVE = RecursiveRepr()

print("READY", flush=True)
while True:
    time.sleep(0.1)
