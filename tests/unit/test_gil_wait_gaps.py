"""Stalls during a long capture (issue 16): the agent's capture loop measures the gaps of its own thread
(capture.GilGaps), beats while it has nothing to say, and the host reads the holder from outside once
when beats stop (client -> StallWatch.quiet -> gil.held_during); the stall of a first attach (an agent
loaded and not started) is seen by stack's watch. No process is started: a fake agent on a socketpair."""
from __future__ import annotations

import json
import socket
import threading
import time

from flight_mcp.agent import capture
from flight_mcp.attach import client as client_mod
from flight_mcp.attach.client import AgentClient
from flight_mcp.models import GilHolder
from flight_mcp.session import gil
from flight_mcp.session import stack as session_stack
from flight_mcp.tools import capture_common
from flight_mcp.tools.stack import StackParams, _from_outside

from .test_gil_wait_logic import WORKER, FakeRead, _threads


class Ctx:
    """A command's context: its sleep ends after `timeout`, or `woken_after` seconds in (a capture woke it)."""

    def __init__(self, slow_s, woken_after=None):
        self.slow_s, self.events, self.beats = slow_s, [], 0
        self.woken_after, self.woken_at = woken_after, None

    def sleep(self, timeout):
        if self.woken_after is not None and self.woken_after < timeout:
            time.sleep(self.woken_after)
            self.woken_at = time.monotonic()
            return True
        time.sleep(max(timeout, 0))
        return False

    def emit(self, event):
        self.events.append(event)

    def beat(self):
        self.beats += 1


def test_a_round_kept_off_the_cpu_past_the_budget_is_a_gap_sent_at_once_and_kept():
    ctx = Ctx(0.5)
    gaps = capture.GilGaps(ctx)
    gaps.sleep(0.05)
    assert gaps.check() is None  # ran as soon as it was due
    gaps.sleep(0.05)
    due = time.time()
    time.sleep(0.8)  # due to run, and not running (as when another thread holds the GIL)
    gap = gaps.check()
    assert gap is not None and gap["ms"] >= 750, gap
    assert due - 0.2 <= gap["at"] <= due + 0.2, (gap, due)  # when the thread was due to run again
    assert gaps.gaps == [gap] and ctx.events == [{"gil_gap": gap}]
    assert gaps.check() is None  # a round is checked once


def test_the_round_that_ends_a_loop_is_checked_when_the_next_sleep_begins_or_at_the_end():
    ctx = Ctx(0.3)
    gaps = capture.GilGaps(ctx)
    gaps.sleep(0.01)
    time.sleep(0.5)
    gaps.sleep(0.01)  # checks the round before
    assert len(ctx.events) == 1
    time.sleep(0.5)
    gaps.check()      # the loop ended: its last round
    assert len(gaps.gaps) == 2


def test_a_capture_that_wakes_the_thread_makes_it_due_at_once():
    # the stall that begins as the capture wakes the loop: asked 10 s, woken after 50 ms, then kept off
    ctx = Ctx(0.5, woken_after=0.05)
    gaps = capture.GilGaps(ctx)
    gaps.sleep(10)
    time.sleep(0.8)
    gap = gaps.check()
    assert gap is not None and gap["ms"] >= 750, gap


def test_work_on_the_cpu_is_not_a_gap():
    ctx = Ctx(2.0)
    gaps = capture.GilGaps(ctx)
    gaps.sleep(0.01)
    cpu = time.thread_time()
    while time.thread_time() - cpu < 0.2:  # the round's own work (rendering what it reports)
        pass
    assert gaps.check() is None


def test_gaps_kept_are_bounded_and_the_rest_counted():
    ctx = Ctx(0.001)
    gaps = capture.GilGaps(ctx)
    for _ in range(capture.GilGaps.KEPT + 3):
        gaps.sleep(0)
        time.sleep(0.01)
    gaps.check()
    assert len(gaps.gaps) == capture.GilGaps.KEPT and gaps.not_kept == 3
    assert len(ctx.events) == capture.GilGaps.KEPT + 3


def test_a_host_that_does_not_measure_gets_no_gaps_and_no_beats():
    ctx = Ctx(None)
    gaps = capture.GilGaps(ctx)
    gaps.sleep(0.01)
    time.sleep(0.1)
    assert gaps.check() is None
    gaps.beat()
    assert gaps.gaps == [] and ctx.events == [] and ctx.beats == 0
    ctx = Ctx(0.5)
    capture.GilGaps(ctx).beat()
    assert ctx.beats == 1


# -- the host hears beats stop ---------------------------------------------------------------------------------

class BeatingAgent:
    """Acks at once, beats every 50 ms, goes quiet for `silence` seconds, beats again, then answers."""

    def __init__(self, sock, silence, beat=True):
        self.sock, self.silence, self.beat = sock, silence, beat
        threading.Thread(target=self.serve, daemon=True).start()

    def send(self, msg):
        self.sock.sendall((json.dumps(msg) + "\n").encode())

    def serve(self):
        msg = json.loads(self.sock.makefile("rb").readline())
        rid = msg["id"]
        self.send({"id": rid, "started": {"queued_s": 0.001}})
        kind = "beat" if self.beat else "event"
        for _ in range(4):
            self.send({"id": rid, kind: 1} if self.beat else {"id": rid, "event": {"n": 1}})
            time.sleep(0.05)
        time.sleep(self.silence)
        for _ in range(2):
            self.send({"id": rid, kind: 1} if self.beat else {"id": rid, "event": {"n": 1}})
            time.sleep(0.05)
        self.send({"id": rid, "result": {"ok": True}, "replied": time.monotonic()})


class Recorder:
    def __init__(self):
        self.names, self.calls = {}, []

    def sent(self, at): self.calls.append("sent")
    def started(self, q): self.calls.append("started")
    def overdue(self): self.calls.append("overdue")
    def quiet(self): self.calls.append("quiet")
    def finished(self, w): self.calls.append("finished")
    def gave_up(self, w): self.calls.append("gave_up")


def _client(monkeypatch, **agent):
    monkeypatch.setattr(client_mod, "STALL_BUDGET_S", 0.1)
    monkeypatch.setattr(client_mod, "BEAT_EVERY_S", 0.05)
    ours, theirs = socket.socketpair()
    monkeypatch.setattr(socket.socket, "connect", lambda self, path: None)
    c = AgentClient(7, "unused")
    c.sock.close()
    c.sock = ours
    BeatingAgent(theirs, **agent)
    return c


def test_beats_that_stop_make_the_host_look_once_per_silence(monkeypatch):
    c = _client(monkeypatch, silence=0.6)
    w = Recorder()
    events = []
    assert c.request("watch", {}, timeout=5, watch=w, on_event=events.append) == {"ok": True}
    assert w.calls.count("quiet") == 1 and w.calls.index("quiet") < w.calls.index("finished")
    assert events == []  # beats are the client's, never the tool's events


def test_no_silence_no_look(monkeypatch):
    c = _client(monkeypatch, silence=0.0)
    w = Recorder()
    c.request("watch", {}, timeout=5, watch=w)
    assert "quiet" not in w.calls


def test_a_command_that_never_beats_is_never_thought_quiet(monkeypatch):
    c = _client(monkeypatch, silence=0.6, beat=False)  # progress events with long pauses (another tool)
    w = Recorder()
    events = []
    c.request("mem", {}, timeout=5, watch=w, on_event=events.append)
    assert "quiet" not in w.calls and len(events) == 6


def test_the_holder_read_when_quiet_is_the_calls_held_during_not_a_wait():
    read, token = FakeRead(), gil.collect()
    w = gil.StallWatch(7, "watch", {WORKER: "regex-worker"}, read=read)
    w.sent(time.monotonic())
    w.started(0.001)
    w.quiet()
    w.quiet()  # once per call
    w.finished(0.002)
    held = gil.held_during()
    waits = gil.collected(token)
    assert len(read.calls) == 1 and read.calls[0]["stop"] is False
    assert held["name"] == "regex-worker" and held["frames"][-1]["name"] == "backtrack"
    assert waits == [] and gil.summary(waits) is None  # the command itself did not wait


def test_a_tool_call_without_silence_holds_nobody_during():
    token = gil.collect()
    assert gil.held_during() is None
    gil.collected(token)
    assert gil.held_during() is None  # outside a call


# -- the capture's note ------------------------------------------------------------------------------------------

def _summary(**kw):
    base = dict(target="__main__.mark", kind="function", file="app.py", line=3, mechanism="sys.monitoring",
                started=1.0, duration_s=7.0, seen=2, matched=2, captured=2, limit=100, stopped="deadline")
    return capture_common.Summary(**dict(base, **kw))


def test_summary_line_unchanged_without_gaps():
    line = capture_common.summary_line(_summary(), "watch")
    assert "\n" not in line and "GIL" not in line


def test_one_note_for_the_gaps_with_the_holder_and_where_it_was():
    holder = GilHolder(native_id=WORKER, name="regex-worker",
                       frames=[{"file": "app.py", "line": 12, "name": "backtrack", "kind": "python"}])
    s = _summary(gil_gaps=[{"at": 100.0, "ms": 2900.0}, {"at": 110.0, "ms": 600.0}], gil_gaps_not_kept=1,
                 gil_gap_holder=holder)
    note, summary = capture_common.summary_line(s, "watch").split("\n")
    assert note.startswith("note: the GIL was held 3 time(s) for 0.5s or more while the function was instrumented (longest 2.90s")
    assert "3.50s in all" in note and "no call of the function could start" in note
    assert note.endswith("thread 4242 (regex-worker) held it when read from outside, in backtrack (app.py:12).")
    assert summary.startswith("watch __main__.mark")
    assert capture_common.gil_gap_note(_summary(gil_gaps=[{"at": 100.0, "ms": 900.0}])).endswith("progress waited.")


# -- the first attach: an agent loaded that cannot start -------------------------------------------------------

def test_stack_watch_sees_an_agent_loaded_and_not_started_as_a_stall():
    w = session_stack._Watch()
    now = time.monotonic()
    w.injected(now)
    assert w.starting and w.since == now
    assert not w.stalled(now + gil.START_BUDGET_S * 0.5)
    assert w.stalled(now + gil.START_BUDGET_S)
    w.sent(now + 0.1)  # it started and the connection's first request left: counted from there
    assert not w.starting and w.since == now + 0.1
    assert not w.stalled(now + 0.1 + client_mod.STALL_BUDGET_S * 0.5)


def test_stack_from_outside_on_a_first_attach_says_the_agent_could_not_start_yet():
    facts = {"pid": 7, "threads": _threads(), "notes": [], "pending_agents": 1, "ms": 1.0}
    stall = {"waited_ms": 900.0, "request": "stack", "seen_after_ms": 810.0, "ended": False, "starting": True,
             "holder": gil.holder(facts["threads"], {})}
    r = _from_outside(session_stack.StackReading("external", facts, stall=stall), StackParams(pid=7))
    assert r.agent_error == "gil_held"
    assert r.notes[0].startswith("read from outside the process (no code ran in it) because the GIL was held: the "
                                 "agent, loaded 0.81s before, could not start yet")
    assert "thread 4242 (python3) holds it" in r.notes[0]


def test_an_attach_that_times_out_waiting_for_the_agent_names_the_holder(monkeypatch, tmp_path):
    """connect._wait_for_agent tells the watch: injected, overdue after START_BUDGET_S, gave_up at the deadline."""
    from flight_mcp.session import connect

    class Rdir:
        def read_error(self):
            return None

    monkeypatch.setattr(connect, "_connect", lambda pid, rdir: None)
    monkeypatch.setattr(connect.procfs, "exists", lambda pid: True)
    monkeypatch.setattr(connect.procs, "stopped_error", lambda pid: None)
    monkeypatch.setattr(gil, "START_BUDGET_S", 0.05)
    read, token = FakeRead(), gil.collect()
    w = gil.StallWatch(7, "getglobal", {}, read=read)
    try:
        connect._wait_for_agent(7, Rdir(), time.monotonic() + 0.3, {"thread": 7}, w)
    except Exception as e:
        assert getattr(e, "code", None) == "agent_timeout"
    else:
        raise AssertionError("no timeout")
    [wait] = gil.collected(token)
    assert wait["still_waiting"] and wait["request"] == "getglobal" and wait["waited_ms"] >= 300
    assert wait["holder"]["native_id"] == WORKER and wait["holder"]["frames"][-1]["name"] == "backtrack"
    assert len(read.calls) == 1


def test_a_silence_with_nobody_holding_the_gil_lets_the_next_one_look_again():
    read, token = FakeRead(holder_tid=None), gil.collect()  # CPU-starved, not a stall
    w = gil.StallWatch(7, "watch", {}, read=read)
    w.sent(time.monotonic())
    w.quiet()
    w._quiet.join(2)
    read.holder_tid = WORKER  # the next silence is a stall
    w.quiet()
    w.finished(0.002)
    assert len(read.calls) == 2 and gil.held_during()["native_id"] == WORKER
    gil.collected(token)
