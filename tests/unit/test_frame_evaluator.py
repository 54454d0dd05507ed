"""instrument.py's frame evaluator (hook.c) in this very process, on Python 3.8-3.11: probes see
every call with the right arguments, generators' and coroutines' suspensions and ends, and the
code under probes sees no frame of ours, raises through no frame of ours, keeps its recursion
depth and its function object. Hostile shapes: cell parameters, every parameter kind, probes
that raise, generators closed or thrown into before they start, dropped while suspended, nested
functions while their outer function is instrumented too, calls from agent threads."""
import gc
import inspect
import os
import sys
import traceback

import pytest

from flight_mcp.agent import instrument, server

pytestmark = pytest.mark.skipif(instrument.MONITORING or instrument._hook_module() is None,
                                reason="the frame evaluator serves Python 3.8-3.11 (%s)" % instrument._hook["why"])
AGENT_DIR = os.path.dirname(instrument.__file__)


class Probe(object):
    needs_args = True

    def __init__(self, fail=False):
        self.events, self.fail = [], fail

    def enter(self, args, kwargs, frame):
        self.events.append(("enter", args, kwargs))
        if self.fail:
            raise RuntimeError("probe enter fails")
        return len(self.events)

    def leave(self, token, result, exc):
        self.events.append(("leave", token, result, None if exc is None else type(exc).__name__))
        if self.fail:
            raise RuntimeError("probe leave fails")

    def suspend(self, token):
        self.events.append(("suspend", token))

    def resume(self, token):
        self.events.append(("resume", token))


def watched(func, probe, nested=None, outer=None):
    target = instrument.Target(func, func.__code__, False, func.__qualname__) if nested is None else \
        instrument.Target(None, nested, False, "nested", outer=outer)
    return instrument.add(target, probe)


def ours(frames):
    return [f for f in frames if f.startswith(AGENT_DIR) or "flight" in f]


def evaluator_active():
    return instrument._hook["module"].active()


def test_plain_function_every_parameter_kind_and_cells():
    def f(a, b=2, /, c=3, *rest, k, m=5, **kw):
        cell = lambda: (a, c, k, kw)   # parameters that are cells
        frames = [fi.filename for fi in inspect.stack()]
        return sys._getframe(1).f_code.co_name, ours(frames), cell()

    code, before = f.__code__, f.__defaults__
    probe = Probe()
    remove = watched(f, probe)
    assert evaluator_active()

    def caller():
        return f(1, k=4, z=9), f(1, 7, 8, 9, 10, k=0)
    (who, seen, values), second = caller()
    assert who == "caller" and seen == [] and values == (1, 3, 4, {"z": 9})
    assert probe.events[0] == ("enter", (1, 2, 3), {"k": 4, "m": 5, "z": 9})
    assert probe.events[2] == ("enter", (1, 7, 8, 9, 10), {"k": 0, "m": 5})
    assert probe.events[1][0] == "leave" and probe.events[1][2][0] == "caller"
    remove()
    assert not evaluator_active() and f.__code__ is code and f.__defaults__ is before
    f(1, k=1)
    assert len(probe.events) == 4   # nothing after removal


def test_exception_through_function_shows_no_frame_of_ours_and_probe_errors_stay_inside():
    def boom(x):
        raise ValueError(x)

    def caller():
        try:
            boom(3)
        except ValueError as e:
            return [fs.name for fs in traceback.extract_tb(e.__traceback__)], traceback.format_exc()
    probe = Probe(fail=True)
    remove = watched(boom, probe)
    try:
        names, text = caller()
    finally:
        remove()
    assert names == ["caller", "boom"] and "flight" not in text.split("ValueError")[0]
    assert [e[0] for e in probe.events] == ["enter"]   # enter raised: the call ran unprobed


def test_recursion_to_near_the_limit_with_a_probe_at_every_level():
    def rec(n):
        return 0 if n == 0 else 1 + rec(n - 1)
    probe = Probe()
    remove = watched(rec, probe)
    try:
        room = sys.getrecursionlimit() - len(inspect.stack(0)) - 10
        assert rec(room) == room   # probes that ran out of room failed inside, the function did not
    finally:
        remove()
    assert sum(1 for e in probe.events if e[0] == "enter") > room - 50


def test_generator_suspensions_ends_and_hostile_lifecycles():
    def gen(n):
        got = yield sys._getframe(1).f_code.co_name
        yield got
        return n

    probe = Probe()
    remove = watched(gen, probe)
    try:
        g = gen(5)
        assert probe.events == []               # made, not started: no call yet
        assert next(g) == "test_generator_suspensions_ends_and_hostile_lifecycles"
        assert g.send("x") == "x"
        with pytest.raises(StopIteration) as stop:
            next(g)
        assert stop.value.value == 5
        assert [e[0] for e in probe.events] == ["enter", "suspend", "resume", "suspend", "resume", "leave"]
        assert probe.events[-1][2:] == (5, None)
        del probe.events[:]
        gen(1).close()                          # closed before it ever ran
        g = gen(2)
        with pytest.raises(KeyError):
            g.throw(KeyError("before start"))   # thrown into before it ever ran
        assert probe.events == []
        g = gen(3)
        next(g)
        with pytest.raises(KeyError):
            g.throw(KeyError("while suspended"))
        assert probe.events[-1][0] == "leave" and probe.events[-1][3] == "KeyError"
        g = gen(4)
        next(g)
        del g                                   # dropped while suspended: closed, the probe told
        gc.collect()
        assert probe.events[-1][0] == "leave" and probe.events[-1][3] == "GeneratorExit"
    finally:
        remove()


def test_coroutine_awaited_and_nested_function_under_an_instrumented_outer():
    class Step(object):
        def __await__(self):
            yield

    async def co(x):
        await Step()
        return sys._getframe(1).f_code.co_name, x

    async def outer():
        return await co(1)

    def make(n):
        def inner(m):
            return n + m
        return inner

    probe, inner_probe, outer_probe = Probe(), Probe(), Probe()
    inner_code = [c for c in make.__code__.co_consts if getattr(c, "co_name", None) == "inner"][0]
    removes = [watched(co, probe), watched(make, outer_probe), watched(None, inner_probe, inner_code, make)]
    try:
        c = outer()
        c.send(None)
        with pytest.raises(StopIteration) as stop:
            c.send(None)
        assert stop.value.value == ("outer", 1)
        assert [e[0] for e in probe.events] == ["enter", "suspend", "resume", "leave"]
        assert make(1)(2) == 3 and make(5)(5) == 10   # new inner function objects, all covered
        assert [e[1] for e in inner_probe.events if e[0] == "enter"] == [(2,), (5,)]
        assert [e[1] for e in outer_probe.events if e[0] == "enter"] == [(1,), (5,)]
    finally:
        for remove in removes:
            remove()
    assert not evaluator_active()


def test_calls_from_c_code_and_bound_methods_are_seen_without_our_frames():
    class Box(object):
        def get(self, x):
            return sys._getframe(1).f_code.co_name, x

    probe = Probe()
    remove = watched(Box.get, probe)
    try:
        box = Box()
        by_map = list(map(box.get, [1, 2]))           # called from C: the caller is the one of map
        by_sort = sorted([3, 1], key=lambda v: box.get(v)[1])
    finally:
        remove()
    here = "test_calls_from_c_code_and_bound_methods_are_seen_without_our_frames"
    assert by_map == [(here, 1), (here, 2)] and by_sort == [1, 3]
    assert [e[1][1:] for e in probe.events if e[0] == "enter"] == [(1,), (2,), (3,), (1,)]


def test_calls_from_agent_threads_are_not_seen():
    def f(x):
        return x
    probe = Probe()
    remove = watched(f, probe)
    me = instrument._get_ident()
    server.AGENT_THREADS.add(me)
    try:
        f(1)
    finally:
        server.AGENT_THREADS.discard(me)
        remove()
    assert probe.events == []


def test_fallback_is_named_in_the_answer(monkeypatch):
    monkeypatch.setattr(instrument, "_hook", {"module": None, "why": None})
    monkeypatch.setenv("FLIGHT_MCP_TRAMPOLINE", "1")
    assert instrument.mechanism().startswith("code trampoline (the frame evaluator could not load: "
                                             "FLIGHT_MCP_TRAMPOLINE=1")
    monkeypatch.delenv("FLIGHT_MCP_TRAMPOLINE")
    monkeypatch.setattr(instrument, "_hook", {"module": None, "why": None})
    if sys.version_info[:2] == (3, 11):
        monkeypatch.setattr(sys, "getrecursionlimit", lambda: 50000)
        assert "recursion limit of 50000" in instrument.mechanism()
