"""An asyncio program with several tasks: nested coroutines down to sleeps, one awaiting a Future,
one awaiting an Event, four awaiting futures an object keeps (Exports._waiters)."""
import asyncio


async def leaf_sleep(i):
    await asyncio.sleep(3600 + i)


async def middle(i):
    await leaf_sleep(i)


async def outer_job(i):
    await middle(i)


async def wait_future(fut):
    return await fut


async def wait_event(ev):
    await ev.wait()


class Exports:
    """Keeps the futures its callers await (whoever should set them would work here)."""

    def __init__(self):
        self._waiters = {}

    async def submit(self, key):
        fut = asyncio.get_running_loop().create_future()
        self._waiters[key] = fut
        return await fut


EXPORTS = Exports()


async def main():
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    ev = asyncio.Event()
    tasks = [loop.create_task(outer_job(i), name="sleeper-%d" % i) for i in range(3)]
    tasks.append(loop.create_task(wait_future(fut), name="future-waiter"))
    tasks.append(loop.create_task(wait_event(ev), name="event-waiter"))
    tasks += [loop.create_task(EXPORTS.submit(i), name="export-%d" % i) for i in range(4)]
    await asyncio.sleep(0.05)
    print("READY", flush=True)
    await asyncio.gather(*tasks)


asyncio.run(main())
