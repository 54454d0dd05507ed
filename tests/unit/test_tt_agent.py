"""tt's agent command called in-process, with exactly the request the host sends: calls of a real
function of this interpreter are recorded by the real instrumentation into the real table, and
the answers are the Result model's facts (list, show, delete, delete_all, replay, the bound, the
replay gate, the table emptied at detach)."""
import threading
import time

import pytest

from flight_mcp.agent import cmd_tt, instrument, server
from flight_mcp.agent.registry import AgentError
from flight_mcp.tools.tt import TtParams, TtResult

HERE = __name__
CALLS = []


class Item:
    def __init__(self, n):
        self.n = n


def work(item, scale=1, *, tag=None):
    if item.n < 0:
        raise ValueError("bad item %d" % item.n)
    CALLS.append(item.n)
    return {"n": item.n * scale}


class Ctx(server.CommandContext):
    """A command's real context, with its events kept here instead of sent to a client."""

    def __init__(self):
        super().__init__(None, 0, {})
        self.events = []

    def emit(self, event):
        self.events.append(event)


def request(allow=False, **fields):
    p = TtParams(pid=1, **fields)
    args = dict(p.agent_args(), allow_mutating=False, may_change_target=allow)
    args["timeout_s"] = p.timeout_s
    return args


def answer(allow=False, **fields):
    return TtResult.model_validate(cmd_tt.tt(request(allow, **fields), Ctx()))


@pytest.fixture(autouse=True)
def empty_table():
    cmd_tt.TABLE.clear()
    CALLS.clear()
    yield
    cmd_tt.TABLE.clear()


def caller(items, pause=0.02):
    """Calls work() on an application thread (the command's own thread would not be seen)."""
    def go():
        time.sleep(0.2)
        for n in items:
            try:
                work(Item(n), 2, tag="t%d" % n)
            except ValueError:
                pass
            time.sleep(pause)
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def record(items, **fields):
    t = caller(items)
    r = answer(time_tunnel=True, module=HERE, method="work", timeout_s=10, **fields)
    t.join()
    return r


def test_record_then_list_show_delete():
    code = work.__code__
    r = record([1, 2, -3, 4], limit=4)
    assert r.action == "record" and r.recording.captured == 4 and r.table_size == 4 and r.kept == cmd_tt.KEPT
    assert [x.index for x in r.recording.records] == [1000, 1001, 1002, 1003]
    assert [x.is_exp for x in r.recording.records] == [False, False, True, False]
    assert work.__code__ is code and not instrument._sites   # nothing left on the function

    listing = answer(list_records=True)
    assert [x.index for x in listing.records] == [1000, 1001, 1002, 1003]
    assert [x.index for x in answer(list_records=True, filter_expr="return_obj is not None and "
                                    "return_obj['n'] > 2").records] == [1001, 1003]
    assert [x.index for x in answer(list_records=True, method_filter=HERE + ".work").records] == [1000, 1001, 1002,
                                                                                                  1003]
    assert answer(list_records=True, method_filter=HERE + ".other").records == []

    shown = answer(index=1001, expand=1).record
    assert [a.name for a in shown.args] == ["item", "scale"] and shown.args[1].view.repr == "2"
    assert [(a.name, a.view.repr) for a in shown.kwargs] == [("tag", "'t2'")]
    assert shown.return_obj.kind == "mapping" and shown.instance is None and shown.exception is None
    failed = answer(index=1002).record
    assert failed.is_exp and failed.return_obj is None
    assert failed.exception.type == "ValueError" and failed.exception.message == "bad item -3"
    assert failed.exception.frames[-1].name == "work"

    assert answer(delete=1001).table_size == 3
    with pytest.raises(AgentError) as e:
        answer(index=1001)
    assert e.value.kind == "record_not_found" and e.value.arg == "index"
    with pytest.raises(AgentError) as e:
        answer(delete=1001)
    assert e.value.kind == "record_not_found" and e.value.arg == "delete"
    assert answer(delete_all=True).deleted == 3 and answer(list_records=True).records == []


def test_a_filter_decides_what_is_recorded():
    r = record([1, -2, 3, -4, 5], limit=2, filter_expr="args[0].n < 0")
    assert [x.is_exp for x in r.recording.records] == [True, True] and r.recording.seen >= 4


def test_replay_calls_the_function_again_and_records_it():
    record([7], limit=1)
    assert CALLS == [7]
    with pytest.raises(AgentError) as e:
        answer(index=1000, play=True)            # may_change_target is False: over MCP without the flag
    assert e.value.kind == "read_only" and CALLS == [7]
    r = answer(allow=True, index=1000, play=True)
    assert CALLS == [7, 7] and r.replay_of == 1000 and r.record.index == 1001 and r.record.replay_of == 1000
    assert r.record.thread == "flight-mcp-replay" and r.record.return_obj.children is not None
    assert [x.index for x in answer(list_records=True).records] == [1000, 1001]


def test_the_table_keeps_at_most_kept_records(monkeypatch):
    monkeypatch.setattr(cmd_tt, "KEPT", 5)
    r = record(range(8), limit=100)
    assert r.recording.captured == 5 and r.recording.limit == 5 and r.recording.stopped == "limit"
    r = record(range(3), limit=3)
    assert r.table_size == 5 and r.dropped == 3
    assert [x.index for x in answer(list_records=True).records] == [1003, 1004, 1005, 1006, 1007]


def test_detach_empties_the_table():
    record([1, 2], limit=2)
    item = Item(9)
    holder = cmd_tt.TABLE.records[1000]
    holder["_args"] = (item,)
    import weakref
    ref = weakref.ref(item)
    del item, holder
    assert ref() is not None
    cmd_tt.on_detach()
    assert ref() is None and cmd_tt.TABLE.records == {} and cmd_tt.TABLE.next_index == 1000


async def awork(n):
    import asyncio
    await asyncio.sleep(0)
    CALLS.append(n)
    return n * 3


def test_a_coroutine_is_recorded_and_replayed_on_a_loop_of_its_own():
    import asyncio

    def go():
        time.sleep(0.2)
        for n in (4, 5):
            asyncio.run(awork(n))
    t = threading.Thread(target=go, daemon=True)
    t.start()
    r = answer(time_tunnel=True, module=HERE, method="awork", limit=2, timeout_s=10)
    t.join()
    assert r.recording.kind == "coroutine" and r.recording.captured == 2
    assert answer(index=1000).record.return_obj.repr == "12"
    played = answer(allow=True, index=1000, play=True)
    assert played.record.return_obj.repr == "12" and CALLS == [4, 5, 4]
