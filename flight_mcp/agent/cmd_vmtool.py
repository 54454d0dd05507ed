"""vmtool: live instances of a class (through the garbage collector), who refers to them, counts by
a key; and forceGc.

Instances are found with gc.get_objects(), i.e. among the objects the cyclic GC tracks. Every
class defined in Python is a GC type on 3.8+ (even with `__slots__ = ()`), so its instances are all
found. C types without GC support (int, str, float, bytes, ...) are never tracked and cannot be
found this way: that is an error, not an empty answer. Builtin containers the GC has untracked
(a dict or tuple holding only atomic values) are missed; the result says so for those types. Frames of functions that are running are not GC-tracked on
most versions, so a local variable of a running function does not show as a referrer.

Nothing here runs the target's code (objstate.py): classes are compared by id (a metaclass may
define __eq__/__hash__), referrers are read through C-level descriptors, and --count-by keys are
counted by value only when they are plain built-in data, else by their view's text.
"""
import gc
import os
import sys
import time
import types

from . import expr, lookup, objstate, objview
from .codes import arg
from .registry import AgentError, command
from .server import now_ms

_HAVE_GC = 1 << 14
REFERRERS_LIMIT = 50     # distinct referrer descriptions returned
COUNT_LIMIT = 50         # distinct keys returned by --count-by
_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))


def _all_subclasses(cls):
    """{id: class} of cls and its subclasses (by id: a metaclass may define __hash__/__eq__)."""
    found, todo = {id(cls): cls}, [cls]
    while todo:
        c = todo.pop()
        try:
            subs = type.__subclasses__(c)
        except TypeError:
            subs = []
        for s in subs:
            if id(s) not in found:
                found[id(s)] = s
                todo.append(s)
    return found


def _find(cls, subclasses):
    """Every GC-tracked instance (exact type, or any subclass), oldest first as gc lists them."""
    types_ = _all_subclasses(cls) if subclasses else {id(cls): cls}
    objs = gc.get_objects()
    try:
        if len(types_) == 1:
            return [o for o in objs if type(o) is cls]
        return [o for o in objs if id(type(o)) in types_]
    finally:
        del objs


def _check_findable(cls, label):
    if not (objstate.flags(cls) & _HAVE_GC):
        raise AgentError(
            "not_tracked", "instances of %s are not tracked by the garbage collector (the type has no GC "
            "support: a C type like int/str/float/bytes), so they cannot be enumerated. Reach them through a "
            "container you know instead: getglobal on the global that holds them, or vmtool on the class "
            "that holds them." % label, arg="cls")


def _keys_of(d, ids):
    """(key, value) pairs of dict d whose value is one of the objects with these ids."""
    try:
        return [(k, v) for k, v in objstate.dict_items(d) if id(v) in ids]
    except Exception:
        return []


def _key_text(k):
    return k if type(k) is str else objview.short_repr(k, 40)


def _is_container(obj):
    t = type(obj)
    return any(issubclass(t, b) for b in (dict, list, tuple, set, frozenset))


def _holders(containers, modules_by_dict, ignore, reader):
    """Where each dict/list/tuple/set that refers to an instance sits: id(container) ->
    "Owner.attr" / "module M, global G" text, or ("owner", obj) when the container IS obj.__dict__.
    Two more heap scans at most (the owner of a __dict__ is one level further on Python <= 3.10)."""
    ids = {id(c) for c in containers}
    found, pending = {}, []
    if not ids:
        return found
    for h in gc.get_referrers(*containers):
        if id(h) in ignore or id(h) in ids:
            continue
        if issubclass(type(h), dict):
            mod = modules_by_dict.get(id(h))
            if mod is not None:
                for k, v in _keys_of(h, ids):
                    found.setdefault(id(v), "module %s, global %s" % (mod, _key_text(k)))
            else:
                pending.append(h)
            continue
        d = reader.instance_dict(h)
        if d is None:
            continue
        if id(d) in ids:
            found[id(d)] = ("owner", h)
        for k, v in _keys_of(d, ids):  # 3.11+: an object with inline attributes refers directly
            found.setdefault(id(v), "%s.%s" % (objview.type_name(h), _key_text(k)))
    if pending:
        pending_ids = {id(d) for d in pending}
        owners = {}
        for o in gc.get_referrers(*pending):
            d = reader.instance_dict(o)
            if d is not None and id(d) in pending_ids:
                owners[id(d)] = o
        for d in pending:
            o = owners.get(id(d))
            if o is None:
                continue
            if id(d) in ids:
                found[id(d)] = ("owner", o)
            for k, v in _keys_of(d, ids):
                found.setdefault(id(v), "%s.%s" % (objview.type_name(o), _key_text(k)))
    return found


def _describe(ref, obj, holders, modules_by_dict, reader):
    """How `ref` holds `obj`, e.g. "__main__.Registry.items", "list[3] (len 10) in __main__.Cache.entries"."""
    held = holders.get(id(ref))
    if type(held) is tuple:
        attrs = [_key_text(k) for k, v in _keys_of(ref, {id(obj)})][:3]
        return "%s.%s" % (objview.type_name(held[1]), "/".join(attrs))
    mod = modules_by_dict.get(id(ref))
    if mod is not None:
        return "module %s, global %s" % (mod, ", ".join(_key_text(k) for k, v in _keys_of(ref, {id(obj)})[:3]))
    t = type(ref)
    if t is types.FrameType:
        return "frame of %s (%s:%d)" % (ref.f_code.co_name, os.path.basename(ref.f_code.co_filename), ref.f_lineno)
    if t is types.CellType:
        return "closure cell"
    if t is types.MethodType:
        func = types.MethodType.__dict__["__func__"].__get__(ref)
        name = types.FunctionType.__dict__["__qualname__"].__get__(func) if type(func) is types.FunctionType else "?"
        return "bound method %s" % name
    kind = objstate.short_name(t)
    if issubclass(t, dict):
        keys = [objview.short_repr(k, 40) for k, v in _keys_of(ref, {id(obj)})][:3]
        text = "dict[%s]" % ", ".join(keys) if keys else "dict (as a key)"
    elif issubclass(t, list):
        text = "list[%s] (len %d)" % (", ".join(str(i) for i, v in enumerate(list.__iter__(ref)) if v is obj)[:40],
                                      list.__len__(ref))
    elif _is_container(ref):
        text = "%s (len %d)" % (kind, objstate.container_base(t).__len__(ref))
    else:
        attrs = [_key_text(k) for k, v in _keys_of(reader.instance_dict(ref) or {}, {id(obj)})][:3]
        attrs.extend(name for name, v in reader.slot_values(ref) if v is obj)
        label = objview.type_name(ref)
        return "%s.%s" % (label, "/".join(attrs)) if attrs else label
    return text + (" in %s" % held if type(held) is str else "")


def _referrers(instances, ignore):
    """Referrer descriptions with counts, bounded; the agent's own lists and frames left out."""
    reader = objstate.Reader()
    targets = {id(o): o for o in instances}
    modules_by_dict = {}
    for name, m in list(sys.modules.items()):
        d = reader.instance_dict(m) if m is not None and type(name) is str else None
        if d is not None:
            modules_by_dict[id(d)] = name
    refs = gc.get_referrers(*instances)
    ignore = set(ignore) | {id(refs), id(targets), id(instances)}
    level1 = []
    for r in refs:
        if id(r) in ignore:
            continue
        if type(r) is types.FrameType and os.path.dirname(os.path.abspath(r.f_code.co_filename)) == _AGENT_DIR:
            continue
        level1.append(r)
    del refs
    containers = [r for r in level1 if _is_container(r) and id(r) not in modules_by_dict]
    holders = _holders(containers, modules_by_dict, ignore | {id(level1), id(containers)}, reader)
    counts = {}
    for r in level1:
        for obj in _held(r, targets):
            key = _describe(r, obj, holders, modules_by_dict, reader)
            counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"referrer": k, "count": n} for k, n in ranked[:REFERRERS_LIMIT]], max(0, len(ranked) - REFERRERS_LIMIT)


def _held(ref, targets):
    """Which of the instances `ref` refers to (via gc.get_referents: what the GC itself sees)."""
    return [o for o in gc.get_referents(ref) if id(o) in targets and targets[id(o)] is o]


def _count_by(found, code, source):
    counts, failures = {}, 0
    first_error = None
    env = expr.scope({"target": None, "instances": found})
    for obj in found:
        env["target"] = obj
        try:
            key = eval(code, env)
        except BaseException as e:
            failures += 1
            if first_error is None:
                first_error = _exception_fact(e)
            continue
        if not _plain(key):  # hashing or comparing it would run its class's code: counted by its text
            key = _Label(objview.short_repr(key, 120))
        counts[key] = counts.get(key, 0) + 1
    labelled = {}
    for key, n in counts.items():
        label = str.__str__(key) if type(key) is _Label else objview.short_repr(key, 120)
        labelled[label] = labelled.get(label, 0) + n
    ranked = sorted(labelled.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"expr": source, "counts": [{"key": k, "count": n} for k, n in ranked[:COUNT_LIMIT]],
            "distinct": len(ranked), "failed": failures, "first_error": first_error}


def _exception_fact(e):
    """{type, message} of what an expression raised (its str(), as describe_failure shows it: the
    expression runs on an agent thread)."""
    try:
        message = str(e)
    except BaseException:
        message = "<str() failed>"
    return {"type": objstate.short_name(type(e)), "message": " ".join(message.split())[:300]}


class _Label(str):
    """The text of a key that is not plain data, kept apart from a str key with the same text."""


_PLAIN = (str, int, float, bool, bytes, type(None))


def _plain(key, depth=3):
    """Plain built-in data (exact types), hashed and compared by C code only."""
    t = type(key)
    if any(t is p for p in _PLAIN):
        return True
    return t is tuple and depth > 0 and all(_plain(k, depth - 1) for k in key)


@command("vmtool")
def vmtool(args, ctx):
    if args["action"] == "forceGc":
        return _force_gc(args)
    mutating = args["allow_mutating"]
    source = args["expr"]
    code = expr.compile_expr(source, arg("expr"), mutating)
    key_code = expr.compile_expr(args["count_by"], arg("count_by"), mutating, "key") if args["count_by"] else None
    mod = lookup.module(args["module"])
    cls = lookup.klass(mod, args["cls"], args["module"])
    label = "%s.%s" % (args["module"], args["cls"])
    _check_findable(cls, label)
    started = now_ms()
    found = _find(cls, args["subclasses"])
    search_ms = now_ms() - started
    total = len(found)
    limit = args["limit"]
    instances = found[:limit]
    result = {"action": "getInstances", "module": args["module"], "cls": args["cls"], "expr": source,
              "total": total, "shown": len(instances), "limit": limit, "subclasses": args["subclasses"],
              "search_ms": round(search_ms, 3)}
    untracked = objstate.container_base(cls)
    if untracked is dict or untracked is tuple:
        result["untracked_kind"] = objstate.short_name(untracked)
    try:
        if key_code is not None:
            result["count_by"] = _count_by(found, key_code, args["count_by"])
        if args["referrers"]:
            refs, elided = _referrers(instances, [id(found), id(instances)]) if instances else ([], 0)
            result["referrers"] = refs
            result["referrers_elided"] = elided
        try:
            shown = expr.evaluate(code, {"instances": instances})
        except BaseException as e:
            raise AgentError("expression_failed", expr.describe_failure(arg("expr"), source, e) +
                             ". The name `instances` is the list of %d %s instance(s) found." % (len(instances), label),
                             arg="expr")
        result["view"] = objview.view(shown, expand=args["expand"], verbose=args["verbose"], raw=args["raw"])
        return result
    finally:
        del found, instances


def _force_gc(args):
    if not args["may_change_target"]:
        raise AgentError("read_only", "vmtool forceGc runs a full garbage collection in the target (it frees "
                         "objects and runs their finalizers), and this server is read-only.", arg="action")
    before_stats = gc.get_stats()
    before_count = list(gc.get_count())
    garbage_before = len(gc.garbage)
    started = time.perf_counter()
    collected = [gc.collect(0), gc.collect(1), gc.collect(2)]
    ms = (time.perf_counter() - started) * 1000.0
    after_stats = gc.get_stats()
    generations = []
    for g, (b, a) in enumerate(zip(before_stats, after_stats)):
        generations.append({"generation": g, "collected": collected[g],
                            "count_before": before_count[g] if g < len(before_count) else None,
                            "collections": a.get("collections", 0) - b.get("collections", 0),
                            "collected_total_after": a.get("collected", 0),
                            "uncollectable_total_after": a.get("uncollectable", 0)})
    return {"action": "forceGc", "collected": sum(collected), "generations": generations,
            "gc_enabled": gc.isenabled(), "garbage_added": len(gc.garbage) - garbage_before,
            "count_after": list(gc.get_count()), "cost_ms": round(ms, 3)}
