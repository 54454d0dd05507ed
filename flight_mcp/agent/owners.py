"""Who holds given objects, named the way a person would reach them: `pkg.mod.CACHE[*]` (a module
global), `Registry._by_topic[*][*]` (an instance attribute, then container levels), `pkg.mod.Class.REG`
(a class attribute), `closure of pkg.mod.make.<locals>.handler`, `frame of worker (app.py:40)`.

Holders are found by going over a heap snapshot (gc.get_objects()), never one gc.get_referrers per
object: gc.get_referents is asked for a slice of the heap at once, and a slice is looked at closer
only when it refers to one of the objects sought (one set test per slice, in C). A holder that is a
container is sought in turn from where it was found, one full turn round the heap (climb()), so
the levels up to an owner (a list in a dict in an instance's __dict__ is three) cost about one pass
more than the sample alone, at most MAX_LEVELS levels. It yields between slices (pause()), so
application threads keep running.

Nothing here runs the target's code: containers are read through gc.get_referents and the base
types' own methods (objstate.py), names from C-level descriptors; keys are matched by identity.
The agent's own objects (ours()) are never holders: an object only the agent holds has no owner.
"""
import _thread
import gc
import itertools
import os
import sys
import time
import types

from . import objstate

SLICE = 2000            # heap objects per gc.get_referents call
SUB = 50                # objects per call where a slice refers to an object sought
BIG = 20000             # a list/tuple longer than this is read in slices of its own
MAX_LEVELS = 6          # passes over the heap, i.e. container levels climbed from an object
HOLDERS_KEPT = 3        # holders remembered per object (an object may be held in several places)
PATHS_PER_OBJECT = 2    # owner paths one sampled object counts towards
WALK_LIMIT = 200000     # objects of the agent's own that ours() visits at most

_dict, _list, _tuple, _set, _frozenset, _deque = objstate.CONTAINERS
_cell = types.CellType if hasattr(types, "CellType") else type((lambda x: lambda: x)(0).__closure__[0])
_func_globals = types.FunctionType.__dict__["__globals__"].__get__
_func_qualname = types.FunctionType.__dict__["__qualname__"].__get__
_func_closure = types.FunctionType.__dict__["__closure__"].__get__
_func_module = types.FunctionType.__dict__["__module__"].__get__
_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
_PKG = __name__.rpartition(".")[0]


def agent_modules():
    """The agent's own modules (loaded under a private package name)."""
    return [m for k, m in list(sys.modules.items())
            if type(k) is str and (k == _PKG or k.startswith(_PKG + ".")) and type(m) is types.ModuleType]


def ours(extra=(), pause=None):
    """{id: object or None} of the agent's own objects (None: a frame of this thread): its modules and their namespaces, its classes,
    functions (their code, defaults, closures), instances of its classes, the built-in containers
    those hold (a connection's dicts, a capture's records), its threads' frames, and `extra`.
    Objects of the target that the agent's containers refer to are not ours (they stop the walk),
    nor are the namespaces of the target's modules and classes met on the way."""
    reader = objstate.Reader()
    mods = agent_modules()
    agent_mods = set(map(id, mods))
    agent_dicts = {}
    for m in mods:
        d = reader.instance_dict(m)
        if d is not None:
            agent_dicts[id(d)] = d
    foreign = set()   # namespaces of the target's modules and classes: never walked into
    for m in list(sys.modules.values()):
        if type(m) is types.ModuleType:
            d = reader.instance_dict(m)
            if d is not None and id(d) not in agent_dicts:
                foreign.add(id(d))
    found = {}
    todo = list(mods)
    for o in extra:                   # the command's own working objects: ours whatever their type
        found[id(o)] = o
        todo.extend(gc.get_referents(o))
    frame = sys._getframe(1)
    while frame is not None:          # this thread's frames (the command running this): by id only,
        found[id(frame)] = None       # a reference would keep their locals alive in a cycle
        frame = frame.f_back
    steps = 0
    while todo and len(found) < WALK_LIMIT:
        steps += 1
        if pause is not None and steps % 500 == 0:
            pause()
        o = todo.pop()
        if id(o) in found:
            continue
        t = type(o)
        if not _is_ours(o, t, agent_dicts, agent_mods):
            if issubclass(t, type):
                try:
                    foreign.add(id(objstate.class_dict(o)))
                except Exception:
                    pass
            continue
        if id(o) in foreign:
            continue
        found[id(o)] = o
        for r in gc.get_referents(o):
            rt = type(r)
            if issubclass(rt, type) and not _agent_class(r):
                try:
                    foreign.add(id(objstate.class_dict(r)))  # a (class, its namespace) pair in a cache
                except Exception:
                    pass
            if id(r) not in found and id(r) not in foreign:
                todo.append(r)
    del todo, frame   # (found itself is not in found: it would hold itself in a cycle)
    return found


def _agent_class(t):
    mod = objstate.own(t, "__module__") if objstate.is_heap(t) else None
    return type(mod) is str and (mod == _PKG or mod.startswith(_PKG + "."))


def _is_ours(o, t, agent_dicts, agent_mods):
    """Whether o, met on the walk from the agent's modules, belongs to the agent."""
    if t is types.ModuleType:
        return id(o) in agent_mods
    if id(o) in agent_dicts:
        return True
    if issubclass(t, type):
        return _agent_class(o)
    if t is types.FunctionType:
        return id(_func_globals(o)) in agent_dicts
    if t is types.CodeType:
        return os.path.dirname(os.path.abspath(o.co_filename)) == _AGENT_DIR
    if _agent_class(t):
        return True
    # built-in containers, cells, bound methods and descriptors the agent's objects hold
    if t is _dict or t is _list or t is _tuple or t is _set or t is _frozenset or t is _deque or t is _cell:
        return True
    return t is types.MethodType or t is types.BuiltinFunctionType or t is staticmethod or t is classmethod \
        or t is property


# ---- finding holders ----

def find_holders(heap, targets, skip, pause, found=None):
    """{id(target): [holders]} (at most HOLDERS_KEPT each) for `targets` ({id: object}), by one pass
    over `heap`; objects whose id is in `skip` (the agent's) are never holders."""
    found = {} if found is None else found
    tids = set(targets)
    for i in range(0, len(heap) if tids else 0, SLICE):
        _scan(heap[i:i + SLICE], tids, skip, pause, found, None)
        pause()
    return found


def climb(heap, targets, skip, pause, found, climbs, max_levels, big_ids=frozenset()):
    """Holders of `targets` and, for each holder that climbs(h) (a container), of that holder too,
    up to max_levels levels: by going round the heap (a circle) until every object sought has been
    checked against every heap object once. A holder found at some point of the round is sought
    from there on, one full turn, so a dict of lists in an instance costs about one pass more than
    the objects alone, not one pass per level. Returns the passes made (heap lengths scanned)."""
    n = len(heap)
    if not n or not targets:
        return 0.0
    live = {}                       # id -> [object, position where its turn ends, level]
    for k, o in targets.items():
        live[k] = [o, n, 1]
    tids = set(live)
    seen = set(live)
    state = {"pos": 0, "next_end": n}

    def on_holder(h, child_id):
        if id(h) in seen or id(h) in skip:
            return
        level = live[child_id][2] + 1 if child_id in live else max_levels + 1
        if level > max_levels or not climbs(h):
            return
        seen.add(id(h))
        end = state["pos"] + n + SLICE   # the slice it was found in is looked at again, whole
        live[id(h)] = [h, end, level]
        tids.add(id(h))
        if end < state["next_end"]:
            state["next_end"] = end

    limit = max_levels * (n + SLICE)
    while tids and state["pos"] < limit:
        i = state["pos"] % n
        chunk = heap[i:min(i + SLICE, n)]
        _scan(chunk, tids, skip, pause, found, on_holder, big_ids)
        state["pos"] += len(chunk)
        del chunk
        if state["pos"] >= state["next_end"]:   # some turns are complete: stop seeking those
            pos, nxt = state["pos"], limit + n
            for k in [k for k, v in live.items() if v[1] <= pos]:
                del live[k]
                tids.discard(k)
            for v in live.values():
                nxt = min(nxt, v[1])
            state["next_end"] = nxt
        pause()
    return state["pos"] / float(n)


def _scan(chunk, tids, skip, pause, found, on_holder, big_ids=frozenset()):
    """Records in found which objects of chunk refer to an object sought (ids in tids): one
    gc.get_referents call for the chunk, then sub-slices of SUB, then object by object where one
    refers to an object sought. on_holder(holder, id(target)) hears of each holder found.
    Objects whose ids are in big_ids are read on their own, in slices."""
    if big_ids and not big_ids.isdisjoint(map(id, chunk)):
        for h in chunk:
            if id(h) in big_ids and id(h) not in skip:
                _hold_sliced(h, tids, found, on_holder, pause)
        chunk = [h for h in chunk if id(h) not in big_ids]
    try:
        refs = gc.get_referents(*chunk)
    except Exception:
        refs = ()
    hit = not tids.isdisjoint(map(id, refs))
    refs = None
    if not hit:
        return
    for j in range(0, len(chunk), SUB):
        sub = chunk[j:j + SUB]
        try:
            if tids.isdisjoint(map(id, gc.get_referents(*sub))):
                continue
        except Exception:
            pass
        for h in sub:
            if id(h) not in skip:
                _hold(h, _referents(h, pause), tids, found, on_holder)
        pause()


def _hold_sliced(h, tids, found, on_holder, pause):
    """_hold for a huge container, BIG items at a time (one set test each, in C), yielding between:
    lists and tuples by slices, dicts by their keys' and values' own iterators (a dict changed by
    the application meanwhile is read again in one call)."""
    t = type(h)
    if issubclass(t, _list) or issubclass(t, _tuple):
        base = _list if issubclass(t, _list) else _tuple
        for j in range(0, base.__len__(h), BIG):
            part = base.__getitem__(h, slice(j, j + BIG))
            if not tids.isdisjoint(map(id, part)):
                _hold(h, part, tids, found, on_holder)
            pause()
        return
    if issubclass(t, _dict):
        try:
            for view in (_dict.keys(h), _dict.values(h)):
                it = iter(view)
                while True:
                    part = list(itertools.islice(it, BIG))
                    if not part:
                        break
                    if not tids.isdisjoint(map(id, part)):
                        _hold(h, part, tids, found, on_holder)
                    pause()
            return
        except RuntimeError:   # changed size between two slices
            pass
    _hold(h, _referents(h, pause), tids, found, on_holder)


def _hold(h, refs, tids, found, on_holder):
    """Notes h as a holder of each object sought among refs."""
    for r in refs:
        if id(r) in tids:
            got = found.setdefault(id(r), [])
            if len(got) < HOLDERS_KEPT and _absent(got, h):
                got.append(h)
                if on_holder is not None:
                    on_holder(h, id(r))


def _absent(items, obj):
    for x in items:
        if x is obj:
            return False
    return True


def _referents(h, pause):
    """What h refers to, a big list or tuple read in slices (yielding between them)."""
    t = type(h)
    base = _list if issubclass(t, _list) else _tuple if issubclass(t, _tuple) else None
    if base is not None and base.__len__(h) > BIG:
        out = []
        for j in range(0, base.__len__(h), BIG):
            out.extend(base.__getitem__(h, slice(j, j + BIG)))
            pause()
        return out
    try:
        return gc.get_referents(h)
    except Exception:
        return ()


# ---- naming ----

def _is_container(t):
    return t is _dict or t is _list or t is _tuple or t is _set or t is _frozenset or t is _deque or t is _cell \
        or objstate.container_base(t) is not None


class _Namer(object):
    def __init__(self, holders, reader, module_dicts):
        self.holders = holders
        self.reader = reader
        self.module_dicts = module_dicts
        self.memo = {}
        self.keys = {}

    def key_in(self, d, child):
        """The key under which dict d holds child (by identity), memoized per dict."""
        rev = self.keys.get(id(d))
        if rev is None:
            rev = {}
            try:
                for k, v in objstate.dict_items(d):
                    rev.setdefault(id(v), k)
            except Exception:
                pass
            self.keys[id(d)] = (d, rev)
        else:
            rev = rev[1]
        k = rev.get(id(child), objstate.MISSING)
        if k is objstate.MISSING:
            return None
        return k if type(k) is str else "[%s]" % _key_text(k)

    def name(self, obj, depth):
        """The path naming container obj (memoized): how its first holder holds it."""
        got = self.memo.get(id(obj))
        if got is not None:
            return got[1]
        hs = self.holders.get(id(obj), ())
        if depth <= 0:
            path = "..." + _anon(obj)
        elif not hs:
            path = _anon(obj)
        else:
            path = self.held(obj, _best(hs, self), depth - 1)
        self.memo[id(obj)] = (obj, path)
        return path

    def below(self, h, depth, suffix):
        """name(h) + suffix, or None when h is held only by the agent."""
        p = self.name(h, depth)
        return None if p is None else p + suffix

    def held(self, child, h, depth):
        """The path of `child` as held by `h`; None when h is the agent's (no owner of the target's)."""
        t = type(h)
        if _agent_class(t):
            return None
        if id(h) in self.module_dicts:
            return "%s.%s" % (self.module_dicts[id(h)], self.key_in(h, child) or "?")
        if t is types.FrameType:
            code = h.f_code
            return "frame of %s (%s:%d)" % (code.co_name, os.path.basename(code.co_filename), h.f_lineno)
        if t is _cell:
            return self.closure(h, depth)
        if issubclass(t, type):
            try:
                if objstate.class_dict(h) is child:
                    return objstate.type_name(h) + ".__dict__"
            except Exception:
                pass
            return objstate.type_name(h) + ".?"
        if issubclass(t, _dict):
            owner = self.dict_owner(h)
            if owner is not None and _agent_class(type(owner)):
                return None
            if owner is not None:
                k = self.key_in(h, child)
                if issubclass(type(owner), type):
                    return "%s.%s" % (objstate.type_name(owner), k or "?")
                return "%s.%s" % (_qual(type(owner)), k or "?")
            return self.below(h, depth, "[*]")
        if _is_container(t):
            return self.below(h, depth, "[*]")
        if t is types.FunctionType:
            return "%s.%s" % (_func_name(h), "__defaults__" if _in_defaults(h, child) else "?")
        if t is types.MethodType:
            return "bound method of %s" % _anon(child)
        # an instance: an attribute (inline __dict__ on 3.11+, or a slot), or its __dict__ itself
        d = self.reader.instance_dict(h) if objstate.is_heap(t) else None
        if d is child:
            return "%s.__dict__" % _qual(t)
        k = self.key_in(d, child) if d is not None else None
        if k is None:
            for name, v in self.reader.slot_values(h):
                if v is child:
                    k = name
                    break
        return "%s.%s" % (_qual(t), k or "?")

    def dict_owner(self, d):
        """The instance or class whose namespace dict d is, among d's holders."""
        for h in self.holders.get(id(d), ()):
            t = type(h)
            if issubclass(t, type):
                try:
                    if objstate.class_dict(h) is d:
                        return h
                except Exception:
                    continue
            elif not _is_container(t) and t is not types.FrameType and objstate.is_heap(t):
                if self.reader.instance_dict(h) is d:
                    return h
        return None

    def closure(self, cell, depth):
        for tup in self.holders.get(id(cell), ()):
            for f in self.holders.get(id(tup), ()):
                if type(f) is types.FunctionType and _func_closure(f) is tup:
                    return "closure of %s" % _func_name(f)
        return "closure cell"


def _in_defaults(f, child):
    d = types.FunctionType.__dict__["__defaults__"].__get__(f)
    return type(d) is tuple and any(x is child for x in d)


def _func_name(f):
    mod = _func_module(f)
    qual = _func_qualname(f)
    return "%s.%s" % (mod, qual) if type(mod) is str and type(qual) is str else "?"


def _qual(t):
    """A class by its qualified name within its module (what a person calls it: Registry)."""
    try:
        q = objstate._qualname_of(t)
    except Exception:
        return "?"
    return q if type(q) is str else "?"


def _anon(obj):
    return "<%s>" % objstate.short_name(type(obj))


def _key_text(k):
    t = type(k)
    if t is int or t is float or t is bool or k is None:
        return repr(k)
    if t is str:
        return repr(k[:40])
    return "<%s>" % objstate.short_name(t)


def _rank(h, namer):
    """Lower is a better holder to name a path by: a module global, an instance or class, then a
    container, then a frame."""
    t = type(h)
    if id(h) in namer.module_dicts:
        return 0
    if t is types.FrameType:
        return 3
    if _is_container(t):
        return 2
    return 1


def _best(hs, namer):
    return min(hs, key=lambda h: _rank(h, namer))


def _climbs(h, namer):
    """Whether naming a path through holder h needs h's own holders."""
    t = type(h)
    if id(h) in namer.module_dicts or t is types.FrameType or issubclass(t, type):
        return False
    return _is_container(t)


def owner_paths(groups, heap, skip, pause, big=(), per_object=PATHS_PER_OBJECT):
    """For each group (a list of sampled objects), [(path, count)] most common first: where they are
    held. Returns (paths per group, facts): facts has passes. `big`: the heap's huge objects (a
    list of a million items), read apart and in slices so that no slice holds the GIL long.
    per_object: owner paths one object counts towards (its best holders first)."""
    reader = objstate.Reader()
    module_dicts = {}
    for name, m in list(sys.modules.items()):
        if type(name) is str and type(m) is types.ModuleType and not (name == _PKG or name.startswith(_PKG + ".")):
            d = reader.instance_dict(m)
            if d is not None:
                module_dicts[id(d)] = name
    namer = _Namer({}, reader, module_dicts)
    targets = {}
    for objs in groups:
        for o in objs:
            targets[id(o)] = o
    passes = climb(heap, targets, skip, pause, namer.holders, lambda h: _climbs(h, namer), MAX_LEVELS,
                   set(map(id, big)))
    depth = MAX_LEVELS
    out = []
    for objs in groups:
        counts = {}
        for o in objs:
            hs = sorted(namer.holders.get(id(o), ()), key=lambda h: _rank(h, namer))[:per_object]
            paths = []
            for h in hs:
                p = namer.held(o, h, depth)
                if p is not None and p not in paths:
                    paths.append(p)
            if hs and not paths:
                continue         # held by the agent only: not the target's object
            if not paths:
                paths = [None]   # no holder among the tracked objects
            for p in paths:
                counts[p] = counts.get(p, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] or ""))
        out.append(ranked)
    return out, {"passes": round(passes, 2)}


YIELD_S = 0.0001          # how long pause() leaves the GIL to the application's threads
YIELD_EVERY_S = 0.01      # ... once per this much work (the interpreter's own switch interval,
                          # 5 ms, hands the GIL over between slices anyway when a thread waits)


def pauser(longest):
    """A pause() that yields the GIL and records the longest stretch held between two calls in
    longest[0] (ms); pause.reset() after a wait that did not hold it (an interval's sleep).
    Between two slices the interpreter itself hands the GIL to a thread that asked for it (after
    its switch interval), so a slice is what an application thread may wait; every YIELD_EVERY_S
    pause() also waits YIELD_S on a lock of its own, GIL released (not time.sleep: the target may
    have replaced it, e.g. gevent; and sleep(0) may take the GIL straight back)."""
    last = [time.perf_counter()]
    yielded = [last[0]]
    perf = time.perf_counter
    gate = _thread.allocate_lock()
    gate.acquire()
    wait = gate.acquire

    def pause():
        now = perf()
        held = (now - last[0]) * 1000.0
        if held > longest[0]:
            longest[0] = held
        if now - yielded[0] >= YIELD_EVERY_S:
            wait(True, YIELD_S)
            now = yielded[0] = perf()
        last[0] = now

    def reset():
        last[0] = yielded[0] = perf()
    pause.reset = reset
    return pause
