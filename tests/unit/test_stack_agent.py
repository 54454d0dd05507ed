"""The agent's stack command called in this test interpreter, on its own threads and tasks: the facts
it sends fit the host's Result models as they are (no process is started)."""
import asyncio
import threading

import pytest

from flight_mcp.agent import cmd_stack
from flight_mcp.tools import stack

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def worker():
    stop = threading.Event()
    ready = threading.Event()

    def park_here():
        ready.set()
        stop.wait()  # PARKED

    t = threading.Thread(target=park_here, name="parked-worker", daemon=True)
    t.start()
    ready.wait(5)
    yield t
    stop.set()
    t.join(5)


def test_threads_with_names_ids_and_frames(worker):
    p = stack.StackParams(pid=1)
    facts = cmd_stack.stack(p.agent_args(), None)
    result = stack._from_agent(facts, p)  # extra="forbid": every fact has its field
    assert result.tasks is None and result.asyncio_imported is not None
    me = [t for t in result.threads if t.name == "parked-worker"]
    assert len(me) == 1 and me[0].daemon is True and me[0].native_id == worker.native_id
    assert me[0].ident == worker.ident and not me[0].main
    names = [f.name for f in me[0].frames]
    assert "park_here" in names and names.index("park_here") < len(names) - 1  # outermost first
    assert any(f.source == "stop.wait()  # PARKED" for f in me[0].frames)
    main = [t for t in result.threads if t.main]
    assert len(main) == 1 and main[0].name == "MainThread" and result.threads[0] is main[0]


def test_the_agent_keeps_no_defaults():
    with pytest.raises(KeyError):
        cmd_stack.stack({}, None)


def test_tasks_and_their_await_chains():
    started = threading.Event()
    box = {}

    async def sleeper():
        await asyncio.sleep(3600)

    def run_loop():
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        task = loop.create_task(sleeper(), name="sleeper-x")
        loop.call_soon(started.set)
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    t = threading.Thread(target=run_loop, daemon=True)
    t.start()
    assert started.wait(5)
    try:
        p = stack.StackParams(pid=1, async_tasks=True)
        result = stack._from_agent(cmd_stack.stack(p.agent_args(), None), p)
        task = [x for x in result.tasks if x.name == "sleeper-x"][0]
        assert task.coro.endswith("sleeper") and [f.name for f in task.frames][0] == "sleeper"
        assert task.frames[-1].name == "<awaiting Future>" and task.frames[-1].line is None
        assert "<awaiting Future>" in stack.render(result, False)
        p = stack.StackParams(pid=1)
        result = stack._from_agent(cmd_stack.stack(p.agent_args(), None), p)
        # without async_tasks, the pending tasks are shown all the same (an event loop's thread shows only select)
        assert result.event_loops >= 1 and result.tasks and any("pending task(s)" in n for n in result.notes)
    finally:
        loop = box["loop"]
        loop.call_soon_threadsafe(lambda: [x.cancel() for x in asyncio.all_tasks(loop)])
        t.join(5)
