"""Target for trace/watch tests: recursion, a generator, classmethod/staticmethod, a decorated
function and an asyncio coroutine, each called in a loop by its own thread. Python 3.8+."""
import asyncio
import functools
import threading
import time


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def numbers(n):
    for i in range(n):
        time.sleep(0.001)
        yield i
    return n


class Pricing:
    @classmethod
    def rate(cls, amount):
        time.sleep(0.002)
        return amount * 0.9

    @staticmethod
    def tax(amount, *, percent=20):
        time.sleep(0.001)
        return amount * percent / 100


def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


@logged
def decorated(x, y=1):
    time.sleep(0.001)
    return x + y


def tiny(i):
    return i


def chatty():
    """1,200 small calls: more than a trace shows of one invocation."""
    return sum(tiny(i) for i in range(1200))


alias = decorated
rate = Pricing.rate   # a bound classmethod kept elsewhere: instrumenting must still reach it


async def fetch(i):
    await asyncio.sleep(0.005)
    time.sleep(0.001)
    return i * 10


def sync_loop():
    while True:
        fib(6)
        sum(numbers(3))
        rate(100.0)
        Pricing.tax(50.0, percent=10)
        alias(1, y=2)
        chatty()
        time.sleep(0.01)


async def async_main():
    i = 0
    while True:
        i += 1
        await fetch(i)
        await asyncio.sleep(0.005)


def main():
    threading.Thread(target=sync_loop, name="sync-loop", daemon=True).start()
    threading.Thread(target=lambda: asyncio.run(async_main()), name="async-loop", daemon=True).start()
    print("READY", flush=True)
    while True:
        time.sleep(0.5)


if __name__ == "__main__":
    main()
