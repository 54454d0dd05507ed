"""Bounded views of live objects: what getglobal, watch and vmtool send back.

A view is plain JSON: {"type", "repr", ["len"], ["children": [{"name", "view"}]], ["elided"],
["error"]}. Everything is capped (repr length, items per container, depth, total nodes) so a
huge or self-referencing object can never flood the caller, and a __repr__ that raises or
recurses becomes an "error" field instead of an exception.
"""
import itertools
import sys

REPR_LIMIT = 240        # characters of one repr
TOP_REPR_LIMIT = 4000   # characters of the top-level repr when it is not expanded
ITEMS_LIMIT = 50        # children shown per container
NODES_LIMIT = 2000      # children shown in one whole view
SORT_LIMIT = 10000      # containers larger than this are shown in their own order, unsorted

_CONTAINERS = (list, tuple, set, frozenset, dict)


def type_name(obj):
    t = type(obj)
    mod = getattr(t, "__module__", "builtins")
    return t.__qualname__ if mod in ("builtins", None) else "%s.%s" % (mod, t.__qualname__)


def short_repr(obj, limit=REPR_LIMIT):
    """repr() that never raises, never builds a huge string for a big builtin container."""
    try:
        if isinstance(obj, _CONTAINERS) and len(obj) > 20:
            text = _container_repr(obj, 20)
        elif isinstance(obj, (str, bytes, bytearray)) and len(obj) > limit:
            text = repr(obj[:limit]) + "..."
        elif type(obj).__repr__ is object.__repr__ and isinstance(getattr(obj, "__dict__", None), dict):
            # `<x.C object at 0x..>` tells nothing: show the state, like flight_profiler's `C({...})`
            text = "%s(%s)" % (type(obj).__name__, short_repr(obj.__dict__, limit))
        else:
            text = repr(obj)
    except RecursionError:
        return "<repr failed: RecursionError (a __repr__ that recurses)>"
    except BaseException as e:  # a broken __repr__ must not break the command
        return "<repr failed: %s: %s>" % (type(e).__name__, _first_line(e))
    if len(text) > limit:
        text = text[:limit] + "...(%d chars)" % len(text)
    return text


def _first_line(e):
    try:
        return str(e).splitlines()[0][:200]
    except BaseException:
        return "?"


def _container_repr(obj, n):
    if isinstance(obj, dict):
        parts = []
        for i, (k, v) in enumerate(list(obj.items())[:n]):
            parts.append("%s: %s" % (short_repr(k, 60), short_repr(v, 60)))
        return "{%s, ...(%d items)}" % (", ".join(parts), len(obj))
    items = [short_repr(v, 60) for v in list(obj)[:n]]
    open_, close = {list: "[]", tuple: "()"}.get(type(obj), "{}")
    return "%s%s, ...(%d items)%s" % (open_, ", ".join(items), len(obj), close)


def _length(obj):
    try:
        return len(obj) if isinstance(obj, _CONTAINERS) else None
    except BaseException:
        return None


def _kind(obj):
    if isinstance(obj, dict):
        return "mapping"
    if isinstance(obj, (list, tuple)):
        return "sequence"
    if isinstance(obj, (set, frozenset)):
        return "set"
    if isinstance(obj, (str, bytes, bytearray, int, float, complex, bool, type(None))):
        return "leaf"
    return "object"


def _children(obj, kind, verbose):
    """(name, value) pairs to expand, or None for a leaf. Dict keys are given as repr().
    Huge containers are never copied whole: only the items that can be shown are taken."""
    if kind == "mapping":
        return [(short_repr(k, 80), v) for k, v in _sorted_items(obj)]
    if kind in ("sequence", "set"):
        seq = obj if kind == "sequence" else list(obj) if len(obj) <= SORT_LIMIT else list(itertools.islice(obj, ITEMS_LIMIT))
        if len(seq) > ITEMS_LIMIT:
            seq = list(seq[:ITEMS_LIMIT]) if verbose else list(seq[:5]) + list(seq[-5:])
        return [("", v) for v in seq]
    if kind == "leaf":
        return None
    if isinstance(obj, type(sys)):
        return [(repr(k), v) for k, v in sorted(vars(obj).items()) if verbose or not k.startswith("__")]
    d = getattr(obj, "__dict__", None)
    pairs = []
    if isinstance(d, dict) or hasattr(d, "items"):
        pairs.extend(sorted(d.items(), key=lambda kv: str(kv[0])))
    for klass in type(obj).__mro__:
        for slot in getattr(klass, "__slots__", ()) or ():
            if isinstance(slot, str) and slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                try:
                    pairs.append((slot, getattr(obj, slot)))
                except BaseException:
                    pass
    if not verbose:
        pairs = [(k, v) for k, v in pairs if not (isinstance(k, str) and k.startswith("__"))]
    if not pairs and not isinstance(d, dict):
        return None  # no attributes to show: its repr says it all
    return [(repr(k), v) for k, v in pairs]


def _sorted_items(d):
    if len(d) > SORT_LIMIT:  # sorting millions of keys would stall the command: insertion order
        return list(itertools.islice(d.items(), ITEMS_LIMIT))
    items = list(d.items())
    try:
        return sorted(items, key=lambda kv: kv[0])
    except TypeError:  # mixed key types: keep insertion order
        return items


def view(obj, expand=1, verbose=False, raw=False):
    """expand: levels of children to show (0 = repr only). raw: repr() on one line at the top.
    Without verbose, containers longer than 10 show their first and last 5 items (like
    flight_profiler); with verbose up to ITEMS_LIMIT, always within NODES_LIMIT in total."""
    budget = [NODES_LIMIT]
    return _view(obj, expand, verbose, raw, budget, set(), True)


def _view(obj, expand, verbose, raw, budget, seen, top):
    kind = _kind(obj)
    node = {"type": type_name(obj), "kind": kind}
    n = _length(obj)
    if n is not None:
        node["len"] = n
    node["repr"] = short_repr(obj, TOP_REPR_LIMIT if top else REPR_LIMIT)
    if node["repr"].startswith("<repr failed"):
        node["error"] = node["repr"]
    if raw or expand <= 0 or id(obj) in seen:
        if id(obj) in seen:
            node["cycle"] = True
        return node
    try:
        kids = _children(obj, kind, verbose)
    except BaseException as e:
        node["error"] = "cannot list contents: %s" % type(e).__name__
        kids = None
    if kids is None:
        return node
    seen = seen | {id(obj)}
    total = n if n is not None else len(kids)
    if verbose:
        head, tail = kids[:ITEMS_LIMIT], []
    elif total > 10:
        head, tail = kids[:5], kids[-5:] if len(kids) == total or kind == "sequence" else []
    else:
        head, tail = kids, []
    shown = []
    for name, value in head + tail:
        if budget[0] <= 0:
            break
        budget[0] -= 1
        shown.append({"name": name, "view": _view(value, expand - 1, verbose, False, budget, seen, False)})
    node["children"] = shown
    if total > len(shown):
        node["elided"] = total - len(shown)
        node["elided_at"] = len(head) if tail and len(shown) == len(head) + len(tail) else len(shown)
    return node
