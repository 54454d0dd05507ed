"""An object's type and state, read without running any of the target's code.

A target class can turn almost any read into a call of its own code: a metaclass property named
__qualname__ or __module__, a property named __dict__ or like a slot, __getattr__, a __class__
property (isinstance() consults it), __len__/__iter__/items() overrides on dict and list
subclasses, __eq__/__hash__/__lt__ on keys (a dict lookup compares colliding keys). So everything
here reads through the C-level descriptors of the built-in types themselves (type's getsets, the
member descriptors of slots, the base container's unbound methods), checks kinds with type() and
issubclass() on the real type, looks names up by walking namespaces (comparing exact str keys
only) and never hashes or compares a target object. Runs on the application's threads too (watch):
no locks, no threads, nothing but reads and the copies it returns.
"""
import gc
import itertools
from _collections import deque

_ns_of = type.__dict__["__dict__"].__get__          # a class's own namespace (mappingproxy)
_mro_of = type.__dict__["__mro__"].__get__
_qualname_of = type.__dict__["__qualname__"].__get__
_name_of = type.__dict__["__name__"].__get__
_module_of = type.__dict__["__module__"].__get__
_flags_of = type.__dict__["__flags__"].__get__
_HEAPTYPE = 1 << 9                                   # Py_TPFLAGS_HEAPTYPE: a class defined in Python
_GETSET = type(type.__dict__["__dict__"])
_MEMBER = type(type.__dict__["__weakrefoffset__"])
_exc_args = BaseException.__dict__["args"].__get__
_object_repr = object.__dict__["__repr__"]

# Built-in containers: a subclass is read through the first base it has here. (Types are compared
# with `is` only: `in` on a tuple of types would call a metaclass's __eq__.)
CONTAINERS = (dict, list, tuple, set, frozenset, deque)


def flags(t):
    return _flags_of(t)


def is_heap(t):
    """The class was defined in Python (its namespace may hold anything, keys included)."""
    return bool(_flags_of(t) & _HEAPTYPE)


def mro(t):
    """t's MRO from type's own field (a metaclass may make __mro__ a property)."""
    m = t.__mro__ if type(t) is type else _mro_of(t)
    return m if type(m) is tuple else (t, object)


# ---- class namespaces: the one place they are read (views, lookups and the read-only guards) ----
MISSING = object()


def class_dict(t):
    """The dict behind class t's namespace (its mappingproxy's methods forward to the mapping's own
    get/keys/copy: never called)."""
    return gc.get_referents(_ns_of(t))[0]


_DICTS = {}   # id(type) -> (its MRO tuple, ((class, the class's real dict), ...)); bounded, see class_dicts


def class_dicts(t):
    """(class, real dict) along t's MRO. A class's dict object never changes (its contents do); the
    MRO may (assigning __bases__ makes a new tuple), so an entry is valid while the tuple is the same.
    Reading the dicts through mappingproxies costs ~10x more, and a filter runs per call."""
    m = t.__mro__ if type(t) is type else _mro_of(t)   # mro(), inlined: a filter runs this per operation
    hit = _DICTS.get(id(t))
    if hit is not None and hit[0] is m:
        return hit[1]
    pairs = tuple((klass, class_dict(klass)) for klass in m)
    if len(_DICTS) >= 512:
        _DICTS.clear()   # keeps at most 512 classes alive, and only until the next clear
    _DICTS[id(t)] = (m, pairs)
    return pairs


def own(t, name, default=None):
    """The value `name` has in class t's own namespace, else default. A built-in class's namespace
    is fixed and holds only str keys (a lookup compares nothing of the target's); a Python class's
    is walked, comparing exact str keys only (a str subclass key's __eq__ never runs)."""
    return _strict_get(t, class_dict(t), name, default)


def _strict_get(klass, d, name, default):
    if not is_heap(klass):
        return dict.get(d, name, default)
    for k, v in dict_items(d):
        if type(k) is str and k == name:
            return v
    return default


def lookup(t, name):
    """(class, value) of the first class in t's MRO whose namespace defines name: what attribute
    lookup on an instance finds first, without running it. (None, None) when none does.
    Exact str keys only: what views and listings use."""
    for klass, d in class_dicts(t):
        v = _strict_get(klass, d, name, MISSING)
        if v is not MISSING:
            return klass, v
    return None, None


def find(t, name):
    """lookup() by the dicts' own hashing: what the read-only guards use on every operation of a
    filter, where the walk costs too much. Trusts the str keys of class dicts (a str subclass key
    with its own __eq__ in a class namespace could run; guards.py states this limit)."""
    for klass, d in class_dicts(t):
        if name in d:
            return klass, d[name]
    return None, None


def namespace_items(t):
    """[(name, value)] of a class's own namespace, str names only."""
    return [(k, v) for k, v in dict_items(class_dict(t)) if type(k) is str]


def type_name(t):
    """'module.Qualname' ('Qualname' for builtins) from type's own fields, whatever the metaclass."""
    try:
        qual = _qualname_of(t)
        mod = own(t, "__module__") if is_heap(t) else _module_of(t)
    except Exception:
        return "?"
    if type(qual) is not str:
        qual = "?"
    if type(mod) is not str or mod == "builtins":
        return qual
    return "%s.%s" % (mod, qual)


def qualname_of(t):
    """The class's own __qualname__ (type's field), or None."""
    try:
        qual = _qualname_of(t)
    except Exception:
        return None
    return qual if type(qual) is str else None


def short_name(t):
    """The class's own __name__ (type's field, whatever the metaclass says)."""
    try:
        name = _name_of(t)
    except Exception:
        return "?"
    return name if type(name) is str else "?"


_BASE_OF_BUILTIN = {id(c): c for c in CONTAINERS}  # id of a C type -> its container base or False


def container_base(t):
    """The built-in container t is (or derives from), else None."""
    got = _BASE_OF_BUILTIN.get(id(t))
    if got is not None:
        return got or None
    found = None
    for base in CONTAINERS:
        if issubclass(t, base):  # on two real types: a walk of t's MRO, no __subclasscheck__
            found = base
            break
    if not is_heap(t):  # C types live as long as the process: their answer is kept
        _BASE_OF_BUILTIN[id(t)] = found or False
    return found


class Layout(object):
    """What a class's instances hold and how to read it, found once per class and answer."""
    __slots__ = ("name", "short", "dict_descr", "slots", "repr_owner", "repr_value", "fields")

    def __init__(self, t):
        self.name = type_name(t)
        self.short = short_name(t)
        self.dict_descr = None
        self.slots = []
        for klass in mro(t):
            if self.dict_descr is None:
                d = own(klass, "__dict__")
                # only the C descriptor of the class that made the storage, never a property
                if (type(d) is _GETSET or type(d) is _MEMBER) and d.__objclass__ is klass:
                    self.dict_descr = d
            if is_heap(klass):
                for name, v in namespace_items(klass):
                    if type(v) is _MEMBER and v.__objclass__ is klass:
                        self.slots.append((name, v))
        self.repr_owner, self.repr_value = lookup(t, "__repr__")
        fields = lookup(t, "_fields")[1] if issubclass(t, tuple) and t is not tuple else None
        self.fields = fields if type(fields) is tuple and all(type(f) is str for f in fields) else None

    def default_repr(self):
        """repr() would be object's own `<mod.Type object at 0x..>` (no code of the target runs)."""
        return self.repr_value is _object_repr

    def builtin_repr(self):
        """repr() would be a built-in type's own C method (it may still call reprs of contents)."""
        return self.repr_owner is not None and not is_heap(self.repr_owner)


class Reader(object):
    """Layouts of the classes met while reading one answer (classes are kept alive meanwhile, so
    their ids cannot be reused)."""

    def __init__(self):
        self._layouts = {}

    def layout(self, t):
        got = self._layouts.get(id(t))
        if got is None:
            got = self._layouts[id(t)] = (t, Layout(t))
        return got[1]

    def instance_dict(self, obj):
        """obj's own __dict__ through the C descriptor that stores it, or None."""
        descr = self.layout(type(obj)).dict_descr
        if descr is None:
            return None
        try:
            d = descr.__get__(obj, type(obj))
        except Exception:
            return None
        return d if issubclass(type(d), dict) else None

    def slot_values(self, obj):
        """[(slot name, value)] of the __slots__ that are set, read by their member descriptors."""
        found = []
        for name, descr in self.layout(type(obj)).slots:
            try:
                found.append((name, descr.__get__(obj, type(obj))))
            except AttributeError:
                continue
        return found


def dict_items(d, limit=None):
    """[(key, value)] of a dict or dict subclass through dict's own iteration (no items()/__iter__
    override, no __missing__); one C-level copy, so other threads cannot change it meanwhile."""
    items = dict.items(d)
    return list(items) if limit is None else list(itertools.islice(items, limit))


def dict_tail(d, n):
    """[(key, value)] of the last n items of a dict in its own order (dict's reversed view)."""
    items = list(itertools.islice(reversed(dict.items(d)), n))
    items.reverse()
    return items


def dict_get(d, key, default=None):
    """d[key] for an exact str key, comparing exact str keys only; default when absent."""
    for k, v in dict_items(d):
        if type(k) is str and k == key:
            return v
    return default


def head(obj, base, n):
    """The first n items of a built-in container (or subclass), through the base's own methods."""
    if base is list or base is tuple:
        return list(base.__getitem__(obj, slice(0, n)))
    return list(itertools.islice(base.__iter__(obj), n))


def tail(obj, base, n):
    """The last n items of a list, tuple or deque (sets have no order to take a tail of)."""
    if n <= 0:
        return []
    if base is list or base is tuple:
        size = base.__len__(obj)
        return list(base.__getitem__(obj, slice(max(0, size - n), size)))
    if base is deque:
        items = list(itertools.islice(deque.__reversed__(obj), n))
        items.reverse()
        return items
    return []


def exception_args(exc):
    args = _exc_args(exc)
    return args if type(args) is tuple else ()
