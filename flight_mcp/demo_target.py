"""The bundled demo target (the seed's order service). Runs on Python 3.8+; started by `flight-mcp demo`
and by the tests. Prints READY once its globals exist and its worker threads run."""
import sys
import threading
import time

CONFIG = {"db": {"host": "localhost", "port": 5432}, "discount": 0.1, "retries": 3}
ORDERS_SEEN = []


class OrderService:
    instances_created = 0
    region = "eu-west"

    def __init__(self, name):
        self.name = name
        self.processed = 0
        OrderService.instances_created += 1

    def process_order(self, order_id, amount=100.0):
        self.validate(order_id)
        price = self.compute_price(amount)
        self.save_to_db(order_id, price)
        self.processed += 1
        return {"order_id": order_id, "price": price}

    def validate(self, order_id):
        time.sleep(0.005)
        if order_id < 0:
            raise ValueError("negative order id %d" % order_id)

    def compute_price(self, amount):
        time.sleep(0.02)
        return self.apply_discount(amount)

    def apply_discount(self, amount):
        time.sleep(0.01)
        return round(amount * (1 - CONFIG["discount"]), 2)

    def save_to_db(self, order_id, price):
        time.sleep(0.05)
        ORDERS_SEEN.append(order_id)
        del ORDERS_SEEN[:-100]

    def nested_outer(self):
        def inner_work():
            time.sleep(0.012)
        inner_work()

    def deep_call_a(self):
        return self.deep_call_b()

    def deep_call_b(self):
        return self.deep_call_c()

    def deep_call_c(self):
        time.sleep(0.006)


def compute(n):
    time.sleep(0.01)
    helper(n)
    helper(n)
    return n * 2


def helper(n):
    time.sleep(0.005)


def worker(service, stop):
    i = 0
    while not stop.is_set():
        i += 1
        try:
            service.process_order(i if i % 7 else -i, amount=float(i % 50 + 10))
        except ValueError:
            pass
        service.nested_outer()
        service.deep_call_a()
        compute(i % 3)
        time.sleep(0.01)


def main():
    stop = threading.Event()
    service = OrderService("main-service")
    t = threading.Thread(target=worker, args=(service, stop), name="order-worker", daemon=True)
    t.start()
    print("READY", flush=True)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        stop.set()


if __name__ == "__main__":
    sys.exit(main())
