"""`stack -a` on every Python 3.8-3.13: each asyncio task with the coroutine chain it awaits."""
import json

import pytest

from .conftest import flight_cli, version_params

pytestmark = pytest.mark.timeout(120)


def chain(task):
    return [f["name"] for f in task["frames"]]


@pytest.mark.parametrize("version", version_params())
def test_stack_async_shows_every_task_and_its_await_chain(spawn, version):
    t = spawn(version, "async_tasks")
    r = flight_cli(str(t.pid), "--cmd", "stack -a", "--json")
    assert r.returncode == 0, r.stderr
    tasks = {task["name"]: task for task in json.loads(r.stdout)["tasks"]}
    assert set(tasks) >= {"sleeper-0", "sleeper-1", "sleeper-2", "future-waiter", "event-waiter"}, set(tasks)
    for i in range(3):
        sleeper = tasks[f"sleeper-{i}"]
        assert sleeper["coro"] == "outer_job"
        # outer_job -> middle -> leaf_sleep -> asyncio.sleep -> the Future the sleep waits for
        assert chain(sleeper)[:4] == ["outer_job", "middle", "leaf_sleep", "sleep"], chain(sleeper)
        assert chain(sleeper)[-1] == "<awaiting Future>", chain(sleeper)
        assert sleeper["frames"][2]["source"] == "await asyncio.sleep(3600 + i)"
    assert chain(tasks["future-waiter"]) == ["wait_future", "<awaiting Future>"]
    assert chain(tasks["event-waiter"]) == ["wait_event", "wait", "<awaiting Future>"]
    assert tasks["event-waiter"]["frames"][1]["file"].endswith("asyncio/locks.py")

    # who keeps the future each export awaits; the four wait at one place and read as one stack
    assert [tasks["export-%d" % i]["waiter_held_in"] for i in range(4)] == ["Exports._waiters[*]"] * 4
    text = flight_cli(str(t.pid), "--cmd", "stack -a", "--no-color").stdout
    assert 'Task "event-waiter" coro=wait_event' in text and "await ev.wait()" in text
    assert text.count("coro=Exports.submit") == 1, text
    assert "and 3 more task(s) waiting at the same place: export-1, export-2, export-3" in text, text
    assert "the awaited future is kept in Exports._waiters[*]" in text, text
    # ... and which code of the awaiting object's class uses that field (where it should be set)
    assert "code using it: Exports.__init__ (line 30), Exports.submit (line 34)" in text, text
    assert tasks["export-0"]["waiter_users"] == [{"name": "Exports.__init__", "lines": [30]},
                                                 {"name": "Exports.submit", "lines": [34]}]

    # plain stack: the event loop's thread shows only select(), so the tasks come along (the first 10)
    plain = flight_cli(str(t.pid), "--cmd", "stack", "--json")
    result = json.loads(plain.stdout)
    assert result["tasks_total"] == len(tasks) and [x["name"] for x in result["tasks"]] == sorted(tasks)[:10]
    assert any(f"have {len(tasks)} pending task(s)" in n for n in result["notes"]), result["notes"]
    assert t.alive()


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))
def test_stack_async_without_asyncio_says_so(spawn, version):
    t = spawn(version, "idle")
    r = flight_cli(str(t.pid), "--cmd", "stack -a", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["tasks"] == []
    assert any("asyncio is not imported" in n for n in result["notes"]), result["notes"]


HOSTILE_TASKS = r'''
import asyncio, sys

TOUCHED = []


class Sneaky(asyncio.Task):
    """A task class of the application whose methods and repr have side effects."""
    def get_name(self):
        TOUCHED.append("get_name")
        return "sneaky"

    def done(self):
        TOUCHED.append("done")
        return super().done()

    def get_coro(self):
        TOUCHED.append("get_coro")
        return super().get_coro()

    def __repr__(self):
        TOUCHED.append("task repr")
        return "sneaky"


class Awaitable:
    """Awaited by a coroutine: its attribute lookups and repr have side effects."""
    def __await__(self):
        return (yield from asyncio.sleep(3600).__await__())

    def __getattr__(self, name):
        TOUCHED.append("getattr " + name)
        raise AttributeError(name)

    def __repr__(self):
        TOUCHED.append("awaitable repr")
        return "awaitable"


async def waits():
    await Awaitable()


async def main():
    loop = asyncio.get_running_loop()
    loop.set_task_factory(lambda loop, coro: Sneaky(coro, loop=loop))
    loop.create_task(waits())
    await asyncio.sleep(0.1)
    print("READY", flush=True)
    while True:
        await asyncio.sleep(0.05)

asyncio.run(main())
'''


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))
def test_stack_async_runs_no_method_of_the_applications_tasks_or_awaitables(spawn, version):
    t = spawn(version, HOSTILE_TASKS)
    r = flight_cli(str(t.pid), "--json", "--cmd", "stack -a")
    assert r.returncode == 0, r.stderr
    names = {task["coro"]: task for task in json.loads(r.stdout)["tasks"]}
    assert "waits" in names, names
    r = flight_cli(str(t.pid), "--json", "--cmd", "getglobal __main__ TOUCHED")
    assert r.returncode == 0 and json.loads(r.stdout)["view"]["repr"] == "[]", r.stdout
    assert t.alive()
