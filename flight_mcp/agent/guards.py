"""The run-time half of read-only mode: every operation of a checked expression goes through here.

safety.check() rewrites the expression so that each attribute read, subscript, operator, comparison,
truth test and iteration calls one guard below (calls of builtins, method calls and f-string fields:
guard_calls.py, on the same checks and bounds). A
guard looks at the exact run-time types and either does the operation itself, in a way that runs
only the interpreter's C code, or raises Refused naming what it would have run. Sizes are checked
BEFORE the work: an int past MAX_INT_BITS, a str/bytes past MAX_CHARS, a container past MAX_ITEMS is
never made, so no single step holds the GIL for more than a few tens of ms. Loops, comprehensions and
deep checks spend a per-evaluation Budget (steps, bytes, wall time): past it the expression stops.

Plain data is what str()/repr()/==/</hash may touch: exact int, float, complex, bool, None, str,
bytes, and exact tuple/list/dict/set/frozenset of plain data. Objects of other types may still be
compared with ==, hashed or shown when their class uses the interpreter's C code for it (object's
identity ==, a datetime's C comparison, the default <Box object at 0x...> repr).

Limits: a C extension's own slots run as its C code does; str keys of class dicts are trusted.
"""
import _thread
import operator
import re
import time

from .typefacts import MAPPINGPROXY, Refused, attribute, c_slot, is_a, is_class, lookup, slot_owner, unproxy

MAX_INT_BITS = 1 << 16        # ~20,000 digits: * / // % str() of such ints take well under 10 ms
MAX_CHARS = 1 << 23           # one str/bytes of 8 MB at most
MAX_ITEMS = 200000            # items one step may make, sort, copy or compare
MAX_STEPS = 500000            # per evaluation: loop iterations plus items visited by the checks
MAX_BYTES = 1 << 25           # per evaluation: 32 MB made in all
MAX_SECONDS = 1.0             # per evaluation, checked as loops run
MAX_WIDTH = 10000             # widths and precisions in format specs and % templates
MAX_DEPTH = 40                # nesting of data the deep checks follow
ALLOW_HINT = ("Restart the server with --allow-mutating (CLI: flight-mcp --allow-mutating PID --cmd ...) "
              "if running it is intended.")

SCALARS = frozenset([int, float, complex, bool, type(None), str, bytes])
NUMBERS = frozenset([int, float, complex, bool])
INTS = frozenset([int, bool])
TEXT = frozenset([str, bytes])
DICT_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))
SIZED = frozenset([list, tuple, dict, set, frozenset, str, bytes, bytearray, range]) | frozenset(DICT_VIEWS)
CONTAINER_BASES = (dict, list, tuple, set, frozenset)
_monotonic = time.monotonic


class ReadOnlyRefused(Refused):
    """Shown by expr.describe_failure as is: what was refused, why, and what to do instead."""


def refuse(what, why, instead=None):
    raise ReadOnlyRefused("read-only mode refused %s: %s. %s%s" % (
        what, why, (instead + ". ") if instead else "", ALLOW_HINT))


def too_big(what, size, bound, unit):
    refuse(what, "it would make %s %s (the bound is %s): one such step holds the interpreter, and every "
                 "thread of the target, while it runs" % (size, unit, bound),
           "Narrow it (a slice, a smaller range, a filter)")


def budget():
    """What one evaluation may still spend: [steps, bytes, deadline (set at the first spend)].
    A list, made by a literal in the expression itself: a filter on a hot function pays ~50 ns for it.
    None (an expression without loops or calls) means each step is bounded on its own."""
    return [MAX_STEPS, MAX_BYTES, 0.0]


def spend(fb, steps, nbytes=0):
    if steps > MAX_ITEMS:
        too_big("going over %d items in one step" % steps, steps, MAX_ITEMS, "items")
    if fb is None:
        return
    fb[0] -= steps
    fb[1] -= nbytes
    now = _monotonic()
    if not fb[2]:
        fb[2] = now + MAX_SECONDS
    if fb[0] < 0 or fb[1] < 0 or now > fb[2]:
        refuse("to go on with the expression",
               "it ran past its budget (%d steps, %d MB, %.1f s per evaluation), so it stopped before "
               "holding the target any longer" % (MAX_STEPS, MAX_BYTES >> 20, MAX_SECONDS),
               "Narrow it (a slice, a smaller range, a filter)")


def tname(x):
    return type(x).__name__


def size(x):
    """len(x) by the builtin base's own C __len__: a subclass's Python __len__ never runs."""
    t = type(x)
    if t in SIZED:
        return len(x)
    for base in CONTAINER_BASES + (str, bytes):
        if is_a(x, base):
            return base.__len__(x)
    return len(x)   # callers reach here only for types whose __len__ is C code


# ---- what a value is allowed to take part in ----

def _deep(fb, x, accept, depth):
    """Walks exact builtin containers of x, calling accept(v) on every non-container value."""
    t = type(x)
    if t in SCALARS:
        return
    if t in TRUSTED_MAPPINGS:
        t, x = dict, dict.copy(x)   # kwargs: a dict of ours (its __missing__ is the agent's)
    if t in CONTAINER_BASES or t in DICT_VIEWS:
        if depth > MAX_DEPTH:
            refuse("data nested deeper than %d levels" % MAX_DEPTH, "the check would not end in time")
        items = x.items() if t is dict else x
        spend(fb, len(x))
        kinds = set(map(type, items)) if t is not dict else None
        if kinds is not None and kinds <= SCALARS:
            return   # the common case, checked at C speed
        for v in items:
            _deep(fb, v, accept, depth + 1)
        return
    accept(x)


def _by_c_code(x, names, what):
    t = type(x)
    for name in names:
        if not c_slot(t, name) or slot_owner(t, name) in CONTAINER_BASES:
            refuse("%s a %s" % (what, t.__name__), "its class defines %s in Python, and running it is "
                   "running the target's own code" % name,
                   "Compare plain values instead (numbers, str, bytes, tuples of them), e.g. target.id == 3")


def eq_safe(fb, x):
    """x == y runs only C code (identity for plain objects, value compare for plain data)."""
    if type(x) in SCALARS:
        return x
    _deep(fb, x, lambda v: _by_c_code(v, ("__eq__", "__ne__"), "comparing"), 0)
    return x


def hash_safe(fb, x):
    if type(x) in SCALARS:
        return x
    _deep(fb, x, lambda v: _by_c_code(v, ("__eq__", "__hash__"), "hashing"), 0)
    return x


_ORDER = ("__lt__", "__le__", "__gt__", "__ge__", "__eq__")


def ord_safe(fb, x):
    if type(x) in SCALARS:
        return x

    def accept(v):
        t = type(v)
        if is_class(v) or not all(c_slot(t, n) for n in _ORDER) or lookup(t, "__lt__")[0] in (None, object):
            refuse("ordering a %s" % t.__name__, "only plain data (numbers, str, bytes, tuples and lists of "
                   "them) and types whose comparison is C code are compared in read-only mode")
        _by_c_code(v, _ORDER, "ordering")
    _deep(fb, x, accept, 0)
    return x


# C types whose text is their own state only: a lock says locked or unlocked, an RLock its owner
_C_TEXT = frozenset([_thread.LockType, _thread.RLock])


def _text_accept(v):
    t = type(v)
    if t is int or t is bool:
        return
    if is_class(v):
        if c_slot(type(v), "__repr__"):
            return
    elif lookup(t, "__repr__")[0] is object and lookup(t, "__str__")[0] is object:
        return   # <Box object at 0x...>: the interpreter's own text
    elif t in _C_TEXT:
        return
    refuse("turning a %s into text" % t.__name__,
           "its class defines __repr__/__str__/__format__ and running it is running the target's code",
           "Read the fields you need instead (target.name, target.__dict__)")


def text_safe(fb, x):
    """str(x)/repr(x) run no target code and make a bounded text; returns an estimate of its length."""
    size = [0]

    def accept(v):
        _text_accept(v)
        size[0] += 60
    _deep(fb, x, accept, 0)
    _text_size(fb, x, size)
    return size[0]


def _text_size(fb, x, size):
    """Adds the length of the text of x's ints, strs and bytes (what makes reprs big) to size[0]."""
    t = type(x)
    if t is int:
        bits = x.bit_length()
        if bits > MAX_INT_BITS:
            too_big("turning an int of %d bits into text" % bits, bits, MAX_INT_BITS, "bits")
        size[0] += bits // 3 + 2
    elif t is str or t is bytes:
        size[0] += len(x) * (1 if t is str else 4) + 3
    elif t in CONTAINER_BASES or t in DICT_VIEWS or t in TRUSTED_MAPPINGS:
        size[0] += 2 * len(x) + 2
        for v in (dict.items(x) if is_a(x, dict) else x):
            if type(v) not in (float, bool, type(None), complex):
                _text_size(fb, v, size)
    if size[0] > MAX_CHARS:
        too_big("making a text of over %d characters" % MAX_CHARS, size[0], MAX_CHARS, "characters")


def int_ok(x):
    if type(x) is int and x.bit_length() > MAX_INT_BITS:
        too_big("arithmetic on an int of %d bits" % x.bit_length(), x.bit_length(), MAX_INT_BITS, "bits")


# ---- truth, attributes, items ----

def truth(x):
    """x itself, once `if x`/`not x`/`x or y` is known to run no target code (__bool__, __len__)."""
    t = type(x)
    if t in SCALARS or t in SIZED:
        return x
    if c_slot(t, "__bool__") and c_slot(t, "__len__"):
        return x
    refuse("the truth value of a %s" % t.__name__, "its class defines __bool__ or __len__ in Python",
           "Test a field instead (target.x is not None, len(target.items) > 0)")


def attr(obj, name):
    if type(obj) in SCALARS:
        return getattr(obj, name)
    try:
        return attribute(obj, name)
    except ReadOnlyRefused:
        raise
    except Refused as e:
        refuse("reading .%s of a %s" % (name, tname(obj)), str(e))


def _index(fb, obj, key):
    """obj[key] for an exact sequence: an int, or a slice of ints whose result size is known first."""
    tk = type(key)
    if tk is int or tk is bool:
        return obj[key]
    if tk is slice:
        for part in (key.start, key.stop, key.step):
            if type(part) not in (int, bool, type(None)):
                refuse("a slice bound of type %s" % tname(part), "converting it runs its __index__")
        n = len(range(len(obj))[key])
        if type(obj) is not range:
            spend(fb, n, n * 8)
        return obj[key]
    refuse("an index of type %s" % tk.__name__, "converting it runs its __index__", "Use an int or a slice")


def item(fb, obj, key):
    t = type(obj)
    if t is tuple or t is list or t is str or t is bytes or t is range:
        if type(key) is int:
            return obj[key]   # args[0] in a filter: one call, no more
        return _index(fb, obj, key)
    if t is MAPPINGPROXY:
        return item(fb, unproxy(obj), key)
    if is_a(obj, dict) and slot_owner(t, "__getitem__") is dict:
        return dict_get(fb, obj, key, True)
    for base in (list, tuple, str, bytes):
        if is_a(obj, base) and slot_owner(t, "__getitem__") is base and c_slot(t, "__len__"):
            return _index(fb, obj, key)
    refuse("subscripting a %s" % t.__name__, "its class's __getitem__ is the target's own code",
           "Subscript plain containers (dict, list, tuple, str) or read the object's fields")


TRUSTED_MAPPINGS = set()   # our own dict subclasses whose __missing__ is the agent's (capture._Kwargs)
MISSING = object()


def dict_get(fb, d, key, raising, default=None):
    """d[key] / d.get(key) on a dict or dict subclass, never running __missing__ (a defaultdict's
    would insert key, a Counter's would answer 0): a missing key is a KeyError or default."""
    hash_safe(fb, key)
    keys_safe(fb, d)
    value = dict.get(d, key, MISSING)
    if value is not MISSING:
        return value
    if type(d) in TRUSTED_MAPPINGS:
        return d[key] if raising else dict.get(d, key, default)
    if raising:
        raise KeyError(key)
    return default


def keys_safe(fb, d):
    """Looking a key up in d compares it with stored keys of the same hash: those must be plain."""
    if type(d) in TRUSTED_MAPPINGS:
        return
    keys = dict.keys(d) if is_a(d, dict) else d   # never a subclass's own __iter__
    spend(fb, size(d) // 64)
    if set(map(type, keys)) <= SCALARS:
        return
    for k in keys:
        hash_safe(fb, k)


# ---- iteration ----

class Own(object):
    """An iterator the expression made itself (a generator expression, enumerate, zip, reversed):
    iterating it runs only the expression's own guarded code."""
    __slots__ = ("it",)

    def __init__(self, it):
        self.it = it

    def __iter__(self):
        return self.it


def own(it):
    return Own(it)


def iterable(fb, x, what="iterating", upfront=True):
    """x when iterating it runs only C code and leaves the target unchanged. upfront: its size is
    spent now (a builtin will go over all of it in one step), else the caller counts its steps."""
    t = type(x)
    if t in SIZED:
        if upfront:
            spend(fb, len(x))
        return x
    if t is Own:
        return x.it
    if t is MAPPINGPROXY:
        return iterable(fb, unproxy(x), what, upfront)
    owner = slot_owner(t, "__iter__")
    if owner is not None and lookup(owner, "__iter__")[1] is lookup(t, "__iter__")[1] \
            and c_slot(t, "__len__") and (owner in SIZED or _is_collection_type(owner)):
        if upfront:
            spend(fb, size(x))
        return x
    if owner is not None and lookup(t, "__next__")[1] is not None:
        refuse("%s a %s" % (what, t.__name__), "it is an iterator/generator/file of the target: iterating "
               "it would consume it", "Read a container instead")
    if lookup(t, "__next__")[1] is not None:
        refuse("%s a %s" % (what, t.__name__), "it is an iterator/generator of the target: iterating it "
               "would consume it (and run its code)", "Read a container instead")
    if lookup(t, "__iter__")[1] is None and lookup(t, "__getitem__")[1] is None:
        raise TypeError("%r object is not iterable" % t.__name__)
    refuse("%s a %s" % (what, t.__name__), "its class's __iter__/__getitem__ is the target's own code",
           "Iterate plain containers (list, tuple, dict, set, str)")


def _is_collection_type(owner):
    # C collections whose iteration does not consume them (deque, OrderedDict, array).
    return owner.__module__ in ("collections", "array", "_collections") and owner.__name__ in (
        "deque", "OrderedDict", "array", "defaultdict")


def items(fb, x, what="iterating"):
    """A list of x's items, made with every step counted (for builtins that consume iterables)."""
    it = iterable(fb, x, what)
    if type(x) is Own:
        out = []
        for v in it:
            out.append(v)
            if len(out) & 1023 == 0:
                spend(fb, 1024, 8192)
        return out
    return it


def _changes_under_a_loop(it):
    """Containers whose iterator raises (dict, set, deque) when another thread changes them between
    two steps of a comprehension (the application keeps running while an expression loops)."""
    t = type(it)
    return t in DICT_VIEWS or is_a(it, dict) or is_a(it, set) or is_a(it, frozenset) or (
        t.__name__ == "deque" and t.__module__ == "collections")


def loop(fb, x, unpack):
    """The iterable of a comprehension's `for`: checked, and every step counted. A live dict, set or
    deque is copied first in one C step: "dictionary changed size during iteration" was the answer
    to reading an application's registry while it worked."""
    it = iterable(fb, x, upfront=False)
    if _changes_under_a_loop(it):
        n = size(it)
        spend(fb, 1, 8 * n)
        it = list(it)
    steps = 0
    for v in it:
        steps += 1
        if steps == 512:
            spend(fb, 512)
            steps = 0
        if unpack and type(v) not in (tuple, list):
            iterable(fb, v, "unpacking")
        yield v


def star(fb, x):
    return items(fb, x, "unpacking")


def star_hashable(fb, x):
    out = items(fb, x, "unpacking")
    hash_safe(fb, list(out) if type(out) not in SIZED else out)
    return out


def mapping(fb, x):
    """The dict that {**x} or f(**x) may read: a copy of a dict, never x's own keys()/__getitem__."""
    x = unproxy(x)
    if is_a(x, dict):
        spend(fb, size(x), 64 * size(x))
        # dict.copy of a subclass that overrides __iter__ would call its keys(): copy the items view
        return dict.copy(x) if type(x) is dict else dict(dict.items(x))
    refuse("unpacking a %s with **" % tname(x), "it would call its class's keys() and __getitem__",
           "Unpack a dict")


# ---- operators ----

_BINOPS = {
    "Add": operator.add, "Sub": operator.sub, "Mult": operator.mul, "Div": operator.truediv,
    "FloorDiv": operator.floordiv, "Mod": operator.mod, "Pow": operator.pow, "LShift": operator.lshift,
    "RShift": operator.rshift, "BitOr": operator.or_, "BitXor": operator.xor, "BitAnd": operator.and_,
    "MatMult": operator.matmul,
}
_SYMBOLS = {"Add": "+", "Sub": "-", "Mult": "*", "Div": "/", "FloorDiv": "//", "Mod": "%", "Pow": "**",
            "LShift": "<<", "RShift": ">>", "BitOr": "|", "BitXor": "^", "BitAnd": "&", "MatMult": "@"}
_SETS = frozenset([set, frozenset, type({}.keys()), type({}.items())])
_SEQS = frozenset([str, bytes, list, tuple])


def binop(fb, op, a, b):
    ta, tb = type(a), type(b)
    if ta in NUMBERS and tb in NUMBERS:
        int_ok(a)
        int_ok(b)
        if ta in INTS and tb in INTS:
            _int_result(op, a, b)
        return _BINOPS[op](a, b)
    if op == "Mult" and (ta in _SEQS and tb in INTS or tb in _SEQS and ta in INTS):
        seq, n = (a, b) if ta in _SEQS else (b, a)
        made(fb, type(seq), len(seq) * max(n, 0), "repeating a %s" % type(seq).__name__)
        return seq * n
    if op == "Add" and ta is tb and ta in _SEQS:
        made(fb, ta, len(a) + len(b), "concatenating")
        return a + b
    if op == "Mod" and ta in TEXT:
        return percent(fb, a, b)
    if op in ("BitOr", "BitAnd", "Sub", "BitXor") and ta in _SETS and tb in _SETS:
        hash_safe(fb, list(a))
        hash_safe(fb, list(b))
        spend(fb, len(a) + len(b), 64 * (len(a) + len(b)))
        return _BINOPS[op](a, b)
    if op == "BitOr" and ta is dict and tb is dict:
        keys_safe(fb, a)
        keys_safe(fb, b)
        spend(fb, len(a) + len(b), 64 * (len(a) + len(b)))
        return a | b
    refuse("%s %s %s" % (tname(a), _SYMBOLS[op], tname(b)),
           "read-only mode runs operators only on plain numbers, str, bytes, lists, tuples and sets (a "
           "class's own %s could run anything)" % _SYMBOLS[op])


def _int_result(op, a, b):
    bits = None
    if op == "Pow" and b > 0 and abs(a) > 1:
        bits = a.bit_length() * b
    elif op == "LShift" and b > 0 and a:
        bits = a.bit_length() + b
    elif op == "Mult":
        bits = a.bit_length() + b.bit_length()
    if bits is not None and bits > MAX_INT_BITS:
        too_big("%s %s %s on ints" % ("x", _SYMBOLS[op], "y"), "an int of ~%d" % bits, MAX_INT_BITS, "bits")


def made(fb, t, n, what):
    if t is str or t is bytes:
        if n > MAX_CHARS:
            too_big(what, n, MAX_CHARS, "characters")
        spend(fb, 1, n)
    else:
        spend(fb, n, 8 * n)


def unary(op, x):
    if type(x) in NUMBERS:
        int_ok(x)
        return -x if op == "USub" else (+x if op == "UAdd" else ~x)
    refuse("the operator %s on a %s" % ({"USub": "-", "UAdd": "+", "Invert": "~"}[op], tname(x)),
           "only plain numbers take unary operators in read-only mode")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?(.)")
_DIGITS = re.compile(r"\d+")


def width_ok(spec, where):
    for run in _DIGITS.findall(spec):
        if len(run) > 5 or int(run) > MAX_WIDTH:
            too_big("the width or precision %s in %s" % (run, where), run, MAX_WIDTH, "characters of padding")


def percent(fb, template, args):
    """template % args, with the values shown as plain data and the widths bounded first."""
    text = template if type(template) is str else template.decode("latin-1")
    for width, precision, _ in _PERCENT_SPEC.findall(text):
        if width == "*" or precision == "*":
            refuse("a * width in a %% template", "its size would come from the data", "Write the width")
        width_ok(width + "." + precision, "a % template")
    if type(args) is dict:
        keys_safe(fb, args)
    elif type(args) is not tuple and not (type(args) in SCALARS):
        if is_a(args, dict) or lookup(type(args), "__getitem__")[1] is not None:
            refuse("%% formatting with a %s" % tname(args), "it would look keys up through its class's own "
                   "__getitem__ (a defaultdict would insert them)", "Format with a plain dict or tuple")
    if type(template) is bytes:   # %s of bytes runs __bytes__ or the buffer protocol: plain data only
        _deep(fb, args, lambda v: refuse("b'%%s' %% a %s" % tname(v), "it would run its __bytes__"), 0)
    size = text_safe(fb, args)
    spend(fb, 1, size + len(text))
    return template % args


def contains(fb, x, c):
    """x in c, with c an exact builtin container whose compared items are plain."""
    t = type(c)
    if t is MAPPINGPROXY:
        return contains(fb, x, unproxy(c))
    if t is str or t is bytes:
        if type(x) is not t:
            raise TypeError("'in <%s>' requires %s as left operand, not %s" % (t.__name__, t.__name__, tname(x)))
        return x in c
    if t is range and type(x) in INTS:
        return x in c
    if is_a(c, dict) and slot_owner(t, "__contains__") is dict or t is type({}.keys()):
        hash_safe(fb, x)
        keys_safe(fb, c if is_a(c, dict) else list(c))  # dict_keys: C iteration
        return x in c
    if t is set or t is frozenset:
        hash_safe(fb, x)
        keys_safe(fb, c)
        return x in c
    values = items(fb, c, "a membership test over")
    eq_safe(fb, x)
    eq_safe(fb, values if type(values) in CONTAINER_BASES else list(values))
    return x in values
