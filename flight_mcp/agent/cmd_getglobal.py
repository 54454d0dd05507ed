"""getglobal: a module global or class field, seen through an optional expression; or a listing."""
from . import expr, lookup, objview
from .registry import AgentError, command

LISTING_LIMIT = 300


def _listing(owner, verbose):
    entries = []
    for name, value in sorted(vars(owner).items()):
        if name.startswith("__") and not verbose:
            continue
        entries.append({"name": name, "type": objview.type_name(value),
                        "value": objview.short_repr(value, 120)})
    elided = max(0, len(entries) - LISTING_LIMIT)
    return entries[:LISTING_LIMIT], elided


@command("getglobal")
def getglobal(args, ctx):
    mod = lookup.module(args["module"])
    owner = lookup.klass(mod, args["cls"]) if args.get("cls") else mod
    where = mod.__name__ + ("." + args["cls"] if args.get("cls") else "")
    field = args.get("field")
    if not field:
        entries, elided = _listing(owner, args.get("verbose"))
        return {"mode": "listing", "owner": where, "entries": entries, "elided": elided}
    value = lookup.attribute(owner, field, "field")
    source = args.get("expr") or "target"
    code = expr.compile_expr(source, "-e/--expr", args.get("allow_mutating", False))
    try:
        shown = expr.evaluate(code, {"target": value})
    except BaseException as e:
        raise AgentError("expression_failed", expr.describe_failure("-e/--expr", source, e) +
                         ". The name `target` is the value of %s.%s." % (where, field))
    return {"mode": "value", "owner": where, "field": field, "expr": source,
            "view": objview.view(shown, expand=int(args.get("expand", 1)),
                                 verbose=bool(args.get("verbose")), raw=bool(args.get("raw")))}
