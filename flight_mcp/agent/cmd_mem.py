"""mem: live objects by type (count, total size) with the process's RSS; and what grows between two
snapshots, with who holds the new objects (owners.py).

Objects are enumerated with gc.get_objects(): the objects the cyclic GC tracks. Objects it does not
track (ints, floats, strs, bytes; tuples and dicts holding only such atoms once the GC untracked
them) are not enumerated, so they are not counted: the answer says how many bytes the tracked
objects take beside the RSS.

The target comes first: the heap is read in slices of SLICE objects, each a few C calls (counting by
type is one C-level count over the slice), and the GIL is yielded between slices, so an
application thread waits at most about one slice (plus the interpreter's switch interval); the
longest stretch we held is measured and returned. gc.get_objects(2) itself is one C call over the
oldest generation (~25 ms per million objects on an idle core), the one pause we cannot slice.

Sizes run no code of the target: sys.getsizeof calls the type's own __sizeof__, so it is used only
where that is C code (a built-in type's, or object's); a class defining __sizeof__ in Python is
counted at its basic size (marked estimated). Types are counted as dict keys only when no metaclass
in the process defines __hash__ or __eq__ (else by id).

Nothing is kept between calls. During a diff the first snapshot is kept as the ids of its objects in
an array (8 bytes per object), plus references to at most CANDIDATES objects of each top grower.
"New" means at an address the first snapshot did not have (an object freed and another of the same
type made at its address in between is not seen as new). The agent's own objects are left out
(owners.ours()).
"""
import gc
import itertools
import operator
import os
import sys
import time
import types
from array import array

from . import objstate, owners
from .registry import AgentError, command

try:
    from _collections import _count_elements   # what Counter uses, without its ABC check of `map`
except ImportError:  # not CPython's accelerator: the same in Python
    def _count_elements(mapping, iterable):
        get = mapping.get
        for x in iterable:
            mapping[x] = get(x, 0) + 1

SLICE = 5000             # objects counted per slice between two yields (~2-5 ms)
GROWERS = 5              # types whose new objects get owners (those that grew most in count)
CANDIDATES = 50000       # objects of one grower type tested for newness at most
SAMPLE = 100             # new objects of one grower type whose holders are looked for (5 types: 500)
OWNER_PATHS = 8          # owner paths returned per grower
BIG_BYTES = 1 << 16      # an object this big (a container of ~8,000 items) is noted for owners.py
BIG_KEPT = 10000         # such objects noted at most
_HAVE_GC = 1 << 14
_basicsize = type.__dict__["__basicsize__"].__get__
_object_sizeof = object.__dict__["__sizeof__"]
_C_FUNCS = (type(object.__dict__["__sizeof__"]), type(list.__dict__["__sizeof__"]), type(len))


def _c_function(fn):
    """fn is a built-in function or slot wrapper (compared with `is`: `in` would call a
    metaclass's __eq__)."""
    t = type(fn)
    for c in _C_FUNCS:
        if t is c:
            return True
    return False
_GC_HEAD = 16
_is = operator.is_


def rss_bytes():
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _keys_safe():
    """Whether every metaclass hashes and compares as `type` does (by identity, in C): then types
    can be dict keys. Metaclasses are all subclasses of type."""
    todo, seen = [type], set()
    while todo:
        m = todo.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        for name in ("__hash__", "__eq__"):
            owner, _ = objstate.lookup(m, name)
            if owner is not None and objstate.is_heap(owner):
                return False
        try:
            todo.extend(type.__subclasses__(m))
        except TypeError:
            pass
    return True


class _Sizes(object):
    """How each type's objects are sized (keyed by id of the type; the type is kept alive here):
    a constant per object, sys.getsizeof each (a C __sizeof__: None), or the basic size when the
    type's __sizeof__ is the target's code (estimated)."""

    def __init__(self):
        self.rule = {}        # id(type) -> size per object, or None (sys.getsizeof each)
        self.types = {}       # id(type) -> type
        self.estimated = set()

    def learn(self, t, sample):
        k = id(t)
        self.types[k] = t
        owner, fn = objstate.lookup(t, "__sizeof__")
        c_code = owner is None or not objstate.is_heap(owner) or _c_function(fn)
        if not c_code:
            self.estimated.add(k)
            self.rule[k] = _basicsize(t) + (_GC_HEAD if objstate.flags(t) & _HAVE_GC else 0)
        elif fn is _object_sizeof and type.__dict__["__itemsize__"].__get__(t) == 0:
            self.rule[k] = sys.getsizeof(sample)   # C code only: object.__sizeof__
        else:
            self.rule[k] = None

    def size(self, o):
        k = id(type(o))
        if k not in self.rule:
            self.learn(type(o), o)
        r = self.rule[k]
        return sys.getsizeof(o) if r is None else r


class _Scan(object):
    """Counts and sizes by type (id(type) -> n, bytes) of a heap snapshot, slice by slice."""

    def __init__(self, sizes, pause, keys_safe):
        self.counts = {}
        self.bytes = {}
        self.big = []    # objects of BIG_BYTES or more (huge containers): read in slices by owners.py
        self.sizes = sizes
        self.pause = pause
        self.keys_safe = keys_safe

    def run(self, objs):
        for i in range(0, len(objs), SLICE):
            chunk = objs[i:i + SLICE]
            if self.keys_safe:
                self._slice(chunk)
            else:
                self._slice_by_id(chunk)
            del chunk
            self.pause()

    def _slice(self, chunk):
        """Types counted as keys of a Counter, in C (safe: no metaclass hashes or compares)."""
        sizes, counts, total, rule = self.sizes, self.counts, self.bytes, self.sizes.rule
        c = {}
        _count_elements(c, map(type, chunk))   # (Counter() would ask an ABC about `map`)
        new = [t for t in c if id(t) not in rule]
        if new:
            want = set(new)
            for o in itertools.compress(chunk, map(want.__contains__, map(type, chunk))):
                t = type(o)
                if t in want:
                    sizes.learn(t, o)
                    want.discard(t)
                    if not want:
                        break
        each = []
        for t, n in c.items():
            k = id(t)
            counts[k] = counts.get(k, 0) + n
            r = rule[k]
            if r is None:
                each.append(t)
            else:
                total[k] = total.get(k, 0) + n * r
        if each:
            # A type with a big share of the slice is summed by one C-level pass of its own; the
            # few others together by one loop.
            getsize = sys.getsizeof
            rest = []
            for t in each:
                if c[t] * 8 >= len(chunk):
                    picked = list(itertools.compress(chunk, map(_is, map(type, chunk), itertools.repeat(t))))
                    got = list(map(getsize, picked))
                    total[id(t)] = total.get(id(t), 0) + sum(got)
                    if max(got) >= BIG_BYTES:
                        self._note_big(picked, got)
                else:
                    rest.append(t)
            if rest:
                sums = dict.fromkeys(rest, 0)
                want = set(rest)
                for o in itertools.compress(chunk, map(want.__contains__, map(type, chunk))):
                    b = getsize(o)
                    sums[type(o)] += b
                    if b >= BIG_BYTES:
                        self._note_big([o], [b])
                for t, b in sums.items():
                    total[id(t)] = total.get(id(t), 0) + b

    def _note_big(self, objs, sizes_):
        for o, b in zip(objs, sizes_):
            if b >= BIG_BYTES and len(self.big) < BIG_KEPT:
                self.big.append(o)

    def _slice_by_id(self, chunk):
        """The same keyed by id(type), in Python: a metaclass of the target hashes or compares."""
        counts, total, size = self.counts, self.bytes, self.sizes.size
        for o in chunk:
            k = id(type(o))
            counts[k] = counts.get(k, 0) + 1
            b = size(o)
            total[k] = total.get(k, 0) + b
            if b >= BIG_BYTES and len(self.big) < BIG_KEPT:
                self.big.append(o)

    def rows(self):
        """[(type, count, bytes)]."""
        types_ = self.sizes.types
        return [(types_[k], n, self.bytes.get(k, 0)) for k, n in self.counts.items()]


def _subtract_ours(rows, mine, objs, sizes):
    """rows without the agent's own objects (tracked ones, counted in the snapshot) and classes."""
    less_n, less_b = {}, {}
    frames = 0
    # mine and objs are not in mine: each would hold the other (objs lists mine) in a cycle
    for o in list(mine.values()) + [mine, objs]:
        if o is None:
            frames += 1
        elif gc.is_tracked(o) and id(type(o)) in sizes.rule:
            k = id(type(o))
            less_n[k] = less_n.get(k, 0) + 1
            less_b[k] = less_b.get(k, 0) + sizes.size(o)
    if frames:    # this command's own frames (on 3.11+ only those materialized are objects)
        less_n[id(types.FrameType)] = less_n.get(id(types.FrameType), 0) + frames
    out = []
    excluded = 0
    for t, n, b in rows:
        k = id(t)
        if owners._agent_class(t):
            excluded += n
            continue
        dn = min(less_n.get(k, 0), n)
        excluded += dn
        if n - dn > 0:
            out.append((t, n - dn, max(0, b - less_b.get(k, 0))))
    return out, excluded


def _snapshot(pause, longest, extra=()):
    """(objs, mine): the heap as gc lists it (oldest generation first, so the biggest list is
    not copied), and the agent's own objects. gc.get_objects(2) is one C call: the longest hold."""
    mine = owners.ours(extra, pause)
    pause()
    started = time.perf_counter()
    objs = gc.get_objects(2)
    held = (time.perf_counter() - started) * 1000.0
    if held > longest[0]:
        longest[0] = held
    pause()
    for gen in (1, 0):
        objs.extend(gc.get_objects(gen))
        pause()
    return objs, mine


def _release(objs, pause):
    """Empties our snapshot a slice at a time (dropping a million references is itself ~10 ms)."""
    while objs:
        del objs[-SLICE * 4:]
        pause()


def _measure(objs, mine, sizes, pause, keys_safe, big=None):
    """(rows, excluded): counts and sizes by type without the agent's own objects; the big objects
    met are appended to `big` when given."""
    scan = _Scan(sizes, pause, keys_safe)
    scan.run(objs)
    rows, excluded = _subtract_ours(scan.rows(), mine, objs, sizes)
    if big is not None:
        big.extend(scan.big)
    del scan
    return rows, excluded


def _type_row(t, n, b, sizes):
    row = {"type": objstate.type_name(t), "count": n, "size": b}
    if id(t) in sizes.estimated:
        row["estimated"] = True
    return row


@command("mem")
def mem(args, ctx):
    action = args["action"]
    limit = args["limit"]
    descending = args["order"] == "descending"
    longest = [0.0]
    pause = owners.pauser(longest)
    sizes = _Sizes()
    keys_safe = _keys_safe()
    started = time.perf_counter()
    if action == "summary":
        objs, mine = _snapshot(pause, longest, (sizes, longest, ctx))
        try:
            rows, excluded = _measure(objs, mine, sizes, pause, keys_safe)
        finally:
            _release(objs, pause)
            del objs, mine
        rows.sort(key=lambda r: (r[2], r[1]), reverse=descending)
        return {"action": "summary", "limit": limit, "order": args["order"], "rss_bytes": rss_bytes(),
                "tracked_objects": sum(r[1] for r in rows), "tracked_bytes": sum(r[2] for r in rows),
                "types_total": len(rows), "types": [_type_row(t, n, b, sizes) for t, n, b in rows[:limit]],
                "excluded_own": excluded, "keys_by_id": not keys_safe,
                "scan_ms": round((time.perf_counter() - started) * 1000.0, 3),
                "longest_hold_ms": round(longest[0], 3)}
    if action != "diff":
        raise AgentError("bad_action", "mem has the actions summary and diff, not %r" % (action,), arg="action")
    return _diff(args, ctx, limit, descending, longest, pause, sizes, keys_safe, started)


def _diff(args, ctx, limit, descending, longest, pause, sizes, keys_safe, started):
    interval = args["interval"]
    rss_before = rss_bytes()
    objs, mine = _snapshot(pause, longest, (sizes, longest, ctx))
    try:
        before, _ = _measure(objs, mine, sizes, pause, keys_safe)
        old_ids = array("Q")
        for i in range(0, len(objs), SLICE * 5):
            old_ids.extend(map(id, objs[i:i + SLICE * 5]))
            pause()
    finally:
        _release(objs, pause)
        del objs, mine
    snapshot_bytes = old_ids.itemsize * len(old_ids)
    first_ms = (time.perf_counter() - started) * 1000.0
    ctx.emit({"phase": "waiting", "interval_s": interval})
    waited = time.monotonic()
    while not ctx.cancelled:
        left = interval - (time.monotonic() - waited)
        if left <= 0:
            break
        ctx.sleep(left)
    pause.reset()
    if ctx.cancelled:
        raise AgentError("cancelled", "mem diff was cancelled during its interval; nothing is kept.")
    # id(type) -> [count, bytes]; sizes.types keeps the types alive. Lists, not tuples: the GC
    # untracks a dict of atoms, and this one must stay in the second snapshot to be left out of it.
    before_by_id = {}
    for t, n, b in before:
        before_by_id[id(t)] = [n, b]
    del before
    second = time.perf_counter()
    objs, mine = _snapshot(pause, longest, (before_by_id, old_ids, sizes, longest, ctx))
    try:
        big = []
        after, _ = _measure(objs, mine, sizes, pause, keys_safe, big)
        rows, grown, seen = [], [], set()
        for t, n, b in after:
            seen.add(id(t))
            n0, b0 = before_by_id.get(id(t), (0, 0))
            if n != n0 or b != b0:
                rows.append((t, n - n0, b - b0, n))
            if n > n0:
                grown.append((n - n0, b - b0, t))
        for k, (n0, b0) in before_by_id.items():
            if k not in seen:
                rows.append((sizes.types[k], -n0, -b0, 0))
        grown.sort(key=lambda g: (g[0], g[1]), reverse=True)
        scan_ms = (time.perf_counter() - second) * 1000.0 + first_ms
        owners_started = time.perf_counter()
        growers = _growers(grown[:GROWERS], objs, old_ids, mine, pause, big)
        del big
        owners_ms = (time.perf_counter() - owners_started) * 1000.0
    finally:
        _release(objs, pause)
        del objs, mine
    rows.sort(key=lambda r: (r[2], r[1]), reverse=descending)
    shown = []
    for t, dn, db, n in rows[:limit]:
        row = {"type": objstate.type_name(t), "count_delta": dn, "size_delta": db, "count": n}
        if id(t) in sizes.estimated:
            row["estimated"] = True
        shown.append(row)
    return {"action": "diff", "limit": limit, "order": args["order"], "interval_s": interval,
            "rss_before": rss_before, "rss_after": rss_bytes(),
            "tracked_before": sum(n for n, _ in before_by_id.values()),
            "tracked_after": sum(r[1] for r in after), "types_changed": len(rows), "rows": shown,
            "growers": growers, "snapshot_bytes": snapshot_bytes, "keys_by_id": not keys_safe,
            "scan_ms": round(scan_ms, 3), "owners_ms": round(owners_ms, 3),
            "longest_hold_ms": round(longest[0], 3)}


def _growers(top, objs, old_ids, mine, pause, big):
    """For each top grower (count delta, size delta, type): how many new objects were found (at
    addresses the first snapshot did not have) among its first CANDIDATES objects, and who holds a
    SAMPLE of them."""
    if not top:
        return []
    want = set(id(t) for _, _, t in top)
    cands = dict((k, []) for k in want)
    full = set()
    for i in range(len(objs), 0, -SLICE):    # youngest first: the new objects are there
        chunk = objs[max(0, i - SLICE):i]
        for o in itertools.compress(chunk, map(want.__contains__, map(id, map(type, chunk)))):
            got = cands[id(type(o))]
            if len(got) < CANDIDATES:
                got.append(o)
            else:
                full.add(id(type(o)))
        del chunk
        pause()
        if len(full) == len(want):
            break
    ids = set()
    for got in cands.values():
        ids.update(map(id, got))
    old = set()
    for i in range(0, len(old_ids), SLICE):
        old.update(ids.intersection(old_ids[i:i + SLICE]))
        pause()
    del ids
    groups, found = [], []
    for _, _, t in top:
        new = [o for o in cands[id(t)] if id(o) not in old and id(o) not in mine and o is not mine]
        found.append(len(new))
        if len(new) > SAMPLE:
            stride = len(new) / float(SAMPLE)
            new = [new[int(k * stride)] for k in range(SAMPLE)]
        groups.append(new)
    del cands, old
    skip = set(mine)
    skip.update((id(groups), id(skip), id(mine), id(objs)))
    skip.update(map(id, groups))
    skip.add(id(big))
    paths, _ = owners.owner_paths(groups, objs, skip, pause, big)
    out = []
    # the application's own classes first (what a person reads first), then built-in types
    order = sorted(range(len(top)), key=lambda i: (not objstate.is_heap(top[i][2]), -top[i][0]))
    top, groups, found, paths = ([seq[i] for i in order] for seq in (top, groups, found, paths))
    for (dn, db, t), group, n_new, ranked in zip(top, groups, found, paths):
        out.append({"type": objstate.type_name(t), "count_delta": dn, "size_delta": db,
                    "new_found": n_new, "candidates_capped": id(t) in full, "sampled": len(group),
                    "owners": [{"path": p, "count": n} for p, n in ranked[:OWNER_PATHS]],
                    "owners_elided": max(0, len(ranked) - OWNER_PATHS)})
    return out
