"""Bounded views of live objects: what getglobal, watch and vmtool send back.

A view is plain JSON, the fields of models.ValueView (the host validates it there): {"type", "kind",
"repr", ["len"], ["children": [{"name", "view"}]] (name None for a sequence's items), ["elided",
"elided_at"], ["cycle"], ["error"]}. Everything is capped (repr length, items per
container, nesting, total nodes) so a huge, deep or self-referencing object can never flood the
caller or exhaust a thread's stack.

A view runs none of the target's code (objstate.py says how): built-in values are shown by their
own C methods, built-in containers and their subclasses through the base type's methods, any other
object as `Type({state})` from its __dict__ and __slots__. So a view may be built on any thread,
an application's included. Only `raw` asks for the target's own __repr__: each one then runs on an
agent thread with its own time budget (timebox.py), so raw views are built on agent threads only.
"""
import sys
import types

from . import objstate, timebox

REPR_LIMIT = 240        # characters of one repr
TOP_REPR_LIMIT = 4000   # characters of the top-level repr
ITEMS_LIMIT = 50        # children shown per container
SHOWN_WHOLE = 12        # a container this long is shown whole: eliding one or two items hides, saves nothing
NODES_LIMIT = 2000      # children shown in one whole view
SORT_LIMIT = 10000      # containers larger than this are shown in their own order, unsorted
REPR_ITEMS = 20         # items of one container written into a repr
REPR_ITEM_LIMIT = 60    # characters of each of them, when the container has more than REPR_ITEMS
REPR_DEPTH = 6          # containers nested in one repr; deeper ones are written `[...(N items)]`
MAX_EXPAND = 8          # levels a view expands, whatever is asked (bounds the recursion)

_dict, _list, _tuple, _set, _frozenset, _deque = objstate.CONTAINERS
_module = types.ModuleType
_method = types.MethodType
_func_qualname = types.FunctionType.__dict__["__qualname__"].__get__


def _safe_repr_types():
    """Exact built-in types whose own C repr reads nothing but their own fields."""
    def gen():
        yield 0

    found = [type(None), type(Ellipsis), type(NotImplemented), type(gen), type(gen()), type(gen.__code__),
             type(len), type(str.join), type(object.__init__), type((1).__add__), type(dict.__dict__["fromkeys"]),
             objstate._GETSET, objstate._MEMBER, type(sys._getframe()), type((lambda: gen).__closure__[0])]
    return {id(t): t for t in found}


_SAFE = {}  # filled on first use: nothing done at import time


_STDLIB_VALUES = (("datetime", ("date", "timedelta", "timezone", "datetime", "time")), ("decimal", ("Decimal",)),
                  ("uuid", ("UUID",)))
_found_stdlib = {}  # module name -> {name: class}, once the target imported it (classes live on)


def _stdlib_classes(modname):
    got = _found_stdlib.get(modname)
    if got is None:
        mod = sys.modules.get(modname)
        d = objstate.Reader().instance_dict(mod) if type(mod) is _module else None
        if d is None:
            return {}
        names = dict(_STDLIB_VALUES)[modname]
        got = _found_stdlib[modname] = {k: v for k, v in objstate.dict_items(d) if type(k) is str and k in names
                                        and type(v) is type}
    return got


def _optional_safe_types():
    """Exact stdlib value types with a repr of their own fields, when the target imported them."""
    found = []
    for modname, names in _STDLIB_VALUES:
        classes = _stdlib_classes(modname)
        found.extend(classes[n] for n in names[:3] if n in classes)
    return found


def _tz_types():
    """(datetime, time, timezone) classes: a datetime or time is safe to repr when its tzinfo is None
    or a plain timezone."""
    classes = _stdlib_classes("datetime")
    return classes.get("datetime"), classes.get("time"), classes.get("timezone")


class Viewer(object):
    """Builds the views and reprs of one answer: its classes' layouts, its node budget and, for
    raw, the time budget of the target's __repr__ calls."""

    def __init__(self, raw=False, budget=None, reader=None):
        if not _SAFE:
            _SAFE.update(_safe_repr_types())
        self.reader = reader or objstate.Reader()
        self.raw = raw
        self.budget = budget if budget is not None else (timebox.Budget() if raw else None)
        self.safe = None   # _SAFE and the stdlib value types the target imported, on first need
        self.tz = ()
        self.nodes = NODES_LIMIT

    def _is_safe(self, t):
        if id(t) in _SAFE:
            return True
        if self.safe is None:
            self.safe = {id(x): x for x in _optional_safe_types()}
            self.tz = _tz_types()
        return id(t) in self.safe

    # ---- one-line text -------------------------------------------------------------------
    def text(self, obj, limit=REPR_LIMIT):
        """(repr text within limit, error or None). Never raises."""
        try:
            text, error = self._text(obj, limit, REPR_DEPTH, frozenset())
        except RecursionError:
            return "<repr failed: RecursionError (too deep)>", "RecursionError"
        except Exception as e:  # a bug of ours must not lose the rest of the answer
            text, error = "<repr failed: %s>" % type(e).__name__, "%s" % type(e).__name__
        if len(text) > limit:
            text = text[:limit] + "..."
        return text, error

    def _text(self, obj, room, depth, path):
        t = type(obj)
        exact = _EXACT_LEAVES.get(id(t))
        if exact is not None:
            return exact(obj, room), None
        lay = self.reader.layout(t) if objstate.is_heap(t) else None
        if lay is not None:
            if self.raw and not lay.builtin_repr():
                return self._target_repr(obj, lay)
            leaf = _leaf_text(obj, t, room)
            if leaf is not None:
                return leaf, None
        base = objstate.container_base(t)
        if base is not None:
            return self._container_text(obj, t, lay, base, room, depth, path), None
        if self._is_safe(t):
            return repr(obj), None
        lay = lay or self.reader.layout(t)
        if issubclass(t, type):
            return "<class '%s'>" % objstate.type_name(obj), None
        if issubclass(t, _module):
            return self._module_text(obj), None
        if issubclass(t, BaseException):
            args = objstate.exception_args(obj)
            text = self._seq_text(args, _tuple, room, depth, path)
            return "%s%s" % (lay.short, text[:-2] + ")" if len(args) == 1 else text), None
        if t is _method:
            return self._method_text(obj), None
        if self.tz and (t is self.tz[0] or t is self.tz[1]):
            tz = obj.tzinfo
            if tz is None or type(tz) is self.tz[2]:
                return repr(obj), None
            return "%s (tzinfo %s)" % (repr(obj.replace(tzinfo=None)), self._text(tz, 80, 0, path)[0]), None
        if self.raw and not lay.default_repr():  # a built-in repr that may call the target's reprs
            return self._target_repr(obj, lay)
        plain = "<%s object at %#x>" % (lay.name, id(obj))
        if self.raw or depth <= 0 or id(obj) in path:
            return plain, None
        pairs = self._state(obj)
        if pairs is None:
            return plain, None
        return "%s(%s)" % (lay.short, self._pairs_text(pairs, room, depth, path | {id(obj)}, "{}")), None

    def _target_repr(self, obj, lay):
        text, error = self.budget.call(repr, obj, lay.short)
        return (text, None) if error is None else (error, error)

    def _container_text(self, obj, t, lay, base, room, depth, path):
        n = base.__len__(obj)
        if t is base:
            lay = None
        elif lay is None:
            lay = self.reader.layout(t)
        if id(obj) in path:
            return {_dict: "{...}", _list: "[...]", _deque: "[...]"}.get(base, "(...)")
        opener, closer = _brackets(base, n)
        if base is _dict:
            body = self._pairs_text(objstate.dict_items(obj, REPR_ITEMS), room, depth, path | {id(obj)},
                                    opener + closer, n, keyed=True) if depth > 0 else "%s...(%d items)%s" % (opener, n, closer)
        elif depth <= 0 and n:
            body = "%s...(%d items)%s" % (opener, n, closer)
        elif lay is not None and lay.fields is not None and len(lay.fields) == n and n <= REPR_ITEMS:
            names = lay.fields
            body = self._pairs_text(list(zip(names, objstate.head(obj, base, n))), room, depth, path | {id(obj)}, "()",
                                    n, keyed=False, assign=True)
            return "%s%s" % (lay.short, body)
        else:
            body = self._seq_text(obj, base, room, depth, path | {id(obj)})
        return _wrap(body, t, base, lay)

    def _seq_text(self, obj, base, room, depth, path):
        n = base.__len__(obj)
        opener, closer = _brackets(base, n)
        if base is _set and n == 0:
            return "set()"
        if base is _frozenset and n == 0:
            return "frozenset()"
        parts = []
        used = len(opener) + len(closer)
        per_item = REPR_ITEM_LIMIT if n > REPR_ITEMS else room
        for item in objstate.head(obj, base, REPR_ITEMS):
            if used > room:
                break
            text = self._text(item, min(per_item, max(room - used, 8)), depth - 1, path)[0]
            text = text if len(text) <= per_item else text[:per_item] + "..."
            parts.append(text)
            used += len(text) + 2
        if len(parts) < n:
            parts.append("...(%d items)" % n)
        inner = ", ".join(parts)
        if base is _tuple and n == 1:
            inner += ","
        if base is _frozenset:
            return "frozenset({%s})" % inner
        return opener + inner + closer

    def _pairs_text(self, pairs, room, depth, path, brackets, n=None, keyed=False, assign=False):
        """`{k: v, ...}` (keyed: keys are objects) or `{'name': v}` / `(name=v)` for attributes."""
        n = len(pairs) if n is None else n
        per_item = REPR_ITEM_LIMIT if n > REPR_ITEMS else room
        parts = []
        used = 2
        for k, v in pairs[:REPR_ITEMS]:
            if used > room:
                break
            if assign:
                key = k
            elif keyed:
                key = self._text(k, min(per_item, 80), depth - 1, path)[0]
            else:
                key = str.__repr__(k) if type(k) is str else self._text(k, 80, depth - 1, path)[0]
            value = self._text(v, min(per_item, max(room - used - len(key), 8)), depth - 1, path)[0]
            if len(value) > per_item:
                value = value[:per_item] + "..."
            parts.append(("%s=%s" if assign else "%s: %s") % (key, value))
            used += len(parts[-1]) + 2
        if len(parts) < n:
            parts.append("...(%d items)" % n)
        return brackets[0] + ", ".join(parts) + brackets[1]

    def _module_text(self, mod):
        d = self.reader.instance_dict(mod)
        name = objstate.dict_get(d, "__name__") if d is not None else None
        path = objstate.dict_get(d, "__file__") if d is not None else None
        if type(path) is str:
            return "<module %s from %s>" % (str.__repr__(name) if type(name) is str else "?", str.__repr__(path))
        if type(name) is str and name in sys.builtin_module_names:  # a tuple of exact str
            return "<module %s (built-in)>" % str.__repr__(name)
        return "<module %s>" % (str.__repr__(name) if type(name) is str else "?")

    def _method_text(self, m):
        func, owner = _method.__dict__["__func__"].__get__(m), _method.__dict__["__self__"].__get__(m)
        name = _func_qualname(func) if type(func) is types.FunctionType else "?"
        return "<bound method %s of <%s object at %#x>>" % (name, objstate.type_name(type(owner)), id(owner))

    def _state(self, obj):
        """[(name, value)] an object holds: its __dict__ (str names sorted), __slots__, an exception's
        args; None when it holds nothing to show."""
        d = self.reader.instance_dict(obj)
        pairs = []
        if d is not None:
            pairs.extend(_sorted_pairs(objstate.dict_items(d, SORT_LIMIT)))
        pairs.extend(self.reader.slot_values(obj))
        if issubclass(type(obj), BaseException):
            pairs.append(("args", objstate.exception_args(obj)))
        if not pairs and d is None:
            return None
        return pairs

    # ---- views ---------------------------------------------------------------------------
    def view(self, obj, expand=1, verbose=False):
        return self._view(obj, max(0, min(expand, MAX_EXPAND)), verbose, frozenset(), True)

    def _view(self, obj, expand, verbose, path, top):
        t = type(obj)
        base = objstate.container_base(t)
        kind = _kind(t, base)
        node = {"type": self.reader.layout(t).name if objstate.is_heap(t) else _builtin_name(t), "kind": kind}
        if base is not None:
            node["len"] = base.__len__(obj)
        node["repr"] = None
        limit = TOP_REPR_LIMIT if top else REPR_LIMIT
        parts = None
        if id(obj) in path:
            node["cycle"] = True
        elif not self.raw and expand > 0:
            try:
                parts = self._children(obj, t, kind, base, verbose)
            except Exception as e:
                node["error"] = "cannot list contents: %s" % type(e).__name__
        if parts is None:
            node["repr"], error = self.text(obj, limit)
            if error is not None:
                node["error"] = node["repr"]
            return node
        total, head, tail = parts
        path = path | {id(obj)}
        shown = []
        for name, value in head + tail:
            if self.nodes <= 0:
                break
            self.nodes -= 1
            shown.append({"name": name, "view": self._view(value, expand - 1, verbose, path, False)})
        node["children"] = shown
        if total > len(shown):
            node["elided"] = total - len(shown)
            node["elided_at"] = len(head) if tail and len(shown) == len(head) + len(tail) else len(shown)
        # the children's texts already hold the whole content: write it from them, not again from obj
        whole = total == len(shown) and not any(kid["view"].get("cycle") for kid in shown)
        text = self._composed(obj, t, base, shown, limit) if whole else None
        node["repr"] = text if text is not None else self.text(obj, limit)[0]
        return node

    def _composed(self, obj, t, base, shown, limit):
        """The repr text() would write, from the children's texts when they are obj's whole content
        (a container, or a plain object whose every attribute is shown); None otherwise."""
        parts = [(kid["name"], kid["view"]["repr"]) for kid in shown]
        lay = None if t is base else self.reader.layout(t)
        if base is None:
            if not self._plain_object(obj, t, lay, len(parts)):
                return None
            text = "%s({%s})" % (lay.short, ", ".join("%s: %s" % kv for kv in parts))
        elif base is _dict:
            text = _wrap("{%s}" % ", ".join("%s: %s" % kv for kv in parts), t, base, lay)
        elif lay is not None and lay.fields is not None and len(lay.fields) == len(parts):
            text = "%s(%s)" % (lay.short, ", ".join("%s=%s" % kv for kv in parts))
        else:
            inner = ", ".join(r for _, r in parts)
            if base is _tuple:
                body = "(%s)" % (inner + "," if len(parts) == 1 else inner)
            elif base is _set or base is _frozenset:
                body = "{%s}" % inner if parts else ("set()" if base is _set else "frozenset()")
                body = "frozenset(%s)" % body if base is _frozenset and parts else body
            else:
                body = "[%s]" % inner
            text = _wrap(body, t, base, lay)
        return text if len(text) <= limit else text[:limit] + "..."

    def _plain_object(self, obj, t, lay, shown):
        """text() writes obj as `Type({state})`, and all of its state is shown."""
        if issubclass(t, (type, _module, BaseException)) or self._is_safe(t) or (self.tz and (t is self.tz[0] or t is self.tz[1])):
            return False
        pairs = self._state(obj)
        return pairs is not None and len(pairs) == shown

    def _children(self, obj, t, kind, base, verbose):
        """(total, head pairs, tail pairs) of (name, value) to expand, or None for a leaf.
        Huge containers are never copied whole: only the items that can be shown are taken."""
        if kind == "leaf":
            return None
        if base is _dict:
            n = _dict.__len__(obj)
            if n <= SORT_LIMIT:
                pairs = _sorted_pairs(objstate.dict_items(obj))
                return self._cut(n, pairs, pairs[-5:], verbose, self._key_name)
            head = objstate.dict_items(obj, ITEMS_LIMIT if verbose else 5)
            tail = [] if verbose else objstate.dict_tail(obj, 5)
            return n, self._named(head, self._key_name), self._named(tail, self._key_name)
        if base is not None:
            n = base.__len__(obj)
            names = self.reader.layout(t).fields if objstate.is_heap(t) else None
            if verbose or n <= SHOWN_WHOLE:
                items = objstate.head(obj, base, ITEMS_LIMIT if verbose else SHOWN_WHOLE)
                tail = []
            else:
                items, tail = objstate.head(obj, base, 5), objstate.tail(obj, base, 5)
            if names is not None and len(names) == n:
                return n, list(zip(names, items)), list(zip(names[n - len(tail):], tail))
            return n, [(None, v) for v in items], [(None, v) for v in tail]
        if issubclass(t, type):
            pairs = sorted(objstate.namespace_items(obj), key=_first)
        else:
            pairs = self._state(obj)
            if pairs is None:
                return None  # no attributes to show: its repr says it all
        if not verbose:
            pairs = [(k, v) for k, v in pairs if not (type(k) is str and k.startswith("__"))]
        pairs = [(str.__repr__(k) if type(k) is str else self.text(k, 80)[0], v) for k, v in pairs]
        if verbose:
            return len(pairs), pairs[:ITEMS_LIMIT], []
        return len(pairs), pairs, []

    def _cut(self, n, pairs, tail, verbose, name_of):
        if verbose:
            return n, self._named(pairs[:ITEMS_LIMIT], name_of), []
        if n > SHOWN_WHOLE:
            return n, self._named(pairs[:5], name_of), self._named(tail, name_of)
        return n, self._named(pairs, name_of), []

    def _named(self, pairs, name_of):
        return [(name_of(k), v) for k, v in pairs]

    def _key_name(self, key):
        return self.text(key, 80)[0]


def _first(kv):
    return kv[0]


def _sorted_pairs(items):
    """Sorted by key when every key is plain built-in data that compares without the target's code
    (all exact str, or all exact numbers); else in the mapping's own order."""
    if all(type(k) is str for k, v in items):
        return sorted(items, key=_first)
    if all(type(k) is int or type(k) is float for k, v in items):
        return sorted(items, key=_first)
    return items


def _wrap(body, t, base, lay):
    """A container's text: a subclass's name around the base's own form (deque(...) too)."""
    if lay is None:
        return body if base is not _deque else "deque(%s)" % body
    if lay.name == objstate.type_name(base):
        return body  # (capture._Kwargs calls itself dict)
    return "%s(%s)" % (lay.short, body)


def _brackets(base, n):
    if base is _dict:
        return "{", "}"
    if base is _list or base is _deque:
        return "[", "]"
    if base is _tuple:
        return "(", ")"
    return "{", "}"


def _kind(t, base):
    if base is _dict:
        return "mapping"
    if base is _list or base is _tuple or base is _deque:
        return "sequence"
    if base is _set or base is _frozenset:
        return "set"
    if t is type(None) or issubclass(t, (str, bytes, bytearray, int, float, complex)):
        return "leaf"
    return "object"


def _str_text(s, room, base=str):
    n = base.__len__(s)
    if n <= room:
        return base.__repr__(s)
    cut = max(1, room - 24)  # room for the note
    return base.__repr__(base.__getitem__(s, slice(0, cut))) + "...(%d chars)" % n


def _int_text(i, room):
    bits = int.bit_length(i)
    if bits > 3 * max(room, 8):  # decimal conversion is quadratic, and refused past 4300 digits
        return "<int of %d bits>" % bits
    return int.__repr__(i)


# Plain data of exact built-in types, by id (a dict of types would hash a metaclass's __hash__).
_EXACT_LEAVES = {
    id(str): _str_text, id(int): _int_text,
    id(bytes): lambda b, room: _str_text(b, room, bytes), id(bytearray): lambda b, room: _str_text(b, room, bytearray),
    id(float): lambda f, room: float.__repr__(f), id(complex): lambda c, room: complex.__repr__(c),
    id(bool): lambda b, room: "True" if b else "False", id(type(None)): lambda n, room: "None",
}


def _leaf_text(obj, t, room):
    """repr of a subclass of str/bytes/int/float/complex by the base's own method, bounded like the
    exact types (_EXACT_LEAVES): a long string is cut before repr, a huge int is not converted."""
    for base in (str, bytes, bytearray):
        if issubclass(t, base):
            return _str_text(obj, room, base)
    if issubclass(t, int):
        return _int_text(obj, room)
    if issubclass(t, float):
        return float.__repr__(obj)
    if issubclass(t, complex):
        return complex.__repr__(obj)
    return None


_BUILTIN_NAMES = {}


def _builtin_name(t):
    """type_name of a C type, kept: C types live as long as the process."""
    name = _BUILTIN_NAMES.get(id(t))
    if name is None:
        name = _BUILTIN_NAMES[id(t)] = objstate.type_name(t)
    return name


# ---- what the commands call -----------------------------------------------------------------
def type_name(obj):
    """'module.Qualname' of obj's real type, whatever its metaclass or __class__ say."""
    return objstate.type_name(type(obj))


def short_repr(obj, limit=REPR_LIMIT, raw=False, budget=None, viewer=None):
    """One line, within limit, that never raises and runs no target code unless raw."""
    v = viewer or Viewer(raw=raw, budget=budget)
    return v.text(obj, limit)[0]


def view(obj, expand=1, verbose=False, raw=False, budget=None):
    """expand: levels of children to show (0 = repr only). raw: the target's own repr() on one line
    at the top (agent threads only). Without verbose, containers longer than 10 show their first and
    last 5 items (like flight_profiler); with verbose up to ITEMS_LIMIT, always within NODES_LIMIT."""
    return Viewer(raw=raw, budget=budget).view(obj, expand, verbose)
