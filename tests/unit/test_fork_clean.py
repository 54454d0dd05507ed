"""What a forked child runs (agent/atfork.py), called in-process: every instrumentation goes,
whatever lock a thread that did not survive the fork held, and the probes stop running."""
import sys
import types

from flight_mcp.agent import atfork, instrument, server


def hot(n):
    return n + 1


class Probe:
    needs_args = False

    def __init__(self):
        self.calls = 0

    def enter(self, args, kwargs, frame):
        self.calls += 1
        return None


def _state():
    if hot.__code__ is not ORIG:
        return "patched"
    hook = instrument._hook["module"]
    if hook is not None and hook.active():   # 3.8-3.11: the frame evaluator (code left as it is)
        return "evaluator"
    mon = getattr(sys, "monitoring", None)
    if mon is not None and any((mon.get_tool(i) or "").startswith("flight-mcp") for i in range(6)):
        return "tool-left"
    return "clean"


ORIG = hot.__code__


def test_child_handler_removes_everything_without_waiting_on_locks():
    target = instrument.resolve(__name__, None, "hot")
    probe = Probe()
    instrument.add(target, probe)
    hot(1)
    assert probe.calls == 1 and (_state() in ("patched", "evaluator") or instrument.monitoring_tool() is not None)
    # a thread that did not survive the fork held these
    instrument._lock.acquire()
    server._state_lock.acquire()
    atfork._clean_child()
    hot(2)
    assert probe.calls == 1 and _state() == "clean"
    assert instrument.monitoring_tool() is None
    assert not instrument._lock.locked() and not server._state_lock.locked()

