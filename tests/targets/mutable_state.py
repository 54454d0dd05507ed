"""Target for the vmtool and read-only tests: state that any side effect would change.

argv[1]: a sentinel path that Box.bump() (the only mutating method) appends to. Prints READY.
The cycles are made with automatic GC disabled, so only an explicit collection frees them.
"""
import collections
import gc
import os
import sys
import time

SENTINEL = sys.argv[1] if len(sys.argv) > 1 else os.devnull


class Box(object):
    def __init__(self, name, size):
        self.name = name
        self.size = size
        self.bumps = 0

    def bump(self):
        self.bumps += 1
        STATE["counter"] += 1
        with open(SENTINEL, "a") as f:
            f.write("bumped\n")
        return self.bumps

    def stats(self):
        return {"name": self.name, "size": self.size}


class BigBox(Box):
    pass


class Registry(object):
    def __init__(self):
        self.boxes = []
        self.by_name = {}


class Node(object):
    def __init__(self):
        self.other = None


STATE = {"counter": 0, "items": [1, 2, 3], "gen": (i for i in range(10)),
         "dd": collections.defaultdict(list, a=[1])}
BOXES = [Box("a", 1), Box("b", 2), Box("c", 2), BigBox("big", 9)]
BOX = BOXES[0]
REG = Registry()
REG.boxes.extend(BOXES[:2])
REG.by_name["c"] = BOXES[2]
CYCLES = 500


def make_cycles(n):
    for _ in range(n):
        a, b = Node(), Node()
        a.other, b.other = b, a


def main():
    gc.disable()
    make_cycles(CYCLES)
    print("READY", flush=True)
    while True:
        time.sleep(0.05)


if __name__ == "__main__":
    main()
