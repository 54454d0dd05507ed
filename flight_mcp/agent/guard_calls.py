"""Read-only calls: the builtins an expression may call by name, the read-only methods of builtin
values, and f-string fields, each done in a way that runs only the interpreter's C code (see guards.py
for the rules and bounds they share). safety.py routes `len(x)` to call_len, `x.get(k)` to method,
`f'{x!r:>5}'` to format_value; key=len in sorted/min/max runs call_len through KEY_GUARDS.
"""
import _thread
import builtins as _builtins   # the real builtins, for key= and the name table
import sys
import types
from collections import deque as _deque

from .guards import (  # the checks and bounds every guard shares
    CONTAINER_BASES, INTS, MAPPINGPROXY, MAX_DEPTH, MAX_WIDTH, NUMBERS, Own, SCALARS, SIZED, TEXT,
    DICT_VIEWS, MISSING, int_ok, made, tname, width_ok, attr, c_slot, dict_get, eq_safe, hash_safe,
    is_a, is_class, items, iterable, lookup, mapping, ord_safe, refuse, size, spend, text_safe, too_big,
    truth, unproxy,
)
from .typefacts import instance_dict


def format_value(fb, value, conversion, spec):
    """One f-string field: the conversion (!s !r !a) and the format spec, on plain data only."""
    if conversion == 115:
        value = call_str(fb, value)
    elif conversion == 114:
        value = call_repr(fb, value)
    elif conversion == 97:
        value = call_ascii(fb, value)
    return call_format(fb, value, spec)


# ---- calls of builtins by name ----

def _checked_text(fn):
    def call(fb, x=MISSING, *rest):
        if x is MISSING:
            return fn()
        if rest:
            if type(x) is bytes and fn is str and all(type(r) is str for r in rest):
                _codec_ok(rest[0])
                spend(fb, 1, len(x) * 4)
                return str(x, *rest)
            refuse("str() with an encoding on a %s" % tname(x), "only bytes are decoded in read-only mode")
        spend(fb, 1, text_safe(fb, x))
        return fn(x)
    return call


call_str = _checked_text(str)
call_repr = _checked_text(repr)
call_ascii = _checked_text(ascii)
_CODECS = frozenset(["utf-8", "utf8", "ascii", "latin-1", "latin1", "iso-8859-1", "utf-16", "utf-32",
                     "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "cp1252"])
_ERRORS = frozenset(["strict", "ignore", "replace", "backslashreplace", "xmlcharrefreplace",
                     "surrogateescape", "surrogatepass", "namereplace"])


def _codec_ok(encoding, errors="strict"):
    if encoding.lower().replace("_", "-") not in _CODECS or errors not in _ERRORS:
        refuse("the codec %r/%r" % (encoding, errors), "a codec other than the builtin ones may be the "
               "target's code", "Use one of %s" % ", ".join(sorted(_CODECS)))


def call_format(fb, value, spec=""):
    if type(spec) is not str:
        refuse("a format spec of type %s" % tname(spec), "only str specs are read")
    width_ok(spec, "a format spec")
    t = type(value)
    if t not in SCALARS and not c_slot(t, "__format__"):
        refuse("formatting a %s" % t.__name__, "its class defines __format__ in Python")
    spend(fb, 1, text_safe(fb, value) + 16)
    return format(value, spec)


def call_len(fb, x):
    t = type(x)
    if t in SIZED:
        return len(x)
    if t is MAPPINGPROXY:
        return len(unproxy(x))
    if c_slot(t, "__len__"):
        return size(x)
    refuse("len() of a %s" % t.__name__, "its class's __len__ is the target's own code",
           "Take len() of a plain container")


def _classinfo_ok(fb, cls, depth=0):
    if type(cls) is tuple:
        if depth > MAX_DEPTH:
            refuse("a classinfo nested this deep", "")
        spend(fb, len(cls))
        for c in cls:
            _classinfo_ok(fb, c, depth + 1)
        return
    if not is_class(cls):
        raise TypeError("isinstance() arg 2 must be a type or tuple of types")
    meta = type(cls)
    if not (c_slot(meta, "__instancecheck__") and c_slot(meta, "__subclasscheck__")):
        refuse("isinstance()/issubclass() with %s" % cls.__name__, "its metaclass %s decides in Python "
               "(an ABC runs __subclasshook__)" % meta.__name__,
               "Compare the type itself: type(x) is C, or type(x).__name__ == 'C'")


def call_isinstance(fb, x, cls):
    _classinfo_ok(fb, cls)
    return issubclass(type(x), cls)   # by the real type: x.__class__ may be the target's property


def call_issubclass(fb, c, cls):
    if not is_class(c):
        raise TypeError("issubclass() arg 1 must be a class")
    _classinfo_ok(fb, cls)
    return issubclass(c, cls)


def call_type(fb, x):
    return type(x)


def _key_guard(key):
    if key is None:
        return None
    guard = KEY_GUARDS.get(id(key))
    if guard is None or guard[0] is not key:
        refuse("the key function %r" % (key,), "only builtins on the read-only list are key functions")
    return guard[1]


def _ordered(fb, values, key):
    """The sort keys of values, checked to compare as C code; values when there is no key."""
    guard = _key_guard(key)
    keys = values if guard is None else [guard(fb, v) for v in values]
    spend(fb, len(keys))
    ord_safe(fb, keys if type(keys) is list else list(keys))
    return keys


def call_sorted(fb, x, key=None, reverse=False):
    values = list(items(fb, x))
    keys = _ordered(fb, values, key)
    reverse = bool(truth(reverse))
    if key is None:
        return sorted(values, reverse=reverse)
    order = sorted(range(len(values)), key=keys.__getitem__, reverse=reverse)
    return [values[i] for i in order]


def _extreme(fn):
    def call(fb, /, *args, **kw):
        key = kw.pop("key", None)
        has_default = "default" in kw
        default = kw.pop("default", None)
        if kw:
            raise TypeError("unexpected keyword arguments %s" % sorted(kw))
        values = list(items(fb, args[0])) if len(args) == 1 else list(args)
        if not values:
            if has_default:
                return default
            return fn(values)
        keys = _ordered(fb, values, key)
        i = fn(range(len(values)), key=keys.__getitem__)
        return values[i]
    return call


call_min = _extreme(min)
call_max = _extreme(max)


def call_sum(fb, x, start=0):
    values = items(fb, x)
    kinds = set(map(type, values))
    if not kinds <= NUMBERS or type(start) not in NUMBERS:
        refuse("sum() of %s" % ", ".join(sorted(k.__name__ for k in kinds | {type(start)})),
               "sum() adds plain numbers only in read-only mode (adding anything else runs its __add__ or "
               "copies lists over and over)")
    for v in values if INTS & kinds else ():
        int_ok(v)
    return sum(values, start)


def call_any(fb, x):
    for v in items(fb, x):
        if truth(v):
            return True
    return False


def call_all(fb, x):
    for v in items(fb, x):
        if not truth(v):
            return False
    return True


def _collect(fn, hashing):
    def call(fb, x=(), **kw):
        if kw:
            raise TypeError("%s() takes no keyword arguments" % fn.__name__)
        values = items(fb, x)
        n = len(values)
        spend(fb, n, 16 * n)
        if hashing:
            hash_safe(fb, values if type(values) in CONTAINER_BASES else list(values))
        return fn(values)
    return call


call_list = _collect(list, False)
call_tuple = _collect(tuple, False)
call_set = _collect(set, True)
call_frozenset = _collect(frozenset, True)


def call_dict(fb, x=(), /, **kw):
    x = unproxy(x)
    if is_a(x, dict):
        out = mapping(fb, x)
    else:
        out = {}
        for pair in items(fb, x):
            if type(pair) not in (tuple, list) or len(pair) != 2:
                refuse("dict() of a %s item" % tname(pair), "only pairs (tuples or lists of 2) are read")
            out[hash_safe(fb, pair[0])] = pair[1]
    out.update(kw)
    return out


def call_enumerate(fb, x, start=0):
    if type(start) not in INTS:
        refuse("enumerate() with a start of type %s" % tname(start), "converting it runs its __index__")
    return Own(enumerate(iterable(fb, x), start))


def call_zip(fb, *xs):
    return Own(zip(*[iterable(fb, x) for x in xs]))


def call_reversed(fb, x):
    t = type(x)
    if t in (list, tuple, range, str, bytes, dict) or t in DICT_VIEWS:
        spend(fb, len(x))
        return Own(reversed(x))
    refuse("reversed() of a %s" % t.__name__, "its class's __reversed__/__getitem__ is the target's own code")


def _ints_only(name, fn):
    def call(fb, *args):
        for a in args:
            if type(a) not in INTS:
                refuse("%s() with a %s" % (name, tname(a)), "converting it runs its __index__", "Pass ints")
            int_ok(a)
        return fn(*args)
    return call


call_range = _ints_only("range", range)
call_chr = _ints_only("chr", chr)
call_hex = _ints_only("hex", hex)
call_oct = _ints_only("oct", oct)
call_bin = _ints_only("bin", bin)


def _numbers_only(name, fn):
    def call(fb, *args):
        for a in args:
            if type(a) not in NUMBERS and not (name == "round" and a is None):
                refuse("%s() of a %s" % (name, tname(a)), "only plain numbers are read by %s() in read-only "
                       "mode (its class's own method would run)" % name)
            int_ok(a)
        if name == "round" and len(args) == 2 and type(args[1]) in INTS and abs(args[1]) > MAX_WIDTH:
            too_big("round() to %d digits" % args[1], args[1], MAX_WIDTH, "digits")
        return fn(*args)
    return call


call_abs = _numbers_only("abs", abs)
call_round = _numbers_only("round", round)
call_divmod = _numbers_only("divmod", divmod)


def _convert(name, fn, accepted):
    def call(fb, x=MISSING, *rest):
        if x is MISSING:
            return fn()
        if type(x) not in accepted or any(type(r) not in (int, str) for r in rest):
            refuse("%s() of a %s" % (name, tname(x)), "converting anything but plain numbers, str and "
                   "bytes runs the class's own method")
        if type(x) in TEXT and len(x) > 5000 and name != "float":
            too_big("%s() of a text of %d characters" % (name, len(x)), len(x), 5000, "characters")
        int_ok(x)
        return fn(x, *rest)
    return call


call_int = _convert("int", int, NUMBERS | TEXT)
call_float = _convert("float", float, NUMBERS | TEXT)
call_complex = _convert("complex", complex, NUMBERS | frozenset([str]))


def call_ord(fb, c):
    if type(c) not in TEXT:
        refuse("ord() of a %s" % tname(c), "only str and bytes are read")
    return ord(c)


def call_bool(fb, x=False):
    return bool(truth(x))


def call_hash(fb, x):
    return hash(hash_safe(fb, x))


def call_id(fb, x):
    return id(x)


def call_callable(fb, x):
    return callable(x)


def call_slice(fb, *args):
    return slice(*args)


def call_vars(fb, x=MISSING):
    """vars(x): what x.__dict__ reads (its real namespace, never a __dict__ property)."""
    if x is MISSING:
        refuse("vars() without an argument", "it would read the agent's own names", "Use vars(target)")
    return attr(x, "__dict__")


def call_hasattr(fb, x, name):
    if name.startswith("__") and name.endswith("__"):
        # only whether it exists: found in the class (or the class itself) or the instance, never read
        d = instance_dict(x) if not is_class(x) else None
        return (lookup(type(x), name)[1] is not None or (is_class(x) and lookup(x, name)[1] is not None)
                or (d is not None and name in d))
    try:
        attr(x, name)
    except AttributeError:
        return False
    return True


def call_getattr(fb, x, name, default=MISSING):
    """getattr(x, 'name'[, default]) with a constant name (safety.py checks): what x.name reads."""
    try:
        return attr(x, name)
    except AttributeError:
        if default is MISSING:
            raise
        return default



# ---- methods of builtin values ----

_STR_METHODS = frozenset(n for n in dir(str) if not n.startswith("_") and not n.startswith("format"))
_BYTES_METHODS = frozenset(n for n in dir(bytes) if not n.startswith("_"))
_NUMBER_METHODS = frozenset(["as_integer_ratio", "bit_length", "conjugate", "hex", "is_integer",
                             "to_bytes", "real", "imag", "numerator", "denominator", "bit_count"])
_SET_METHODS = frozenset(["copy", "difference", "intersection", "isdisjoint", "issubset",
                          "issuperset", "symmetric_difference", "union"])
# Builtin types -> the methods that only read. A subclass gets them when it does not override them
# (the builtin's own C method then runs, called unbound, never a lookup through the subclass).
SAFE_METHODS = {
    str: _STR_METHODS, bytes: _BYTES_METHODS,
    int: _NUMBER_METHODS, float: _NUMBER_METHODS, bool: _NUMBER_METHODS,
    complex: frozenset(["conjugate"]),
    dict: frozenset(["get", "keys", "values", "items", "copy"]),
    list: frozenset(["count", "index", "copy"]),
    tuple: frozenset(["count", "index"]),
    set: _SET_METHODS, frozenset: _SET_METHODS,
    range: frozenset(["count", "index"]),
}
# the standard library's read-only methods (_stdlib_reads): OrderedDict views, namedtuple _asdict,
# Counter.most_common, a lock's locked(), an Event's is_set(), an asyncio future's or task's state
STDLIB_READS = frozenset(["_asdict", "most_common", "locked", "is_set", "done", "cancelled", "get_name", "qsize",
                          "empty", "full"])
# asyncio's C future and task: these methods only read the object's own state
_ASYNCIO_C_READS = frozenset(["done", "cancelled", "get_name"])
ANY_SAFE_METHOD = frozenset().union(*SAFE_METHODS.values()) | STDLIB_READS


def _method_base(obj, name):
    t = type(obj)
    if t in SAFE_METHODS:
        return t if name in SAFE_METHODS[t] else None
    for base in _class_mro(t):
        if base in SAFE_METHODS:
            if name in SAFE_METHODS[base] and lookup(t, name)[0] is base:
                return base
            return None
    return None


def _grow(obj, name, args):
    """The size a str/bytes method would make, when it can be much bigger than its receiver."""
    n = len(obj) if type(obj) in TEXT else 0
    if name in ("center", "ljust", "rjust", "zfill") and args and type(args[0]) in INTS:
        return max(n, args[0])
    if name == "expandtabs":
        tab = args[0] if args and type(args[0]) in INTS else 8
        return n * max(tab, 1)
    if name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        count = len(obj) + 1 if not old else obj.count(old)
        if len(args) > 2 and type(args[2]) in INTS and args[2] >= 0:
            count = min(count, args[2])
        return n + count * max(len(new) - len(old), 0)
    if name == "to_bytes":
        return args[0] if args and type(args[0]) in INTS else 1
    if name == "hex":
        return 3 * n
    if name == "translate" and args and type(args[0]) is dict:
        longest = max([len(v) for v in args[0].values() if type(v) in TEXT] + [1])
        return n * longest
    return n


def _stdlib_reads(fb, obj, name, args):
    """The read-only methods of the standard library's containers, done here by their base's C code:
    OrderedDict's views, a namedtuple's _asdict(), Counter.most_common() on plain counts. Decided by
    the exact class that defines the method (an application's override is never called); None when
    obj.name is none of them."""
    collections = sys.modules.get("collections")
    if collections is None:
        return None
    t = type(obj)
    od = collections.OrderedDict
    if name in ("keys", "values", "items", "get") and issubclass(t, od) and lookup(t, name)[0] is od:
        if name == "get":
            return dict_get(fb, obj, args[0] if args else None, False, args[1] if len(args) > 1 else None)
        return getattr(od, name)(obj)
    if name == "_asdict" and issubclass(t, tuple) and not args:
        owner, fn = lookup(t, "_asdict")
        fields = lookup(t, "_fields")[1]
        if (owner is not None and type(fn) is types.FunctionType and fn.__module__ == "collections"
                and type(fields) is tuple and all(type(f) is str for f in fields)):
            return dict(zip(fields, tuple.__iter__(obj)))
    if name == "locked" and t is _thread.LockType and not args:
        return obj.locked()   # C, reads the lock's state
    if name == "is_set" and not args and _defined_by(t, name, "threading", "Event"):
        d = instance_dict(obj)
        return d.get("_flag") if d is not None else None   # what Event.is_set returns
    if name in _ASYNCIO_C_READS and not args and (_defined_by(t, name, "_asyncio", "Future")
                                                  or _defined_by(t, name, "_asyncio", "Task")):
        fn = lookup(t, name)[1]
        if type(fn) is types.MethodDescriptorType:
            return fn(obj)   # C: the future's own state
    if name in _QUEUE_READS and not args:
        done = _queue_read(obj, t, name)
        if done is not None:
            return done
    if name == "most_common" and issubclass(t, collections.Counter) and len(args) <= 1:
        if lookup(t, "most_common")[0] is collections.Counter and (not args or type(args[0]) in INTS):
            counts = list(dict.items(obj))
            if all(type(v) in NUMBERS for _, v in counts):   # sorted by plain numbers only
                counts.sort(key=_second, reverse=True)
                return counts[:args[0]] if args else counts
    return None


_QUEUE_READS = frozenset(["qsize", "empty", "full"])


def _queue_read(obj, t, name):
    """queue.Queue's and asyncio.Queue's qsize()/empty()/full() as they compute them, from the
    fields (no mutex taken: an expression never waits on the application's lock). None when obj is
    neither, or its class computes its size itself."""
    for module, cls, items, maxsize in (("queue", "Queue", "queue", "maxsize"), ("asyncio", "Queue", "_queue", "_maxsize")):
        if not _defined_by(t, name, module, cls):
            continue
        if module == "queue" and getattr(lookup(t, "_qsize")[0], "__module__", None) != "queue":
            return None   # the application's own _qsize: its answer is its code's
        d = instance_dict(obj)
        store = d.get(items) if d is not None else None
        limit = d.get(maxsize) if d is not None else None
        if type(store) not in (list, _deque) or type(limit) is not int:
            return None
        n = len(store)
        return n if name == "qsize" else (n == 0 if name == "empty" else 0 < limit <= n)
    return None


def _defined_by(t, name, module, cls):
    """Whether t's `name` is the one module.cls defines (not an override of the target's)."""
    m = sys.modules.get(module)
    owner = getattr(m, cls, None) if m is not None else None
    return owner is not None and issubclass(t, owner) and lookup(t, name)[0] is owner


def _second(pair):
    return pair[1]


def method(fb, obj, name, /, *args, **kw):   # / : keywords named fb/obj/name are the method's
    """obj.name(*args, **kw) for the read-only methods of builtin values, with plain arguments."""
    if type(obj) is MAPPINGPROXY:
        obj = unproxy(obj)   # a class's __dict__: the dict's own methods, never the proxy's forwarding
    base = _method_base(obj, name)
    if base is None and not kw and all(type(a) in SCALARS for a in args):
        done = _stdlib_reads(fb, obj, name, args)
        if done is not None:
            return done
    if base is None:
        refuse("the method call .%s() on a %s" % (name, tname(obj)),
               "only read-only methods of builtin values run in read-only mode (str methods, "
               "dict.get/keys/values/items, list.count/index, set operations, ...); a method of the "
               "target's own classes can change anything",
               "Read attributes instead (e.g. instances[0].processed)")
    if name == "join" and args:
        parts = items(fb, args[0])
        kinds = set(map(type, parts))
        if not kinds <= {base}:
            refuse("join() of %s" % ", ".join(sorted(k.__name__ for k in kinds)), "only plain %s items are "
                   "joined in read-only mode" % base.__name__)
        made(fb, base, sum(map(len, parts)) + len(obj) * len(parts), "join()")
        args = (parts,) + args[1:]
    elif base in _SET_METHODS_OWNERS:
        hash_safe(fb, list(obj))
        args = tuple(hash_safe(fb, list(items(fb, a))) for a in args)
    else:
        for a in args + tuple(kw.values()):
            if type(a) not in SCALARS:
                if type(a) in (tuple, list, dict, frozenset, set):
                    hash_safe(fb, a)
                else:
                    refuse("passing a %s to .%s()" % (tname(a), name), "only plain data is passed to "
                           "methods in read-only mode (the method would run its class's code)")
        if name == "encode" or name == "decode":
            _codec_ok(*(list(args) + list(kw.values()))[:2] or ["utf-8"])
        if base is dict and name == "get":
            return dict_get(fb, obj, args[0] if args else kw.get("key"), False,
                            args[1] if len(args) > 1 else None)
        if name in ("count", "index") and base in (list, tuple):
            eq_safe(fb, obj)
        if base is range and args and type(args[0]) not in INTS:
            refuse("range.%s() of a %s" % (name, tname(args[0])), "it would compare every item")
        if base in TEXT or (base in INTS and name == "to_bytes"):
            made(fb, bytes, _grow(obj, name, args), ".%s()" % name)
        elif name == "copy":
            spend(fb, len(obj), 8 * len(obj))
    return getattr(base, name)(obj, *args, **kw)


_SET_METHODS_OWNERS = (set, frozenset)
_class_mro = type.__dict__["__mro__"].__get__


CALL_GUARDS = dict((name[5:], fn) for name, fn in list(globals().items()) if name.startswith("call_"))
# key=len passes the builtin itself; sorted/min/max run our guard for it instead.
KEY_GUARDS = dict((id(getattr(_builtins, name)), (getattr(_builtins, name), fn)) for name, fn in CALL_GUARDS.items())
