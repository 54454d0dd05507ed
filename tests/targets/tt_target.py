"""tt's target: a worker charges orders 20 times a second (one in five raises); CHARGED counts the
charges per order id (a replay shows there), ALIVE holds the ids of Order objects not yet freed (a
record keeps its arguments alive until it is deleted), INTACT says whether charge still runs its
original code object with no sys.monitoring events left on it. tick is called about a thousand
times a second (to fill tt's table)."""
import sys
import threading
import time
import weakref

ALIVE = set()
CHARGED = {}


class Order(object):
    def __init__(self, oid, amount):
        self.oid = oid
        self.amount = amount


def charge(order, fee=1, *extra, note=None, **tags):
    if order.amount < 0:
        raise ValueError("negative amount %d" % order.amount)
    CHARGED[order.oid] = CHARGED.get(order.oid, 0) + 1
    return {"oid": order.oid, "total": order.amount + fee}


class Shop(object):
    def __init__(self):
        self.name = "main-shop"

    def sell(self, order):
        return charge(order, 2, note="shop")

    def batch(self, orders):
        def one(o):
            return charge(o)
        return [one(o) for o in orders]


CODE = charge.__code__
INTACT = True


def intact():
    mon = getattr(sys, "monitoring", None)
    events = [mon.get_local_events(t, CODE) for t in range(6)] if mon is not None else []
    return charge.__code__ is CODE and not any(events)


def _gone(oid):
    ALIVE.discard(oid)


def new_order(i, amount):
    order = Order(i, amount)
    ALIVE.add(i)
    weakref.finalize(order, _gone, i)
    return order


def worker():
    global INTACT
    shop = Shop()
    i = 0
    while True:
        i += 1
        try:
            charge(new_order(i, -1 if i % 5 == 0 else i * 10), note="n%d" % i)
        except ValueError:
            pass
        i += 1
        shop.sell(new_order(i, 7))
        i += 1
        shop.batch([new_order(i, 3)])
        INTACT = intact()
        time.sleep(0.05)


def tick(n):
    return n + 1


def ticker():   # about a thousand calls a second: enough to fill tt's table quickly
    n = 0
    while True:
        n = tick(n)
        time.sleep(0.001)


threading.Thread(target=worker, name="charger", daemon=True).start()
threading.Thread(target=ticker, name="ticker", daemon=True).start()
print("READY", flush=True)
while True:   # the main thread idles in a system call: the attach's safe point
    time.sleep(1)
