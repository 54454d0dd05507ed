"""An asyncio program with several tasks: nested coroutines down to sleeps, one awaiting a Future,
one awaiting an Event."""
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


async def main():
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    ev = asyncio.Event()
    tasks = [loop.create_task(outer_job(i), name="sleeper-%d" % i) for i in range(3)]
    tasks.append(loop.create_task(wait_future(fut), name="future-waiter"))
    tasks.append(loop.create_task(wait_event(ev), name="event-waiter"))
    await asyncio.sleep(0.05)
    print("READY", flush=True)
    await asyncio.gather(*tasks)


asyncio.run(main())
