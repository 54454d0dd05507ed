"""stack's Result from hand-made facts (the agent's, the outside reader's) and its text rendering:
no process is started."""
import pytest
from pydantic import ValidationError

from flight_mcp.errors import FlightError
from flight_mcp.session.stack import StackReading
from flight_mcp.tools import stack

pytestmark = pytest.mark.timeout(30)


def frame(name, line=1, source="", **kw):
    return {"file": f"/app/{name}.py", "line": line, "name": name, "qualname": name, "source": source, **kw}


AGENT_FACTS = {
    "pid": 4242, "asyncio_imported": True, "event_loops": 2, "tasks_total": 12,
    "tasks": [{"name": "Task-1", "coro": "serve", "frames": [frame("serve", 8, "await reader.read()")]}],
    "threads": [
        {"ident": 140, "name": "MainThread", "daemon": False, "native_id": 4242, "main": True,
         "frames": [frame("<module>", 10, "main()"), frame("main", 3, "time.sleep(0.1)")]},
        {"ident": 141, "name": "idle", "daemon": True, "native_id": 4243, "main": False, "frames": []},
    ],
}


def params(**kw):
    return stack.StackParams(pid=4242, **kw)


def test_agent_args_are_the_agents_request_only():
    assert params(native=True, filepath="/tmp/x", async_tasks=True).agent_args() == {"async_tasks": True,
                                                                                           "locals": False}


def test_agent_facts_become_the_result_and_the_host_writes_the_notes():
    r = stack._from_agent(dict(AGENT_FACTS), params())
    assert r.source == "agent" and r.threads[0].frames[1].source == "time.sleep(0.1)"
    assert "no Python frames" in r.threads[1].note
    assert r.notes == ["2 asyncio event loop(s) have 12 pending task(s): the first 1 are shown; call again with "
                       "async_tasks=true (CLI: -a) for all of them."]
    assert "Async Coroutine/Task Stacks: 1 of 12 pending asyncio task(s)" in stack.render(r, False)
    text = stack.render(r, False)
    assert text.splitlines()[:4] == [
        'Traceback for thread 4242 (MainThread) tid=140 daemon=False (most recent call last):',
        '    File "/app/<module>.py", line 10, in <module>',
        "        main()",
        '    File "/app/main.py", line 3, in main',
    ]
    assert "note: 2 asyncio event loop(s)" in text


def test_tasks_without_asyncio_say_so():
    facts = dict(AGENT_FACTS, asyncio_imported=False, tasks=[], tasks_total=None, event_loops=None)
    r = stack._from_agent(facts, params(async_tasks=True))
    assert r.tasks == [] and any("asyncio is not imported" in n for n in r.notes)
    assert "Async Coroutine/Task Stacks: 0 pending asyncio task(s)" in stack.render(r, False)


def test_await_chain_ends_with_the_awaited_object():
    chain = [frame("sleeper", 5, "await asyncio.sleep(1)"),
             {"file": "", "line": None, "name": "<awaiting Future>", "qualname": "Future", "source": "<Future pending>"}]
    facts = dict(AGENT_FACTS, tasks=[{"name": "sleeper-0", "coro": "sleeper", "frames": chain}], event_loops=None)
    text = stack.render(stack._from_agent(facts, params(async_tasks=True)), False)
    assert 'Task "sleeper-0" coro=sleeper\n    File "/app/sleeper.py", line 5, in sleeper\n' \
           "        await asyncio.sleep(1)\n    <awaiting Future>\n        <Future pending>" in text


def test_an_unexpected_fact_is_an_error_not_a_silent_loss():
    bad = dict(AGENT_FACTS, threads=[dict(AGENT_FACTS["threads"][0], state="running")])
    with pytest.raises(ValidationError):
        stack._from_agent(bad, params())
    with pytest.raises(ValidationError):
        stack._from_agent(dict(AGENT_FACTS, async_note="text"), params())


OUTSIDE = {
    "pid": 4242, "notes": ["left out: 1 flight-mcp agent(s) loaded into the process and waiting for the GIL; ..."],
    "pending_agents": 1, "ms": 12.0,
    "threads": [
        {"ident": None, "name": "MainThread", "native_id": 4242, "daemon": None, "main": True, "note": None,
         "holds_gil": True, "waiting_for_gil": False, "gc_collecting": False,
         "frames": [frame("spin", 7, "while True:"),
                    {"file": "/usr/lib/libpython3.12.so", "line": None, "name": "PyObject_Call",
                     "qualname": "PyObject_Call", "kind": "native", "library": "libpython3.12.so"}]},
        {"ident": None, "name": "worker", "native_id": 4250, "daemon": None, "main": False, "frames": [],
         "note": "a native thread, not registered with the Python interpreter: native frames only",
         "holds_gil": False, "waiting_for_gil": True, "gc_collecting": None},
    ],
}


def test_fallback_reading_names_the_agents_error_first():
    why = FlightError("no_safe_point", "pid 4242 offered no safe point within 5.0s: ...")
    r = stack._from_outside(StackReading("external", OUTSIDE, agent_error=why), params(async_tasks=True))
    assert r.source == "external" and r.agent_error == "no_safe_point"
    assert r.notes[0].startswith("read from outside the process (no code ran in it) because the agent did not "
                                 "answer: pid 4242 offered no safe point")
    assert r.notes[1] == OUTSIDE["notes"][0]
    assert any("native frames are left out" in n for n in r.notes)
    assert any("thread names are the OS thread names" in n for n in r.notes)
    assert r.notes[-1] == "asyncio tasks are listed only by the in-process agent: it did not answer."
    text = stack.render(r, False)
    assert text.startswith("(read from outside the process: no code ran in it)\n"
                           'Traceback for thread 4242 (MainThread) [holds the GIL] (most recent call last):\n'
                           '    File "/app/spin.py", line 7, in spin\n        while True:\n'
                           "    (C) PyObject_Call (libpython3.12.so)\n")
    assert ('Traceback for thread 4250 (worker) [waiting for the GIL] (most recent call last):\n'
            '    (a native thread') in text


def test_pending_and_native_readings():
    r = stack._from_outside(StackReading("external", OUTSIDE, pending="waiting"), params())
    assert r.agent_error == "agent_pending" and "still waiting for the GIL" in r.notes[0]
    r = stack._from_outside(StackReading("external", OUTSIDE, pending="gone"), params())
    assert "no longer waiting" in r.notes[0]
    r = stack._from_outside(StackReading("external", OUTSIDE, named=2), params(native=True, async_tasks=True))
    assert r.agent_error is None and not any("native frames are left out" in n for n in r.notes)
    assert any(n.startswith("thread names of 2 thread(s) come from the agent") for n in r.notes)
    assert r.notes[-1].endswith("call without native=true for them.")


def test_filepath_errors_name_the_argument_in_the_callers_language(monkeypatch, tmp_path):
    from flight_mcp.tools.base import Call

    monkeypatch.setattr(stack.session_stack, "read",
                        lambda *a, **kw: StackReading("agent", dict(AGENT_FACTS, threads=list(AGENT_FACTS["threads"]))))
    p = params(filepath=str(tmp_path / "no-such-dir" / "stacks.txt"))
    with pytest.raises(FlightError) as e:  # over MCP a read-only server writes no host file
        stack.TOOL.invoke(p, Call(None))
    assert e.value.code == "read_only" and e.value.message.startswith("stack with filepath writes a file")
    with pytest.raises(FlightError) as e:
        stack.TOOL.invoke(p, Call(None, on_cli=True))
    assert e.value.code == "write_failed" and e.value.arg == "filepath" and "(-f/--filepath)" in e.value.message
    p = params(filepath=str(tmp_path / "stacks.txt"))
    r = stack.TOOL.invoke(p, Call(None, on_cli=True))
    assert r.notes[-1] == f"Write stack to {tmp_path / 'stacks.txt'} successfully!"
    assert (tmp_path / "stacks.txt").read_text().startswith('Traceback for thread 4242 (MainThread) tid=140')
