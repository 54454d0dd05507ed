"""getglobal: a module global or class field, seen through an optional expression; or a listing.

Listings and views run none of the target's code (objview.py); with raw, each value's own
__repr__ runs on an agent thread with its time budget, so one slow or blocked value shows as such
and the rest of the answer still comes.
"""
import types

from . import lookup, objview
from .codes import arg
from .registry import AgentError, command

LISTING_LIMIT = 300


def _shape(entry, value, in_class):
    """What saves the next call: a function's parameters, a class's methods with theirs."""
    from . import signatures   # here: the instrumentation engine's imports, for listings only
    if in_class:
        member = signatures.of_member(value)
        if member is not None:
            entry["kind"], entry["signature"] = member
    elif type(value) is types.FunctionType:
        entry["signature"] = signatures.of_function(value)
    elif issubclass(type(value), type):
        methods, fields, more = signatures.members(lookup.names_of(value))
        entry.update(methods=methods, fields=fields[:signatures.MAX_METHODS], more_methods=more)


def _listing(owner, verbose, raw):
    viewer = objview.Viewer(raw=raw)
    in_class = issubclass(type(owner), type)
    entries = []
    for name, value in sorted(lookup.names_of(owner), key=lambda kv: kv[0]):  # exact str names only
        if name.startswith("__") and not verbose:
            continue
        if len(entries) < LISTING_LIMIT:
            entry = {"name": name, "type": objview.type_name(value), "value": viewer.text(value, 120)[0]}
            entries.append(entry)
            _shape(entry, value, in_class)
        else:
            entries.append(None)  # counted, not read: a value left out costs nothing
    elided = max(0, len(entries) - LISTING_LIMIT)
    return entries[:LISTING_LIMIT], elided


@command("getglobal")
def getglobal(args, ctx):
    mod = lookup.module(args["module"])
    cls = args["cls"]
    owner = lookup.klass(mod, cls, args["module"]) if cls else mod
    where = args["module"] + ("." + cls if cls else "")
    field = args["field"]
    if not field:
        entries, elided = _listing(owner, args["verbose"], args["raw"])
        return {"mode": "listing", "owner": where, "entries": entries, "elided": elided}
    value = lookup.attribute(owner, field, "field", args["module"] if owner is mod else None)
    source, allow_mutating = args["expr"], args["allow_mutating"]
    if source == "target":   # the default: the value itself (compiling and checking it took half the command)
        shown = value
    else:
        from . import expr   # here: the expression engine (ast, tokenize, re: ~20 ms in a bare target)
        code = expr.compile_expr(source, arg("expr"), allow_mutating)
        try:
            shown = expr.evaluate(code, {"target": value})
        except BaseException as e:
            raise AgentError("expression_failed", expr.describe_failure(arg("expr"), source, e) +
                             ". The name `target` is the value of %s.%s." % (where, field), arg="expr")
    return {"mode": "value", "owner": where, "field": field, "expr": source,
            "view": objview.view(shown, expand=args["expand"], verbose=args["verbose"], raw=args["raw"])}
