"""stack: every thread's Python frames, and with async_tasks every asyncio task's await chain.

Facts only, named as the host's StackResult fields (frames as models.Frame: file, line, name,
qualname, source); the host writes every note.
"""
import linecache
import os
import sys

from . import capture, objstate
from .registry import command
from .server import AGENT_THREADS

_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))


def _frame(f):
    code = f.f_code
    line = f.f_lineno  # None at some instructions on 3.11+: sent as unknown, never guessed
    src = linecache.getline(code.co_filename, line).strip() if line else ""
    return {"file": code.co_filename, "line": line, "name": code.co_name,
            "qualname": getattr(code, "co_qualname", code.co_name), "source": src[:200]}


def _frames(f):
    out = []
    while f is not None:
        if not f.f_code.co_filename.startswith(_AGENT_DIR):
            out.append(_frame(f))
        f = f.f_back
    out.reverse()  # outermost first, like a traceback
    return out


def _thread_table():
    """ident -> (name, daemon, native_id, is_main) from threading, only if the target imported it,
    read from each Thread's own fields (capture.thread_facts), never its overridable properties."""
    threading = sys.modules.get("threading")
    active = getattr(threading, "_active", None) if threading is not None else None
    if type(active) is not dict:
        return {}
    main = getattr(threading, "_main_thread", None)
    reader = objstate.Reader()
    table = {}
    for ident, t in list(dict.items(active)):
        name, daemon = capture.thread_facts(ident, t)
        d = reader.instance_dict(t)
        native_id = objstate.dict_get(d, "_native_id") if d is not None else None
        table[ident] = (name, daemon, native_id if type(native_id) is int else None, t is main)
    return table


def threads():
    table = _thread_table()
    out = []
    for ident, f in sys._current_frames().items():
        if ident in AGENT_THREADS:
            continue
        name, daemon, native_id, is_main = table.get(ident, (None, None, None, False))
        if not table and capture.looks_main(f):
            # the main thread's OS thread id is the process id (Linux), as threading would say
            name, daemon, is_main = "MainThread", False, True
            native_id = os.getpid() if sys.platform.startswith("linux") else None
        frames = _frames(f)
        out.append({"ident": ident, "name": name or "Thread-%d" % ident, "daemon": daemon,
                    "native_id": native_id, "main": is_main, "frames": frames})
    out.sort(key=lambda t: (not t["main"], t["name"]))
    return out


def _all_tasks(asyncio):
    tasks = asyncio.tasks
    pools = []
    for attr in ("_all_tasks", "_scheduled_tasks", "_eager_tasks"):
        pool = getattr(tasks, attr, None)
        if pool is not None:
            pools.append(pool)
    for _ in range(5):  # the sets change under our feet while the loop runs
        try:
            found = []
            for pool in pools:
                found.extend(list(pool))
            return found
        except RuntimeError:
            continue
    return []


def _await_chain(coro, waiter=None):
    """Frames of a coroutine and of everything it awaits, outermost first. `waiter`: the future
    the task is blocked on, shown at the end instead of the iterator wrapping it (FutureIter)."""
    chain = []
    seen = 0
    while coro is not None and seen < 200:
        seen += 1
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            chain.append(_frame(frame))
        nxt = getattr(coro, "cr_await", None)
        if nxt is None:
            nxt = getattr(coro, "gi_yieldfrom", None)
        if nxt is None and frame is None:
            break
        if nxt is not None and not (hasattr(nxt, "cr_frame") or hasattr(nxt, "gi_frame")):
            if waiter is not None:
                nxt = waiter
            chain.append({"file": "", "line": None, "name": "<awaiting %s>" % type(nxt).__name__,
                          "qualname": type(nxt).__qualname__, "source": _short(nxt)})
            break
        coro = nxt
    return chain


def _short(obj):
    try:
        text = repr(obj)
    except BaseException:
        text = object.__repr__(obj)
    return text[:160]


def tasks():
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    out = []
    for t in _all_tasks(asyncio):
        try:
            if t.done():
                continue
            coro = t.get_coro()
            out.append({"name": t.get_name() if hasattr(t, "get_name") else repr(t),
                        "coro": getattr(coro, "__qualname__", type(coro).__name__),
                        "frames": _await_chain(coro, getattr(t, "_fut_waiter", None))})
        except BaseException:
            continue
    out.sort(key=lambda x: x["name"])
    return out


def _running_loops():
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return 0
    loops = set()
    for t in _all_tasks(asyncio):
        try:
            loops.add(id(t.get_loop()))
        except BaseException:
            pass
    return len(loops)


@command("stack")
def stack(args, ctx):
    """{pid, threads, asyncio_imported, tasks (with async_tasks; None without), event_loops (without)}."""
    result = {"pid": os.getpid(), "threads": threads(), "asyncio_imported": "asyncio" in sys.modules,
              "tasks": None, "event_loops": None}
    if args["async_tasks"]:
        found = tasks()
        result["tasks"] = found if found is not None else []
    else:
        result["event_loops"] = _running_loops()
    return result
