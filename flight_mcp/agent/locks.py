"""Which lock a blocked thread waits for, who holds it, and whether the waits form a cycle (deadlock).

Nothing of the target runs here. The lock a frame is blocked on is found from the frame's own code:
the instruction at f_lasti (`with E:` is SETUP_WITH / BEFORE_WITH; `E.acquire(...)` a call whose
callee was loaded by LOAD_METHOD / LOAD_ATTR `acquire`), decoded by the target's own `dis` (so each
version's opcodes, caches and argument encodings are its own), and the expression E is an attribute
chain (`self._lock`, `INVENTORY_LOCK`, `mod.LOCK`, `a.b.c`) resolved by reads of frame locals,
globals and instance/class dicts through objstate (no descriptor, property or __getattr__ runs).

Holders: an RLock knows its owner (the C RLock's own repr writes its owner's thread id, read by the
C type's own slot); otherwise a thread holds a lock when one of its frames is inside `with E:` (the
with's extent: SETUP_WITH's handler offset on 3.8-3.10, the exception table's handlers on 3.11+) or
after `E.acquire()` with no `E.release()` since (bytecode order), E resolving to the same object.
Where no thread is found, the holder is unknown: said so, never guessed.
"""
import collections
import os
import sys

from . import objstate

_THREADING_FILE = None
WITH_OPS = ("SETUP_WITH", "BEFORE_WITH")
CALL_OPS = {"CALL_FUNCTION": 0, "CALL_METHOD": 0, "CALL": 0, "CALL_FUNCTION_KW": 1, "CALL_KW": 1}
SKIP_OPS = ("PRECALL", "KW_NAMES", "CACHE", "NOP", "EXTENDED_ARG", "RESUME", "PUSH_NULL")
LOCAL_OPS = ("LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_AND_CLEAR", "LOAD_DEREF", "LOAD_CLOSURE")
GLOBAL_OPS = ("LOAD_GLOBAL", "LOAD_NAME")
WAIT_METHODS = ("acquire", "__enter__")
CHAIN_LIMIT = 12         # attribute steps followed in one expression
SCAN_LIMIT = 400         # instructions walked back from a call to find what it calls


# ---- decoding ----------------------------------------------------------------------------------

Ins = collections.namedtuple("Ins", "opname opcode arg argval offset")   # what we keep of dis.Instruction


class Code(object):
    """One code object's instructions (the target's dis), with the lock sites found in it."""
    __slots__ = ("code", "ins", "at", "_withs", "_sites", "_table", "_waits")

    def __init__(self, code):
        import dis
        self.code = code
        self.ins = [Ins(i.opname, i.opcode, i.arg, i.argval, i.offset) for i in dis.get_instructions(code)
                    if i.opname != "CACHE"]
        self.at = {i.offset: n for n, i in enumerate(self.ins)}
        self._withs = None
        self._sites = None
        self._table = None
        self._waits = {}

    def pushes(self, n):
        """How many stack items instruction n pushes (0 for stores and pops, 2 for method loads)."""
        i = self.ins[n]
        op = i.opname
        if op in SKIP_OPS:
            return 0
        if op == "LOAD_METHOD" or op == "LOAD_FAST_LOAD_FAST" or op == "DUP_TOP_TWO":
            return 2
        if op in ("LOAD_ATTR", "LOAD_GLOBAL") and i.arg is not None and i.arg & 1 and \
                sys.version_info >= ((3, 12) if op == "LOAD_ATTR" else (3, 11)):
            return 2   # the low bit of the argument: also pushes NULL (or the method's self)
        if op.startswith(("STORE_", "POP_", "DELETE_")):
            return 0
        return 1

    def effect(self, n):
        import dis
        i = self.ins[n]
        if i.opname in SKIP_OPS:
            return 0
        if i.opname == "CALL" and sys.version_info[:2] == (3, 11):
            return -(i.arg + 1)   # 3.11's dis counts -arg at PRECALL (skipped here) and -1 at CALL
        try:
            return dis.stack_effect(i.opcode, i.arg if i.opcode >= dis.HAVE_ARGUMENT else None, jump=False)
        except (ValueError, TypeError):
            return None

    def producer(self, n, k):
        """(index, depth) of the instruction that pushed the stack item k from the top just before
        instruction n, walking back in a straight line; None where that cannot be told."""
        j = n - 1
        steps = 0
        while j >= 0 and steps < SCAN_LIMIT:
            steps += 1
            p = self.pushes(j)
            e = self.effect(j)
            if e is None:
                return None
            if k < p:
                return j, k
            k = k - e
            if k < 0:
                return None
            j -= 1
        return None

    def chain(self, n, k=0):
        """The expression that pushed item k before instruction n, as (base, [attribute names]):
        base is ("local", name), ("global", name); None when it is not a plain chain."""
        attrs = []
        for _ in range(CHAIN_LIMIT):
            found = self.producer(n, k)
            if found is None:
                return None
            j, depth = found
            i = self.ins[j]
            op = i.opname
            if op in LOCAL_OPS and type(i.argval) is str:
                attrs.reverse()
                return ("local", i.argval), attrs
            if op == "LOAD_FAST_LOAD_FAST" and type(i.argval) is tuple and len(i.argval) == 2:
                attrs.reverse()
                return ("local", i.argval[1 - depth]), attrs
            if op in GLOBAL_OPS and type(i.argval) is str:
                attrs.reverse()
                return ("global" if op == "LOAD_GLOBAL" else "name", i.argval), attrs
            if op == "LOAD_ATTR" and type(i.argval) is str and depth == self.pushes(j) - 1:
                attrs.append(i.argval)
                n, k = j, 0
                continue
            return None
        return None

    def call_target(self, n):
        """(method name, chain of its receiver) for the call at instruction n, or None."""
        i = self.ins[n]
        extra = CALL_OPS.get(i.opname)
        if extra is None or i.arg is None:
            return None
        found = self.producer(n, i.arg + extra)
        if found is None:
            return None
        j, _ = found
        m = self.ins[j]
        if m.opname not in ("LOAD_METHOD", "LOAD_ATTR") or type(m.argval) is not str:
            return None
        c = self.chain(j, 0)
        return (m.argval, c) if c is not None else None

    def waiting_at(self, offset):
        """(how, chain) when the instruction at offset enters `with E:` or calls E.acquire/__enter__."""
        got = self._waits.get(offset, MISSING)
        if got is MISSING:
            got = self._waits[offset] = self._waiting_at(offset)
        return got

    def _waiting_at(self, offset):
        n = self.at.get(offset)
        if n is None:
            return None
        op = self.ins[n].opname
        if op in WITH_OPS:
            c = self.chain(n, 0)
            return ("with", c) if c is not None else None
        got = self.call_target(n)
        if got is not None and got[0] in WAIT_METHODS:
            return ("acquire", got[1])
        return None

    # ---- what a frame holds ----
    def sites(self):
        """[(offset, "acquire"|"release", chain)] of every E.acquire()/E.release() call in the code."""
        if self._sites is None:
            found = []
            for n, i in enumerate(self.ins):
                if i.opname in CALL_OPS:
                    got = self.call_target(n)
                    if got is not None and got[0] in ("acquire", "release"):
                        found.append((i.offset, got[0], got[1]))
            self._sites = found
        return self._sites

    def withs(self):
        """[(offset of the with, chain of its context manager, its handler offset)]."""
        if self._withs is None:
            found = []
            for n, i in enumerate(self.ins):
                if i.opname in WITH_OPS:
                    c = self.chain(n, 0)
                    if c is None:
                        continue
                    if i.opname == "SETUP_WITH":
                        found.append((i.offset, c, i.argval))
                    else:   # 3.11+: the handler of the exception-table entry just after BEFORE_WITH
                        nxt = self.ins[n + 1].offset if n + 1 < len(self.ins) else None
                        entry = self.entry_at(nxt)
                        if entry is not None:
                            found.append((i.offset, c, entry[2]))
            self._withs = found
        return self._withs

    def table(self):
        if self._table is None:
            import dis
            parse = getattr(dis, "_parse_exception_table", None)
            try:
                self._table = [(e.start, e.end, e.target) for e in parse(self.code)] if parse else []
            except Exception:
                self._table = []
        return self._table

    def entry_at(self, offset):
        if offset is None:
            return None
        for e in self.table():
            if e[0] <= offset < e[1]:
                return e
        return None

    def active_withs(self, lasti):
        """The with-statements whose body the instruction at lasti is in (the one at lasti itself,
        still entering, is not): [chain]."""
        withs = self.withs()
        if not withs:
            return []
        if sys.version_info < (3, 11):   # the block stack: SETUP_WITH's handler ends its body
            return [c for start, c, end in withs if type(end) is int and start < lasti < end]
        handlers = {end: c for start, c, end in withs}
        active = []
        seen = set()
        at = lasti
        while len(seen) < 50:   # handler of the innermost block, then of the block that handler is in
            entry = self.entry_at(at)
            if entry is None or entry[2] in seen:
                break
            seen.add(entry[2])
            if entry[2] in handlers:
                active.append(handlers[entry[2]])
            at = entry[2]
        return active


CODES_KEPT = 128          # decoded code objects kept between stack calls (ids stay valid: each is kept alive)
_DECODED = {}            # id(code) -> (code, Code or False); emptied when full, freed with the agent


class Decoder(object):
    """Decodes code objects on demand, through a cache shared by stack calls: decoding (dis) is the
    main cost of the lock analysis, and the same few functions block threads call after call."""

    def __init__(self):
        import dis
        self.opname = dis.opname
        real = dict((n, op) for n, op in dis.opmap.items() if op < 256)   # 3.12+ lists pseudo-ops too
        self.with_bytes = [real[n] for n in WITH_OPS if n in real]
        self.stop_ops = set(real[n] for n in tuple(WITH_OPS) + tuple(CALL_OPS) if n in real)

    def cached(self, code):
        """The decoded code when it is decoded already (False: not decodable), else None."""
        got = _DECODED.get(id(code))
        return got[1] if got is not None and got[0] is code else None

    def code(self, code):
        got = self.cached(code)
        if got is not None:
            return got
        try:
            decoded = Code(code)
        except Exception:
            decoded = False
        if len(_DECODED) >= CODES_KEPT:
            _DECODED.clear()
        _DECODED[id(code)] = (code, decoded)
        return decoded

    def may_wait_at(self, code, lasti):
        """Cheap test before decoding: the instruction at lasti is a call or enters a with."""
        try:
            return code.co_code[lasti] in self.stop_ops
        except (IndexError, TypeError):
            return False

    def may_hold(self, code):
        """Cheap test before decoding: the code has a with statement or names an acquire method."""
        names = code.co_names
        if "acquire" in names:
            return True
        ops = code.co_code[::2]   # the opcodes (wordcode: opcode, argument)
        return any(b in ops for b in self.with_bytes)


# ---- resolving an expression ---------------------------------------------------------------------

MISSING = objstate.MISSING


class FrameReader(objstate.Reader):
    """objstate's Reader that also reads each frame's locals once per answer (on 3.8-3.12 every
    f_locals read copies all of them into a new snapshot)."""

    def __init__(self):
        objstate.Reader.__init__(self)
        self._locals = {}

    def frame_locals(self, frame):
        got = self._locals.get(id(frame))
        if got is None:
            try:
                loc = frame.f_locals
            except Exception:
                loc = None
            got = self._locals[id(frame)] = (frame, loc)
        return got[1]


def frame_local(frame, name, reader=None):
    """A frame's local (or cell) variable by name: f_locals (a dict snapshot on 3.8-3.12, the C
    proxy on 3.13), compared as exact str keys; MISSING when unbound."""
    if isinstance(reader, FrameReader):
        loc = reader.frame_locals(frame)
    else:
        try:
            loc = frame.f_locals
        except Exception:
            return MISSING
    if issubclass(type(loc), dict):
        return objstate.dict_get(loc, name, MISSING)
    if not is_locals_proxy(loc):   # a class body's own mapping (__prepare__): its methods are the target's
        return MISSING
    try:
        return loc[name]   # FrameLocalsProxy: C lookup of the code's own names
    except Exception:
        return MISSING


def is_locals_proxy(loc):
    """3.13's f_locals of a function frame: a C type of the interpreter's."""
    t = type(loc)
    return not objstate.is_heap(t) and objstate.short_name(t) == "FrameLocalsProxy"


def _attr(reader, obj, name):
    """obj.name read without running code: a module's or instance's __dict__, a slot, or a plain
    value in the class namespace (never a descriptor's __get__). (value, owner kind) or MISSING."""
    t = type(obj)
    d = reader.instance_dict(obj)
    if d is not None:
        v = objstate.dict_get(d, name, MISSING)
        if v is not MISSING:
            return v
    if t is type(sys):
        return MISSING
    for slot, v in reader.slot_values(obj):
        if slot == name:
            return v
    if issubclass(t, type):
        klass, v = objstate.lookup(obj, name)
    else:
        klass, v = objstate.lookup(t, name)
    if klass is None or objstate.lookup(type(v), "__get__")[0] is not None:
        return MISSING
    return v


def resolve(reader, frame, chain):
    """(object, name) of an expression chain in frame, or (MISSING, None). The name is the owner
    path a person reaches it by: Catalog._lock (an instance's attribute), mod.NAME (a global or a
    module's attribute), mod.Class.NAME (a class attribute); for a bare local, its name in the
    function (owners.py may find a better one)."""
    (kind, base), attrs = chain
    g = frame.f_globals
    if kind == "local":
        obj = frame_local(frame, base, reader)
        name = None
    else:
        obj = frame_local(frame, base, reader) if kind == "name" else MISSING
        if obj is MISSING:
            obj = objstate.dict_get(g, base, MISSING)
        if obj is MISSING:
            b = frame.f_builtins
            obj = objstate.dict_get(b, base, MISSING) if type(b) is dict else MISSING
        mod = objstate.dict_get(g, "__name__")
        name = "%s.%s" % (mod if type(mod) is str else "?", base)
    if obj is MISSING:
        return MISSING, None
    holder = None
    for a in attrs:
        holder = obj
        obj = _attr(reader, holder, a)
        if obj is MISSING:
            return MISSING, None
    if holder is not None:
        name = _attr_name(reader, holder, attrs[-1])
    elif name is None:
        name = LOCAL_NAME % (base, frame.f_code.co_name)
    return obj, name


LOCAL_NAME = "%s (local of %s)"


def _attr_name(reader, holder, attr):
    from .owners import _qual
    t = type(holder)
    if t is type(sys):
        d = reader.instance_dict(holder)
        mod = objstate.dict_get(d, "__name__") if d is not None else None
        return "%s.%s" % (mod if type(mod) is str else "?", attr)
    if issubclass(t, type):
        return "%s.%s" % (objstate.type_name(holder), attr)
    return "%s.%s" % (_qual(t), attr)


# ---- lock kinds -------------------------------------------------------------------------------

class Kinds(object):
    """The target's lock classes, read from its own modules (nothing imported for it)."""

    def __init__(self):
        import _thread
        self.lock = _thread.LockType
        self.rlock = getattr(_thread, "RLock", None)
        th = sys.modules.get("threading")
        d = objstate.Reader().instance_dict(th) if th is not None else None
        get = (lambda n: objstate.dict_get(d, n)) if d is not None else (lambda n: None)
        self.py_rlock = get("_PyRLock")
        self.condition = get("Condition")
        self.semaphore = get("Semaphore")
        self.threading_file = None
        f = get("__file__")
        if type(f) is str:
            self.threading_file = os.path.abspath(f)

    def kind(self, obj):
        t = type(obj)
        for name, klass in (("lock", self.lock), ("rlock", self.rlock), ("rlock", self.py_rlock),
                            ("condition", self.condition), ("semaphore", self.semaphore)):
            if type(klass) is type and issubclass(t, klass):
                return name
        return None


def rlock_owner(kinds, obj, reader):
    """(owner thread ident or None, recursion count) of an RLock, read from its own fields."""
    t = type(obj)
    if kinds.rlock is not None and issubclass(t, kinds.rlock):
        text = kinds.rlock.__repr__(obj)   # the C type's own slot: writes owner= and count=
        if type(text) is not str:
            return None, None
        owner, count = _number_after(text, "owner="), _number_after(text, "count=")
        if owner is None or count is None:
            return None, None
        return (owner if count else None), count
    d = reader.instance_dict(obj)
    owner = objstate.dict_get(d, "_owner") if d is not None else None
    count = objstate.dict_get(d, "_count") if d is not None else None
    return (owner if type(owner) is int and count else None), (count if type(count) is int else None)


def _number_after(text, key):
    """The decimal number right after key in text (the C RLock's repr: "... owner=140 count=1 at 0x..."),
    or None. Not a regex: `re` would be imported into a target that lacks it (tens of system calls, each
    a wait for the GIL in a busy target)."""
    at = text.find(key)
    if at < 0:
        return None
    at += len(key)
    end = at
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    return int(text[at:end]) if end > at else None


def inner_lock(reader, cond):
    d = reader.instance_dict(cond)
    return objstate.dict_get(d, "_lock") if d is not None else None


def locked(kinds, obj):
    """Whether a plain lock is taken (None when that cannot be read safely)."""
    if type(obj) is kinds.lock:
        return kinds.lock.locked(obj)
    return None


# ---- the answer ------------------------------------------------------------------------------

class Lock(object):
    __slots__ = ("obj", "name", "kind", "holders", "held_by", "waiters", "count", "index", "ids")

    def __init__(self, obj, name, kind):
        self.obj = obj
        self.name = name
        self.kind = kind
        self.holders = []
        self.held_by = None
        self.waiters = []
        self.count = None
        self.index = None
        self.ids = set()


def _in_threading(kinds, frame):
    return kinds.threading_file is not None and frame.f_code.co_filename == kinds.threading_file


def find_wait(kinds, decoder, reader, chain_frames):
    """(lock object, name, kind, how) a thread is blocked on, from its frames (innermost last), or None.
    Frames of threading.py itself (Condition.__enter__, Semaphore.acquire, _PyRLock.acquire) are
    stepped out of: the caller's `with cond:` / `sem.acquire()` says what it waits for."""
    k = len(chain_frames) - 1
    while k >= 0 and _in_threading(kinds, chain_frames[k]):
        k -= 1
    if k < 0:
        return None
    frame = chain_frames[k]
    code = decoder.cached(frame.f_code)
    if code is None:
        if not decoder.may_wait_at(frame.f_code, frame.f_lasti):
            return None
        code = decoder.code(frame.f_code)
    if not code:
        return None
    site = code.waiting_at(frame.f_lasti)
    if site is None:
        return None
    how, chain = site
    obj, name = resolve(reader, frame, chain)
    if obj is MISSING:
        return None
    kind = kinds.kind(obj)
    if kind is None:
        return None
    if k < len(chain_frames) - 1 and not objstate.is_heap(type(obj)):
        return None   # a C lock's acquire does not enter threading.py: this thread is elsewhere
    return obj, name, kind, how


def _key(kinds, reader, obj, kind):
    """The object whose holder is sought: a Condition's own lock; the lock itself otherwise."""
    if kind == "condition":
        inner = inner_lock(reader, obj)
        return inner if inner is not None else obj
    return obj


def analyse(threads_frames):
    """threads_frames: [(ident, [frames, outermost first])]. Returns (per-ident facts
    {ident: {"waits_for", "wait_how", "holds"}}, locks facts, deadlock cycles), everything empty when
    no thread waits for a lock."""
    kinds = Kinds()
    decoder = Decoder()
    reader = FrameReader()
    locks = {}      # id(key object) -> Lock
    waits = {}      # ident -> (Lock, how)
    for ident, frames in threads_frames:
        try:
            got = find_wait(kinds, decoder, reader, frames)
        except Exception:
            got = None
        if got is None:
            continue
        obj, name, kind, how = got
        key = _key(kinds, reader, obj, kind)
        lk = locks.get(id(key))
        if lk is None:
            lk = locks[id(key)] = Lock(key, name, kind)
            lk.ids.update((id(key), id(obj)))
        lk.waiters.append(ident)
        waits[ident] = (lk, how)
    if not locks:
        return {}, [], []
    _holders(kinds, decoder, reader, locks, threads_frames)
    # a plain lock found unlocked, or an RLock owned by its waiter: the thread is not blocked
    for ident in list(waits):
        lk = waits[ident][0]
        if (lk.held_by == "owner" and ident in lk.holders) or locked(kinds, lk.obj) is False:
            del waits[ident]
            lk.waiters.remove(ident)
    shown = [lk for lk in locks.values() if lk.waiters]
    for n, lk in enumerate(shown):
        lk.index = n
    _owner_names([lk for lk in shown if lk.name.endswith(")")])
    per_thread = {}
    for ident, frames in threads_frames:
        w = waits.get(ident)
        holds = [lk.index for lk in shown if ident in lk.holders]
        if w is not None or holds:
            per_thread[ident] = {"waits_for": w[0].index if w else None, "wait_how": w[1] if w else None,
                                 "holds": holds}
    facts = [{"name": lk.name, "kind": lk.kind, "type": objstate.type_name(type(lk.obj)), "address": id(lk.obj),
              "holders": lk.holders, "held_by": lk.held_by, "waiters": lk.waiters, "count": lk.count}
             for lk in shown]
    order = [ident for ident, _ in threads_frames]
    return per_thread, facts, cycles(order, {i: (w[0].index, w[0].holders if w[0].kind != "semaphore" else [])
                                             for i, w in waits.items()})


def _owner_names(named_by_local):
    """A lock reached through a local variable (`def work(lock): with lock:`) is named where the
    target keeps it (a global, an attribute), by owners.py's search of the heap: once, for all."""
    if not named_by_local:
        return
    import gc
    from . import owners
    try:
        skip = owners.ours(extra=named_by_local)
        heap = gc.get_objects()
        paths, _ = owners.owner_paths([[lk.obj] for lk in named_by_local], heap, skip,
                                      owners.pauser([0.0]), per_object=1)
    except Exception:
        return
    finally:
        heap = None
    for lk, ranked in zip(named_by_local, paths):
        for path, _ in ranked:
            if path is not None and not path.startswith("frame of"):
                lk.name = path
                break


def _holders(kinds, decoder, reader, locks, threads_frames):
    for lk in locks.values():
        if lk.kind in ("rlock", "condition"):
            target = lk.obj
            if kinds.kind(target) == "rlock":
                owner, count = rlock_owner(kinds, target, reader)
                lk.count = count
                lk.held_by = "owner"
                if owner is not None:
                    lk.holders.append(owner)
    by_id = {}
    for lk in locks.values():
        if lk.held_by is None:
            for i in lk.ids:
                by_id[i] = lk
    if not by_id:
        return
    for ident, frames in threads_frames:
        held = set()
        released = set()
        for frame in frames:
            if _in_threading(kinds, frame):
                if frame.f_code.co_name == "wait":   # Condition.wait: its lock is released meanwhile
                    cond = frame_local(frame, "self", reader)
                    if cond is not MISSING and kinds.kind(cond) == "condition":
                        released.add(id(cond))
                        inner = inner_lock(reader, cond)
                        if inner is not None:
                            released.add(id(inner))
                continue
            try:
                _frame_holds(decoder, reader, frame, by_id, held)
            except Exception:
                continue
        for lk in {id(x): x for x in (by_id[i] for i in held - released)}.values():
            if not (lk.ids & released) and ident not in lk.holders:
                lk.holders.append(ident)
                lk.held_by = "code"


def _frame_holds(decoder, reader, frame, by_id, held):
    code = decoder.cached(frame.f_code)
    if code is None:
        if not decoder.may_hold(frame.f_code):
            return
        code = decoder.code(frame.f_code)
    if not code:
        return
    lasti = frame.f_lasti
    chains = list(code.active_withs(lasti))
    state = {}
    for offset, what, chain in code.sites():
        if offset < lasti or (offset == lasti and what == "release"):
            state[(chain[0], tuple(chain[1]))] = (what, chain)
    chains.extend(c for what, c in state.values() if what == "acquire")
    for chain in chains:
        obj, _ = resolve(reader, frame, chain)
        if obj is not MISSING and id(obj) in by_id:
            held.add(id(obj))


def cycles(order, edges):
    """Cycles of the wait-for graph. edges: {ident: (lock index, [holder idents])}; a lock with
    more than one holder known (a semaphore's) makes no edge. Each cycle is [(ident, lock index)],
    starting at the thread that comes first in `order`: each thread waits for its lock, held by the
    next thread (the last one's by the first)."""
    nxt = {i: hs[0] for i, (_, hs) in edges.items() if len(hs) == 1}
    rank = {ident: n for n, ident in enumerate(order)}
    found = []
    done = set()
    for start in order:
        path = {}
        node = start
        while node in nxt and node not in done and node not in path:
            path[node] = len(path)
            node = nxt[node]
        if node in path:   # came back to a thread of this walk: a cycle from there
            loop = [i for i, _ in sorted(path.items(), key=lambda kv: kv[1])][path[node]:]
            first = min(range(len(loop)), key=lambda n: rank.get(loop[n], n))
            loop = loop[first:] + loop[:first]
            found.append([(i, edges[i][0]) for i in loop])
        done.update(path)
    return found
