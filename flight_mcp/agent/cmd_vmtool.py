"""vmtool: live instances of a class (through the garbage collector), who refers to them, counts by
a key; and forceGc.

Instances are found with gc.get_objects(), i.e. among the objects the cyclic GC tracks. Every
class defined in Python is a GC type on 3.8+ (even with `__slots__ = ()`), so its instances are all
found. C types without GC support (int, str, float, bytes, ...) are never tracked and cannot be
found this way: that is an error, not an empty answer. Builtin containers the GC has untracked
(a dict or tuple holding only atomic values) are missed; the result says so for those types. Frames of functions that are running are not GC-tracked on
most versions, so a local variable of a running function does not show as a referrer.

Nothing here runs the target's code (objstate.py): classes are compared by id (a metaclass may
define __eq__/__hash__), holders are named through owners.py (C-level descriptors), and --count-by keys are
counted by value only when they are plain built-in data, else by their view's text.
"""
import gc
import time

from . import expr, lookup, objstate, objview, owners
from .codes import arg
from .registry import AgentError, command
from .server import now_ms

_HAVE_GC = 1 << 14
REFERRERS_LIMIT = 50     # distinct owner paths returned
COUNT_LIMIT = 50         # distinct keys returned by --count-by


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


def _referrers(instances, ignore):
    """Where the instances are held, grouped by owner path (`Registry._by_topic[*]`: the instance
    attribute, then container levels), most instances first, bounded; the agent's own objects are
    never holders (owners.py). A holder path None: no holder among the GC-tracked objects."""
    longest = [0.0]
    pause = owners.pauser(longest)
    mine = owners.ours((), pause)
    heap = gc.get_objects()
    skip = set(mine)
    skip.update(ignore)
    skip.update((id(heap), id(skip), id(mine), id(instances)))
    try:
        # every holder kept of each instance (a few instances, not a sample: each place counts)
        [ranked], _ = owners.owner_paths([instances], heap, skip, pause, per_object=owners.HOLDERS_KEPT)
    finally:
        del heap, mine
    rows = [{"referrer": path, "count": n} for path, n in ranked]
    return rows[:REFERRERS_LIMIT], max(0, len(rows) - REFERRERS_LIMIT)


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
