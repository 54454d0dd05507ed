"""The mem agent command in-process, with exactly the request the host sends: counts by type, sizes
that run no code of the target, types counted by id when a metaclass hashes, a diff that finds the
new objects and their owner; the host's model accepts every answer; flight_profiler's command
lines parse; the text has their layout."""
import sys
import threading
import time
import types

import pytest

from flight_mcp import cmdline
from flight_mcp.agent import cmd_mem
from flight_mcp.tools import all_tools
from flight_mcp.tools.mem import MemParams, MemResult, render


class Counted:
    pass


CALLS = []


class OwnSizeof:
    def __sizeof__(self):
        CALLS.append("__sizeof__")
        return 10 ** 6


class HashingMeta(type):
    def __hash__(cls):
        CALLS.append("__hash__")
        return 1

    def __eq__(cls, other):
        CALLS.append("__eq__")
        return cls is other


class Ctx:
    cancelled = False

    def __init__(self):
        self.events = []

    def emit(self, event):
        self.events.append(event)

    def sleep(self, timeout):
        time.sleep(timeout)
        return False


def _run(**kw):
    args = dict(MemParams(pid=1, **kw).agent_args(), allow_mutating=False, may_change_target=False)
    ctx = Ctx()
    out = cmd_mem.mem(args, ctx)
    return MemResult(**out), out, ctx


def _name(cls):
    return "%s.%s" % (cls.__module__, cls.__qualname__)


def test_summary_counts_by_type_with_rss_and_order():
    keep = [Counted() for _ in range(1000)]
    r, _, _ = _run(action="summary", limit=100000)
    rows = {t.type: t for t in r.types}
    assert rows[_name(Counted)].count == 1000
    assert rows[_name(Counted)].size == 1000 * sys.getsizeof(keep[0])
    assert r.rss_bytes > 0 and r.tracked_objects == sum(t.count for t in r.types)
    assert [t.size for t in r.types] == sorted((t.size for t in r.types), reverse=True)
    assert not [t for t in rows if "flight_mcp.agent" in t], "the agent's own classes are left out"
    r, _, _ = _run(action="summary", limit=3, order="ascending")
    assert len(r.types) == 3 and [t.size for t in r.types] == sorted(t.size for t in r.types)
    assert r.types_total > 3


def test_a_sizeof_of_the_target_never_runs():
    keep = [OwnSizeof() for _ in range(10)]
    del CALLS[:]
    r, _, _ = _run(action="summary", limit=100000)
    row = next(t for t in r.types if t.type == _name(OwnSizeof))
    assert CALLS == [] and row.estimated and row.count == 10 and row.size < 10 ** 6
    assert len(keep) == 10


def test_types_counted_by_id_when_a_metaclass_hashes():
    cls = HashingMeta("Hashed", (), {})
    keep = [cls() for _ in range(7)]
    del CALLS[:]
    r, _, _ = _run(action="summary", limit=100000)
    assert CALLS == [] and r.keys_by_id
    assert next(t for t in r.types if t.type.endswith("Hashed")).count == 7
    del keep, cls


def test_diff_finds_new_objects_and_their_owner():
    mod = types.ModuleType("memtest_leak")
    mod.LEAK = []
    sys.modules[mod.__name__] = mod
    stop = threading.Event()

    def leak():
        while not stop.is_set():
            mod.LEAK.extend((Counted(), Counted(), Counted()))
            time.sleep(0.002)
    keep = [Counted() for _ in range(50)]   # a stable population
    th = threading.Thread(target=leak, daemon=True)
    th.start()
    try:
        r, _, ctx = _run(action="diff", interval=0.5, limit=100)
    finally:
        stop.set()
        th.join()
        del sys.modules[mod.__name__]
    assert ctx.events == [{"phase": "waiting", "interval_s": 0.5}]
    g = next(g for g in r.growers if g.type == _name(Counted))
    assert g.count_delta >= 20 and g.new_found >= 20 and g.sampled == min(g.new_found, cmd_mem.SAMPLE)
    assert g.owners[0].path == "memtest_leak.LEAK[*]" and g.owners[0].count == g.sampled
    assert r.snapshot_bytes == 8 * r.tracked_before or r.snapshot_bytes > 0
    text = render(r, False)
    assert "held in memtest_leak.LEAK[*]" in text and "types |" in text
    assert len(keep) == 50


def test_cancel_during_the_interval():
    ctx = Ctx()
    ctx.cancelled = True
    args = dict(MemParams(pid=1, action="diff", interval=5).agent_args(), allow_mutating=False,
                may_change_target=False)
    with pytest.raises(Exception) as e:
        cmd_mem.mem(args, ctx)
    assert getattr(e.value, "kind", None) == "cancelled"


@pytest.mark.parametrize("line,want", [
    ("mem summary --limit 3 --order descending", {"action": "summary", "limit": 3, "order": "descending"}),
    ("mem diff --interval 2 --limit 3 --order descending", {"action": "diff", "interval": 2.0, "limit": 3}),
    ("mem diff", {"action": "diff", "interval": 15.0, "limit": 10}),
    ("mem", {"action": "summary"}),
    ("mem summary -n 100000000", {"limit": 100000000}),
])
def test_flight_profiler_command_lines_parse(line, want):
    _, p = cmdline.parse(cmdline.split(line), all_tools(), 1)
    assert {k: getattr(p, k) for k in want} == want


@pytest.mark.parametrize("line", ["mem sizes", "mem summary --order up", "mem diff --interval 0"])
def test_bad_command_lines(line):
    with pytest.raises(Exception) as e:
        cmdline.parse(cmdline.split(line), all_tools(), 1)
    assert getattr(e.value, "code", getattr(e.value, "kind", None)) == "usage" or "usage" in str(e.value).lower()


def test_render_summary_layout():
    r = MemResult(action="summary", limit=2, order="descending", rss_bytes=50 << 20, tracked_objects=1000,
                  tracked_bytes=300000, types_total=40, excluded_own=12, scan_ms=12.5, longest_hold_ms=3.2,
                  types=[{"type": "dict", "count": 500, "size": 200000},
                         {"type": "app.Thing", "count": 100, "size": 5600, "estimated": True}])
    text = render(r, False).splitlines()
    assert text[0].startswith("RSS 50.00 MB; 1,000 GC-tracked objects")
    assert text[1].split("|")[0].strip() == "types" and "# objects" in text[1] and "total size" in text[1]
    assert text[3].split("|")[1].strip() == "500" and "app.Thing (estimated)" in text[4]
    assert "38 more types" in text[5]


def test_render_diff_names_the_owner_first():
    r = MemResult(action="diff", limit=3, order="descending", interval_s=2, rss_before=10 << 20, rss_after=11 << 20,
                  tracked_before=100, tracked_after=900, types_changed=4, snapshot_bytes=800, owners_ms=5,
                  scan_ms=10, longest_hold_ms=2,
                  rows=[{"type": "app.Sub", "count": 800, "count_delta": 792, "size_delta": 38016},
                        {"type": "tuple", "count": 10, "count_delta": -3, "size_delta": -120}],
                  growers=[{"type": "app.Sub", "count_delta": 792, "size_delta": 38016, "new_found": 792,
                            "candidates_capped": False, "sampled": 100,
                            "owners": [{"path": "Registry._by_topic[*][*]", "count": 97},
                                       {"path": None, "count": 3}]},
                           {"type": "dict", "count_delta": 1, "size_delta": 10, "new_found": 0,
                            "candidates_capped": False, "sampled": 0, "owners": []}])
    text = render(r, False)
    lines = text.splitlines()
    assert lines[0].startswith("mem diff over 2 s: RSS 10.00 MB -> 11.00 MB (+1.00 MB")
    assert lines[1].split("|")[0].strip() == "types"
    assert lines[3].split("|")[1].strip() == "+792" and lines[4].split("|")[1].strip() == "-3"
    assert "+792 app.Sub, held in Registry._by_topic[*][*]  (97 of 100 sampled new objects)" in text
    assert "also 3 held in no holder among GC-tracked objects" in text
    assert "+1 dict" not in text.split("WHO HOLDS")[1], "a grower without new objects has no owner line"
    assert "2 more types changed" in text
