"""Bounded views of live objects: what getglobal, watch and vmtool send back.

A view is plain JSON: {"type", "repr", ["len"], ["children": [{"name", "view"}]], ["elided"],
["error"]}. Everything is capped (repr length, items per container, depth, total nodes) so a
huge or self-referencing object can never flood the caller, and a __repr__ that raises or
recurses becomes an "error" field instead of an exception.
"""
import sys

REPR_LIMIT = 240        # characters of one repr
TOP_REPR_LIMIT = 4000   # characters of the top-level repr when it is not expanded
ITEMS_LIMIT = 50        # children shown per container
NODES_LIMIT = 2000      # children shown in one whole view

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


def _children(obj, verbose):
    """(name, value) pairs to expand, or None for a leaf."""
    if isinstance(obj, dict):
        return [(short_repr(k, 80), v) for k, v in list(obj.items())]
    if isinstance(obj, (list, tuple)):
        return [("[%d]" % i, v) for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return [("", v) for v in list(obj)]
    if isinstance(obj, (str, bytes, bytearray, int, float, complex, bool, type(None))):
        return None
    if isinstance(obj, type(sys)):
        return [(k, v) for k, v in sorted(vars(obj).items()) if verbose or not k.startswith("__")]
    d = getattr(obj, "__dict__", None)
    pairs = []
    if isinstance(d, dict):
        pairs.extend(sorted(d.items()))
    for klass in type(obj).__mro__:
        for slot in getattr(klass, "__slots__", ()) or ():
            if isinstance(slot, str) and slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                try:
                    pairs.append((slot, getattr(obj, slot)))
                except BaseException:
                    pass
    if not verbose:
        pairs = [(k, v) for k, v in pairs if not (isinstance(k, str) and k.startswith("__"))]
    return pairs if pairs else None


def view(obj, expand=1, verbose=False, raw=False):
    """expand: levels of children to show (0 = repr only). raw: str() instead of repr() at the top."""
    budget = [NODES_LIMIT]
    return _view(obj, expand, verbose, raw, budget, set(), True)


def _view(obj, expand, verbose, raw, budget, seen, top):
    node = {"type": type_name(obj)}
    n = _length(obj)
    if n is not None:
        node["len"] = n
    if raw and top:
        try:
            text = str(obj)
            node["repr"] = text if len(text) <= TOP_REPR_LIMIT else text[:TOP_REPR_LIMIT] + "...(%d chars)" % len(text)
        except BaseException as e:
            node["repr"] = "<str failed: %s>" % type(e).__name__
        return node
    node["repr"] = short_repr(obj, TOP_REPR_LIMIT if top else REPR_LIMIT)
    if node["repr"].startswith("<repr failed"):
        node["error"] = node["repr"]
    if expand <= 0 or id(obj) in seen:
        if id(obj) in seen:
            node["cycle"] = True
        return node
    try:
        kids = _children(obj, verbose)
    except BaseException as e:
        node["error"] = "cannot list contents: %s" % type(e).__name__
        kids = None
    if kids is None:
        return node
    seen = seen | {id(obj)}
    shown = []
    for name, value in kids[:ITEMS_LIMIT]:
        if budget[0] <= 0:
            break
        budget[0] -= 1
        shown.append({"name": name, "view": _view(value, expand - 1, verbose, False, budget, seen, False)})
    node["children"] = shown
    if len(kids) > len(shown):
        node["elided"] = len(kids) - len(shown)
    return node
