"""stack: every thread's Python frames, and with async_tasks every asyncio task's await chain.

Facts only, named as the host's StackResult fields (frames as models.Frame: file, line, name,
qualname, source); the host writes every note.
"""
import os
import sys
import types

from . import capture, locks, objstate, objview, qualnames, srclines
from .registry import command
from .server import AGENT_THREADS

_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))


LOCALS_LIMIT = 40        # locals shown per frame (the rest counted in locals_elided); each within objview's REPR_LIMIT


def _frame(f, viewer, lines):
    code = f.f_code
    line = f.f_lineno  # None at some instructions on 3.11+: sent as unknown, never guessed
    src = lines.get(code.co_filename, line)
    out = {"file": code.co_filename, "line": line, "name": code.co_name,
           "qualname": qualnames.qualname(code, f.f_globals), "source": src[:200]}
    if viewer is not None:
        out["locals"], out["locals_elided"] = _locals(f, viewer)
    return out


def _locals(f, viewer):
    """[{name, view}] of a frame's local variables as bounded views (no target code runs); None for
    a module's frame (its locals are its globals: getglobal shows them)."""
    try:
        loc = f.f_locals   # a dict snapshot on 3.8-3.12, the frame's C proxy on 3.13
    except Exception:
        return None, 0
    if loc is f.f_globals:
        return None, 0
    if issubclass(type(loc), dict):
        items = objstate.dict_items(loc)
    elif locks.is_locals_proxy(loc):
        items = list(loc.items())
    else:   # a class body's own mapping (__prepare__): reading it would run the target's methods
        return None, 0
    items = [(k, v) for k, v in items if type(k) is str]
    out = [{"name": k, "view": viewer._view(v, 0, False, frozenset(), False)} for k, v in items[:LOCALS_LIMIT]]
    return out, max(0, len(items) - LOCALS_LIMIT)


def _raw_frames(f):
    out = []
    while f is not None:
        if not f.f_code.co_filename.startswith(_AGENT_DIR):
            out.append(f)
        f = f.f_back
    out.reverse()  # outermost first, like a traceback
    return out


def _frames(f, lines):
    return [_frame(x, None, lines) for x in _raw_frames(f)]


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


def threads(show_locals=False):
    """Every thread's facts; with the locks it waits for or holds (facts per thread, the locks, the
    deadlocks: see locks.analyse)."""
    table = _thread_table()
    viewer = objview.Viewer() if show_locals else None
    lines = srclines.Lines()
    out = []
    raw = []
    for ident, f in sys._current_frames().items():
        if ident in AGENT_THREADS:
            continue
        name, daemon, native_id, is_main = table.get(ident, (None, None, None, False))
        if not table and capture.looks_main(f):
            # the main thread's OS thread id is the process id (Linux), as threading would say
            name, daemon, is_main = "MainThread", False, True
            native_id = os.getpid() if sys.platform.startswith("linux") else None
        frames = _raw_frames(f)
        raw.append((ident, frames))
        out.append({"ident": ident, "name": name or "Thread-%d" % ident, "daemon": daemon,
                    "native_id": native_id, "main": is_main, "frames": [_frame(x, viewer, lines) for x in frames]})
    out.sort(key=lambda t: (not t["main"], t["name"]))
    order = {t["ident"]: n for n, t in enumerate(out)}
    raw.sort(key=lambda x: order[x[0]])
    try:
        per_thread, found, deadlocks = locks.analyse(raw)
    except Exception:   # a bug of ours in the lock analysis must not lose the stacks
        per_thread, found, deadlocks = {}, [], []
    del raw
    for t in out:
        t.update(per_thread.get(t["ident"], ()))
    return out, found, [[{"thread": i, "lock": n} for i, n in cycle] for cycle in deadlocks]


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


# The steps of an await chain we read: the interpreter's own types, whose attributes are C slots.
# Anything else a coroutine awaits (a Future, an object with __await__) ends the chain, shown by
# objview's safe one-line text: no __getattr__, __repr__ or property of the target's runs here.
_CORO_ATTRS = {types.CoroutineType: ("cr_frame", "cr_await"), types.GeneratorType: ("gi_frame", "gi_yieldfrom"),
               types.AsyncGeneratorType: ("ag_frame", "ag_await")}


def _links(coro):
    """(coroutine, its frame or None) along an await chain, outermost first, then (awaited, None)
    for the object at its end that is no coroutine (a future), at most 200 steps."""
    for _ in range(200):
        if coro is None:
            return
        attrs = _CORO_ATTRS.get(type(coro))
        if attrs is None:
            yield coro, None
            return
        yield coro, getattr(coro, attrs[0])
        coro = getattr(coro, attrs[1])


def _await_chain(coro, waiter, viewer, lines):
    """Frames of a coroutine and of everything it awaits, outermost first. `waiter`: the future
    the task is blocked on, shown at the end instead of the iterator wrapping it (FutureIter)."""
    chain = []
    for link, frame in _links(coro):
        if type(link) not in _CORO_ATTRS:
            awaited = waiter if waiter is not None else link
            chain.append({"file": "", "line": None, "name": "<awaiting %s>" % objstate.short_name(type(awaited)),
                          "qualname": objstate.type_name(type(awaited)),
                          "source": objview.short_repr(awaited, 160)})
        elif frame is not None:
            chain.append(_frame(frame, viewer, lines))
    return chain


def _task_base(asyncio, t):
    """asyncio's own Task class that t's type derives from (C or Python), whose methods we call:
    a Task subclass of the application may override done/get_coro/get_name/get_loop."""
    for base in (getattr(asyncio, "Task", None), getattr(asyncio.tasks, "_PyTask", None)):
        if isinstance(base, type) and issubclass(type(t), base):
            return base
    return None


def _waiter(base, t):
    """The future t is blocked on, read as asyncio stores it: a slot of the C Task (through the
    base's own descriptor, not an attribute lookup a subclass could redefine), else t's __dict__."""
    desc = base.__dict__.get("_fut_waiter")
    if type(desc) in (types.MemberDescriptorType, types.GetSetDescriptorType):
        return desc.__get__(t, base)
    d = objstate.Reader().instance_dict(t)
    return objstate.dict_get(d, "_fut_waiter") if d is not None else None


MAX_WAITERS_NAMED = 500   # futures whose holder is sought in one heap search


def _innermost_self_class(coro):
    """The class whose method is the innermost coroutine of coro's await chain (the method that
    awaits the future), found by the method's qualified name in its module's globals, or None.
    (Not its `self` through f_locals: on 3.8-3.10 that makes the frame a dict of its locals, which
    would then show as the future's holder.)"""
    found = None
    for _, frame in _links(coro):
        if frame is not None:
            parts = qualnames.qualname(frame.f_code, frame.f_globals).split(".")[:-1]
            owner = objstate.dict_get(frame.f_globals, parts[0]) if parts and "<" not in parts[0] else None
            for name in parts[1:]:
                owner = objstate.find(owner, name)[1] if isinstance(owner, type) else None
            if isinstance(owner, type):
                found = owner
    return found


_ATTR_OPS = frozenset(["LOAD_ATTR", "STORE_ATTR", "DELETE_ATTR", "LOAD_METHOD"])
MAX_USERS = 12


def _users_of(cls, attr):
    """[{name, lines}]: the methods of cls (and its bases but object) whose code reads, writes or
    deletes `.attr`, with the lines; from their code objects, nothing run."""
    import dis
    users = []
    for klass in objstate.mro(cls):
        if klass is object:
            continue
        for name, value in objstate.namespace_items(klass):
            fn = value.__func__ if type(value) in (staticmethod, classmethod) else value
            if type(fn) is not types.FunctionType:
                continue
            code = fn.__code__
            if attr not in code.co_names:
                continue
            lines = sorted(set(capture.line_at(code, i.offset) for i in dis.get_instructions(code)
                               if i.opname in _ATTR_OPS and i.argval == attr) - {None})
            if lines:
                users.append({"name": qualnames.qualname(code), "lines": lines})
            if len(users) >= MAX_USERS:
                return users
    return users


def _attr_of(path):
    """`_waiters` of `ExportCoordinator._waiters[*]`: the attribute an owner path ends its name with."""
    head = path.split("[", 1)[0]
    return head.rsplit(".", 1)[-1] if "." in head else None


def _chain_objects(task, coro, skip):
    """The ids of a task and the coroutines and frames it awaits through: they hold the awaited
    future too, and would crowd out the holder worth naming (owners.py keeps a few per object)."""
    skip.add(id(task))
    for link, frame in _links(coro):
        if type(link) in _CORO_ATTRS:   # not the awaited object itself: its holder is sought
            skip.add(id(link))
            if frame is not None:
                skip.add(id(frame))


def _name_waiters(out, waiters, chain_ids=()):
    """Who keeps each awaited plain future (`ExportCoordinator._waiters[*]`): whoever should set its
    result. One search of the heap for all of them (owners.py); a coroutine's own frame, which
    holds what it awaits anyway, does not count."""
    if not waiters:
        return
    import gc
    from . import owners
    objs = list(waiters.values())[:MAX_WAITERS_NAMED]
    heap = None
    try:
        pause = owners.pauser([0.0])
        skip = set(owners.ours(objs, pause))
        skip.update(chain_ids)
        heap = gc.get_objects()
        skip.update((id(heap), id(objs), id(skip), id(out), id(waiters)))
        paths, _ = owners.owner_paths([[o] for o in objs], heap, skip, pause, per_object=owners.HOLDERS_KEPT)
    except Exception:
        return
    finally:
        heap = None
    held = {}
    for o, ranked in zip(objs, paths):
        # a frame holds what it awaits anyway; `.?` is a holder with no name (asyncio's own iterators)
        names = [p for p, _ in ranked if p is not None and not p.startswith("frame of") and "?" not in p]
        if names:
            held[id(o)] = names[0]
    users = {}
    for task in out:
        path = held.get(task.pop("_waiter_id", None))
        cls = task.pop("_self_class", None)
        if path is not None:
            task["waiter_held_in"] = path
            attr = _attr_of(path)
            if attr is not None and cls is not None:
                key = (cls, attr)
                if key not in users:
                    try:
                        users[key] = _users_of(cls, attr)
                    except Exception:
                        users[key] = []
                task["waiter_users"] = users[key]


def tasks(viewer=None, name_waiters=False):
    """Every pending task: name, coroutine, await chain; with name_waiters, who holds the plain
    future each one awaits (a heap search: asked for with async_tasks only)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    out = []
    waiters = {}
    chain_ids = set()
    lines = srclines.Lines()
    for t in _all_tasks(asyncio):
        base = _task_base(asyncio, t)
        if base is None:
            continue
        try:
            if base.done(t):
                continue
            coro = base.get_coro(t)
            name = base.get_name(t) if hasattr(base, "get_name") else "Task-%x" % id(t)
            waiter = _waiter(base, t)
            task = {"name": name if type(name) is str else objview.short_repr(name, 80),
                    "coro": (coro.__qualname__ if type(coro) in _CORO_ATTRS
                             else objstate.type_name(type(coro))),
                    "frames": _await_chain(coro, waiter, viewer, lines)}
            # a plain future (not a task: its own chain says what it does) is set by whoever keeps it
            if name_waiters and waiter is not None and _task_base(asyncio, waiter) is None:
                waiters[id(waiter)] = waiter
                task["_waiter_id"] = id(waiter)
                task["_self_class"] = _innermost_self_class(coro)
                _chain_objects(t, coro, chain_ids)
            out.append(task)
        except BaseException:
            continue
    _name_waiters(out, waiters, chain_ids)
    for task in out:
        task.pop("_waiter_id", None)
        task.pop("_self_class", None)
    out.sort(key=lambda x: x["name"])
    return out


def _running_loops():
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return 0
    loops = set()
    for t in _all_tasks(asyncio):
        base = _task_base(asyncio, t)
        try:
            if base is not None and not base.done(t):
                loops.add(id(base.get_loop(t)))
        except BaseException:
            pass
    return len(loops)


TASKS_UNASKED = 10   # pending tasks shown without async_tasks (an event loop's thread shows only select())


@command("stack")
def stack(args, ctx):
    """{pid, threads, locks, deadlocks, asyncio_imported, tasks, tasks_total, event_loops (without
    async_tasks)}: every pending task with async_tasks, else the first TASKS_UNASKED of them (None when
    there are none). With locals, every frame's locals as views."""
    found = tasks(objview.Viewer() if args["locals"] else None, name_waiters=args["async_tasks"])
    listed, held, deadlocks = threads(args["locals"])
    result = {"pid": os.getpid(), "threads": listed, "locks": held, "deadlocks": deadlocks,
              "asyncio_imported": "asyncio" in sys.modules,
              "tasks": None, "tasks_total": len(found) if found is not None else None, "event_loops": None}
    if args["async_tasks"]:
        result["tasks"] = found if found is not None else []
    else:
        result["event_loops"] = _running_loops()
        result["tasks"] = found[:TASKS_UNASKED] if found else None
    return result
