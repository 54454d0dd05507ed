"""Target for the exception/return-line tests: a sub-call that raises and is caught higher up
(trace shows where it raised), and a function that returns or raises on known lines (watch).
Lines named in tests/test_exc_lines.py: keep them where they are."""
import threading
import time


class Inventory:
    def __init__(self):
        self.stock = {"apple": 3}

    def reserve(self, sku):
        count = self.stock[sku]            # line 13: KeyError for an unknown sku
        return count


class Shop:
    def __init__(self):
        self.inventory = Inventory()

    def order(self, sku):
        try:
            self.inventory.reserve(sku)    # line 23
        except KeyError:
            return "unknown"
        time.sleep(0.001)
        return "ok"

    def checkout(self, n):
        if n % 2:
            raise ValueError("odd total")  # line 31
        total = n * 2
        return total                       # line 33


def loop():
    shop = Shop()
    i = 0
    while True:
        shop.order("pear" if i % 2 else "apple")
        try:
            shop.checkout(i)
        except ValueError:
            pass
        i += 1
        time.sleep(0.005)


threading.Thread(target=loop, name="shop-worker", daemon=True).start()
print("READY", flush=True)
while True:
    time.sleep(1)
