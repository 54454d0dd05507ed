"""The decisions behind gil_wait (issue 16), without a process: when a request counts as stalled, when the
holder is read from outside (once, only when overdue), what a Result then carries and how it reads.

The client side runs against a fake agent on a socketpair speaking the real protocol (acks, answers)."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from flight_mcp.attach import client as client_mod
from flight_mcp.attach.client import AgentClient
from flight_mcp.models import Frame, GilHolder, GilWait
from flight_mcp.session import gil
from flight_mcp.session import stack as session_stack
from flight_mcp.tools import gil_wait, processes
from flight_mcp.tools.base import Call, Params, Tool
from flight_mcp.tools.stack import StackParams, _from_outside
from flight_mcp.models import Fact

WORKER = 4242


def _threads(holder_tid=WORKER):
    return [
        {"name": "python3", "native_id": 100, "main": True, "holds_gil": holder_tid == 100, "frames": [
            {"file": "app.py", "line": 3, "name": "<module>", "kind": "python"},
            {"file": "libc.so.6", "line": None, "name": "clock_nanosleep", "kind": "native"}]},
        {"name": "python3", "native_id": WORKER, "main": False, "holds_gil": holder_tid == WORKER, "frames": [
            {"file": "app.py", "line": 10, "name": "worker", "kind": "python"},
            {"file": "app.py", "line": 12, "name": "backtrack", "kind": "python"},
            {"file": "sre_lib.h", "line": 600, "name": "sre_ucs1_match", "kind": "native"}]},
    ]


class FakeRead:
    """external_stack.read's stand-in: counts calls, answers _threads()."""

    def __init__(self, holder_tid=WORKER):
        self.calls, self.holder_tid = [], holder_tid

    def __call__(self, pid, *, native, timeout, stop=True):
        self.calls.append({"pid": pid, "native": native, "stop": stop})
        return {"pid": pid, "threads": _threads(self.holder_tid), "notes": [], "pending_agents": 0, "ms": 1.0}


# -- the watch of one request -------------------------------------------------------------------------------

def test_a_fast_answer_reads_nothing_and_records_nothing():
    read, token = FakeRead(), gil.collect()
    w = gil.StallWatch(7, "getglobal", {}, read=read)
    w.sent(time.monotonic())
    w.started(0.002)
    w.finished(0.003)
    assert gil.collected(token) == [] and read.calls == []


def test_an_overdue_request_reads_the_holder_once_without_stopping_and_names_it():
    read, token = FakeRead(), gil.collect()
    names = {}
    w = gil.StallWatch(7, "getglobal", names, read=read)
    w.sent(time.monotonic())
    w.overdue()
    w.overdue()  # called on every poll while overdue: still one reading
    names[WORKER] = "regex-worker"  # the late ack names the threads before the answer is taken
    w.finished(2.5)
    [wait] = gil.collected(token)
    assert read.calls == [{"pid": 7, "native": False, "stop": False}]
    assert wait["waited_ms"] == 2500.0 and wait["request"] == "getglobal"
    assert wait["holder"]["native_id"] == WORKER and wait["holder"]["name"] == "regex-worker"
    assert [f["name"] for f in wait["holder"]["frames"]] == ["worker", "backtrack"]  # Python frames only
    assert wait["seen_after_ms"] is not None


def test_a_wait_under_the_budget_is_not_reported_even_if_it_was_read():
    read, token = FakeRead(), gil.collect()
    w = gil.StallWatch(7, "watch", {}, read=read)
    w.sent(time.monotonic())
    w.overdue()  # a long command whose ack was late, but the request itself started soon enough
    w.finished(client_mod.STALL_BUDGET_S * 0.9)
    assert gil.collected(token) == []


def test_no_holder_when_the_reading_found_nobody_holding_the_gil():
    token = gil.collect()
    w = gil.StallWatch(7, "stack", {}, read=FakeRead(holder_tid=None))
    w.sent(time.monotonic())
    w.overdue()
    w.finished(1.0)
    [wait] = gil.collected(token)
    assert wait["holder"] is None and wait["seen_after_ms"] is None


def test_a_new_request_on_the_same_watch_reads_again():
    """A new connection makes two requests under one watch (its facts, then the command)."""
    read, token = FakeRead(), gil.collect()
    w = gil.StallWatch(7, "getglobal", {}, read=read)
    for _ in range(2):
        w.sent(time.monotonic())
        w.overdue()
        w.finished(1.0)
    assert len(read.calls) == 2 and len(gil.collected(token)) == 2


def test_summary_keeps_the_longest_wait_and_counts_them():
    assert gil.summary([]) is None
    s = gil.summary([{"waited_ms": 600.0, "request": "info"}, {"waited_ms": 2100.0, "request": "getglobal"}])
    assert s == {"waited_ms": 2100.0, "request": "getglobal", "requests": 2}


def test_record_outside_a_tool_call_goes_nowhere():
    assert not gil.watching()
    gil.record({"waited_ms": 1.0})  # no error, nothing kept


# -- the stack request's watch ------------------------------------------------------------------------------

def test_stack_falls_back_only_when_sent_and_not_started_within_the_budget():
    w = session_stack._Watch()
    now = time.monotonic()
    assert not w.stalled(now + 10)  # not sent yet (attaching): the attach has its own deadline
    w.sent(now)
    assert not w.stalled(now + client_mod.STALL_BUDGET_S * 0.5)
    assert w.stalled(now + client_mod.STALL_BUDGET_S)
    w.started(0.01)
    assert not w.stalled(now + 10)  # started: a long stack is just long
    w.sent(now + 1)  # the command after the connection's facts: counted afresh
    assert w.queued is None and w.stalled(now + 1 + client_mod.STALL_BUDGET_S)


# -- the client, against a fake agent speaking the protocol -------------------------------------------------

class FakeAgent:
    """The other end of a socketpair: answers each request after `delay` seconds, acking it (as the next
    reader does) only when `ack`."""

    def __init__(self, sock, *, delay, ack, queued):
        self.sock, self.delay, self.ack, self.queued = sock, delay, ack, queued
        self.requests = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        f = self.sock.makefile("rb")
        for line in f:
            msg = json.loads(line)
            self.requests.append(msg)
            started = {"queued_s": self.queued, "threads": {str(WORKER): "regex-worker"}}
            if self.ack:
                self.sock.sendall((json.dumps({"id": msg["id"], "started": started}) + "\n").encode())
            time.sleep(self.delay)
            reply = {"id": msg["id"], "result": {"ok": True}, "started": started, "replied": time.monotonic()}
            self.sock.sendall((json.dumps(reply) + "\n").encode())


class Recorder:
    def __init__(self):
        self.names, self.calls = {}, []

    def sent(self, at): self.calls.append("sent")
    def started(self, q): self.calls.append(("started", q))
    def overdue(self): self.calls.append("overdue")
    def finished(self, w): self.calls.append(("finished", round(w, 1)))
    def gave_up(self, w): self.calls.append(("gave_up", round(w, 1)))


def _client(monkeypatch, **agent):
    monkeypatch.setattr(client_mod, "STALL_BUDGET_S", 0.1)
    ours, theirs = socket.socketpair()
    monkeypatch.setattr(socket.socket, "connect", lambda self, path: None)  # AgentClient dials a path
    c = AgentClient(7, "unused")
    c.sock.close()
    c.sock = ours
    return c, FakeAgent(theirs, **agent)


def test_client_sends_its_clock_and_reports_an_acked_stall(monkeypatch):
    c, agent = _client(monkeypatch, delay=0.0, ack=False, queued=2.0)  # waited 2 s before Python ran
    w = Recorder()
    assert c.request("getglobal", {"x": 1}, timeout=5, watch=w) == {"ok": True}
    [req] = agent.requests
    assert type(req["sent"]) is float and req["slow_s"] == 0.1 and req["args"] == {"x": 1}
    assert w.calls[0] == "sent" and ("started", 2.0) in w.calls and w.calls[-1][0] == "finished"
    assert w.calls[-1][1] >= 2.0
    assert "overdue" not in w.calls  # the answer came at once
    assert c.thread_names == {WORKER: "regex-worker"}
    assert w.names is c.thread_names


def test_client_calls_overdue_when_nothing_came_within_the_budget(monkeypatch):
    c, _ = _client(monkeypatch, delay=0.4, ack=False, queued=0.35)
    w = Recorder()
    c.request("getglobal", {}, timeout=5, watch=w)
    assert w.calls.count("overdue") >= 1 and w.calls.index("overdue") < w.calls.index(("started", 0.35))


def test_client_does_not_call_overdue_once_the_ack_came(monkeypatch):
    c, _ = _client(monkeypatch, delay=0.4, ack=True, queued=0.001)  # a long command that started at once
    w = Recorder()
    c.request("watch", {}, timeout=5, watch=w)
    assert "overdue" not in w.calls and w.calls.count(("started", 0.001)) == 1


# -- the Result and its note ----------------------------------------------------------------------------------

class EchoParams(Params):
    pass


class EchoResult(Fact):
    value: int


def _tool(run):
    return Tool(name="echo", params=EchoParams, result=EchoResult, run=run, render=lambda r, c: f"value {r.value}",
                description="test")


WAIT = {"waited_ms": 2100.0, "request": "getglobal", "seen_after_ms": 510.0,
        "holder": {"native_id": WORKER, "name": "regex-worker",
                   "frames": [{"file": "app.py", "line": 12, "name": "backtrack", "kind": "python"}]}}


def test_every_result_gets_gil_wait_none_and_an_unchanged_text_without_a_wait():
    tool = _tool(lambda p, call: EchoResult(value=3))
    r = tool.invoke(EchoParams(pid=1), Call(None))
    assert r.gil_wait is None and r.model_dump()["gil_wait"] is None
    assert tool.text(r, False) == "value 3"
    assert "gil_wait" in tool.result.model_json_schema()["properties"]


def test_a_wait_recorded_during_run_becomes_the_results_fact_and_first_line():
    def run(p, call):
        gil.record(dict(WAIT))
        gil.record({"waited_ms": 600.0, "request": "info", "holder": None, "seen_after_ms": None})
        return EchoResult(value=3)

    tool = _tool(run)
    r = tool.invoke(EchoParams(pid=1), Call(None))
    assert r.gil_wait.waited_ms == 2100.0 and r.gil_wait.requests == 2 and r.value == 3
    first, second = tool.text(r, False).splitlines()
    assert first == ("note: this answer waited 2.10s for the GIL (`getglobal` could not run in the agent) (2 requests "
                     "of this call waited; the longest is shown): thread 4242 (regex-worker) held it, read from outside "
                     "0.51s into the wait, in backtrack (app.py:12).")
    assert second == "value 3"
    assert not gil.watching()  # the call's collection ended with it


def test_waits_do_not_leak_into_the_next_call_after_an_error():
    def fails(p, call):
        gil.record(dict(WAIT))
        raise KeyError("x")

    with pytest.raises(Exception):
        _tool(fails).invoke(EchoParams(pid=1), Call(None))
    r = _tool(lambda p, call: EchoResult(value=1)).invoke(EchoParams(pid=1), Call(None))
    assert r.gil_wait is None and not gil.watching()


def test_the_line_while_the_request_still_waits_and_without_a_holder():
    still = GilWait(waited_ms=900.0, request="stack", holder=GilHolder(native_id=5, name="w"), seen_after_ms=500.0,
                    still_waiting=True)
    assert gil_wait.line(still) == ("note: GIL held: `stack` had waited 0.90s for the GIL in the agent and still "
                                    "waited when this answer was given: thread 5 (w) holds it, read from outside "
                                    "0.50s into the wait.")
    assert gil_wait.line(GilWait(waited_ms=700.0, request="watch")).endswith(
        "; the thread holding it was not read.")


# -- stack's reading during a stall --------------------------------------------------------------------------

def test_stack_from_outside_during_a_stall_keeps_native_frames_of_the_holder_only():
    facts = {"pid": 7, "threads": _threads(), "notes": [], "pending_agents": 0, "ms": 1.0}
    stall = {"waited_ms": 900.0, "request": "stack", "seen_after_ms": 510.0, "ended": False,
             "holder": gil.holder(facts["threads"], {})}
    reading = session_stack.StackReading("external", facts, stall=stall)
    r = _from_outside(reading, StackParams(pid=7))
    assert r.agent_error == "gil_held"
    main, worker = r.threads
    assert [f.kind for f in main.frames] == ["python"]
    assert [f.kind for f in worker.frames] == ["python", "python", "native"]
    assert r.notes[0].startswith("read from outside the process (no code ran in it) because the GIL was held: "
                                 "the agent's request had waited 0.51s")
    assert "thread 4242 (python3) holds it" in r.notes[0] and "set aside" not in r.notes[0]
    assert any("native frames are shown for the thread holding the GIL only" in n for n in r.notes)


def test_stack_from_outside_after_the_stall_ended_says_the_answer_was_set_aside():
    facts = {"pid": 7, "threads": _threads(), "notes": [], "pending_agents": 0, "ms": 1.0}
    stall = {"waited_ms": 2300.0, "request": "stack", "seen_after_ms": 510.0, "ended": True,
             "holder": gil.holder(facts["threads"], {})}
    r = _from_outside(session_stack.StackReading("external", facts, stall=stall), StackParams(pid=7, native=True))
    assert "The agent got the GIL 2.30s after the request" in r.notes[0]
    assert [f.kind for f in r.threads[0].frames] == ["python", "native"]  # native=true: everyone's


# -- list_processes ------------------------------------------------------------------------------------------

def _proc(**kw):
    base = dict(pid=10, ppid=1, user="u", python="3.12", command="python app.py", agent_attached=True,
                parent_is_python=False, rss_mb=1.0, cpu_percent=100.0, threads=3, state="running", uptime_s=5.0)
    return processes.ProcessInfo(**dict(base, **kw))


def test_list_processes_marks_a_stalled_process_with_its_holder():
    holder = GilHolder(native_id=WORKER, name="sort-worker",
                       frames=[Frame(file="app.py", line=20, name="sort_orders")])
    text = processes.render(processes.ListResult(processes=[_proc(gil_stalled=True, gil_holder=holder),
                                                            _proc(pid=11, gil_stalled=False)]), False)
    lines = text.splitlines()
    assert lines[2].strip() == "! GIL stalled now: thread 4242 (sort-worker) holds it, in sort_orders (app.py:20)"
    assert len(lines) == 4 and "GIL" not in lines[3]
    assert processes._stall_facts(None) == {}
    assert processes._stall_facts({"stalled": False}) == {"gil_stalled": False, "gil_holder": None}


class ClsResult(Fact):
    cls: str  # vmtool's Result has a field named like model_construct's first parameter


def test_a_result_with_a_field_named_cls_gets_its_wait_too():
    def run(p, call):
        gil.record(dict(WAIT))
        return ClsResult(cls="Box")

    tool = Tool(name="cls", params=EchoParams, result=ClsResult, run=run, render=lambda r, c: r.cls, description="t")
    r = tool.invoke(EchoParams(pid=1), Call(None))
    assert r.cls == "Box" and r.gil_wait.request == "getglobal" and isinstance(r, ClsResult)
    assert r.model_dump()["gil_wait"]["holder"]["name"] == "regex-worker"


def test_stack_watch_remembers_a_stall_of_the_connections_first_request():
    """A new connection's facts waited out the stall, then stack ran at once: the stall still counts (the
    agent's answer shows the threads after it)."""
    w = session_stack._Watch()
    w.sent(0.0)
    w.started(2.4)
    w.finished(2.4)
    w.sent(2.5)
    w.started(0.001)
    assert gil.is_stall(w.longest)
    late_ack_only = session_stack._Watch()
    late_ack_only.sent(0.0)
    late_ack_only.started(0.002)
    assert not gil.is_stall(late_ack_only.longest)


def test_an_error_after_a_wait_says_it_waited():
    from flight_mcp.errors import FlightError

    def run(p, call):
        gil.record(dict(WAIT))
        raise FlightError("agent_failed", "no global `x` in __main__.")

    with pytest.raises(FlightError) as e:
        _tool(run).invoke(EchoParams(pid=1), Call(None))
    first, second = e.value.message.splitlines()
    assert first == "no global `x` in __main__." and second.startswith("note: this answer waited 2.10s for the GIL")
    assert e.value.code == "agent_failed" and not gil.watching()


def test_a_request_that_never_started_records_the_wait_so_far_with_its_holder():
    read, token = FakeRead(), gil.collect()
    w = gil.StallWatch(7, "getglobal", {WORKER: "regex-worker"}, read=read)
    w.sent(time.monotonic())
    w.overdue()
    w.gave_up(13.0)
    [wait] = gil.collected(token)
    assert wait["still_waiting"] is True and wait["waited_ms"] == 13000.0
    assert wait["holder"]["name"] == "regex-worker"
