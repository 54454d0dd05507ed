"""The reading from outside, from a hand-made reader dump (what the pystack child prints): Python
frames placed at their eval-loop frames among the native ones, our own threads left out and
counted, unknown native lines as None (no process is started)."""
import pytest

from flight_mcp.attach import external_stack
from flight_mcp.models import Frame

pytestmark = pytest.mark.timeout(30)


def nat(symbol, kind="OTHER", library="/usr/lib/libc.so.6", path="???", line=0):
    return {"symbol": symbol, "path": path, "line": line, "library": library, "kind": kind}


def py(name, entry, file="/app/x.py", line=3):
    return {"file": file, "line": line, "name": name, "entry": entry}


def thread(tid, frames, native, python=True, **kw):
    return dict({"tid": tid, "name": f"t{tid}", "holds_gil": 0, "gc": 0, "gc_status": 0, "waiting_for_gil": False,
                 "python": python, "frames": frames, "native": native}, **kw)


def test_python_frames_sit_at_their_eval_frames():
    raw = [thread(10, [py("main", True), py("helper", False), py("cb", True)],
                  [nat("_start"), nat("_PyEval_EvalFrameDefault", "EVAL", "/usr/lib/libpython3.12.so"),
                   nat("call_cb", library="/app/ext.so", path="/src/ext.c", line=42),
                   nat("_PyEval_EvalFrameDefault", "EVAL", "/usr/lib/libpython3.12.so"),
                   nat("PyObject_Call", "IGNORE"), nat("nanosleep")], holds_gil=1)]
    threads, own, pending = external_stack._threads(10, raw, native=True)
    assert (own, pending) == (0, 0)
    t = threads[0]
    assert t["main"] and t["name"] == "MainThread" and t["holds_gil"] is True and t["note"] is None
    assert [(f["name"], f["kind"]) for f in t["frames"]] == [
        ("_start", "native"), ("main", "python"), ("helper", "python"), ("call_cb", "native"), ("cb", "python"),
        ("nanosleep", "native")]
    frames = [Frame(**f) for f in t["frames"]]  # the shared frame model holds them as they are
    assert frames[0].line is None and frames[0].file == "/usr/lib/libc.so.6" and frames[0].library == "libc.so.6"
    assert (frames[3].file, frames[3].line) == ("/src/ext.c", 42)


def test_uneven_unwinding_stacks_both_lists_and_says_so():
    raw = [thread(11, [py("a", True), py("b", True)], [nat("_PyEval_EvalFrameDefault", "EVAL"), nat("poll")])]
    t = external_stack._threads(10, raw, native=True)[0][0]
    assert [f["name"] for f in t["frames"]] == ["a", "b", "poll"] and "not interleaved" in t["note"]


def test_our_own_threads_are_left_out_and_pending_payloads_counted():
    payload = "/tmp/flight-mcp-0/inject-10-0a1b2c3d4e5f.so"
    raw = [thread(10, [py("main", True)], [nat("_PyEval_EvalFrameDefault", "EVAL")]),
           thread(12, [], [nat("take_gil"), nat("payload_main", library=payload)], python=False),
           thread(13, [py("serve", True, file="/tmp/flight-mcp-0/agent-0123456789abcdef/server.py")], []),
           thread(14, [], [nat("epoll_wait")], python=False)]
    threads, own, pending = external_stack._threads(10, raw, native=True)
    assert (own, pending) == (2, 1)
    assert [t["native_id"] for t in threads] == [10, 14]
    assert "not registered with the Python interpreter" in threads[1]["note"]
    # Without native frames, threads unknown to the interpreter are not shown at all.
    assert [t["native_id"] for t in external_stack._threads(10, raw, native=False)[0]] == [10]
