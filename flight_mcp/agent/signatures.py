"""Parameter lists of functions, read from their code and defaults without running anything of the
target (no inspect.signature: it reads __signature__, __wrapped__ and __text_signature__, which a
target's class may compute). Defaults are shown as objview's safe short text."""
import types

from . import objview, typefacts
from .instrument import CO_VARARGS, CO_VARKEYWORDS

_DEFAULTS = types.FunctionType.__dict__["__defaults__"].__get__       # the function's own fields,
_KWDEFAULTS = types.FunctionType.__dict__["__kwdefaults__"].__get__   # never an attribute lookup
_CODE = types.FunctionType.__dict__["__code__"].__get__
MAX_METHODS = 40   # a class's methods listed with their parameters; the rest are counted


def of_code(code, func=None, has_self=False):
    """`(order_id, amount=100.0, *, retry=False)`: code's parameters; func (a plain function or
    None) gives the defaults; has_self leaves the first one (self, cls) out."""
    n, k = code.co_argcount, code.co_kwonlyargcount
    names = list(code.co_varnames[:n + k])
    func = func if type(func) is types.FunctionType else None
    defaults = (_DEFAULTS(func) or ()) if func is not None else ()
    kwdefaults = (_KWDEFAULTS(func) or {}) if func is not None else {}
    parts = []
    for i, name in enumerate(names[:n]):
        j = i - (n - len(defaults))
        parts.append(name + ("=" + objview.short_repr(defaults[j], 40) if j >= 0 else ""))
    at = n + k
    if code.co_flags & CO_VARARGS:
        parts.append("*" + code.co_varnames[at])
        at += 1
    elif k:
        parts.append("*")
    for name in names[n:]:
        parts.append(name + ("=" + objview.short_repr(kwdefaults[name], 40)
                             if type(kwdefaults) is dict and name in kwdefaults else ""))
    if code.co_flags & CO_VARKEYWORDS:
        parts.append("**" + code.co_varnames[at])
    posonly = getattr(code, "co_posonlyargcount", 0)
    if posonly:
        parts.insert(posonly, "/")
    if has_self and parts and parts[0] not in ("/", "*") and not parts[0].startswith("*"):
        parts.pop(0)
        if parts[:1] == ["/"]:
            parts.pop(0)
    return "(%s)" % ", ".join(parts)


def of_function(func, has_self=False):
    return of_code(_CODE(func), func, has_self)


def of_member(value):
    """(kind, signature) of a value found in a class namespace, or None when it is not callable
    code we can read: a method, a classmethod, a staticmethod, or a property (no signature)."""
    t = type(value)
    if t is types.FunctionType:
        return "method", of_function(value, has_self=True)
    if t is classmethod and type(value.__func__) is types.FunctionType:
        return "classmethod", of_function(value.__func__, has_self=True)
    if t is staticmethod and type(value.__func__) is types.FunctionType:
        return "staticmethod", of_function(value.__func__)
    if t is property:
        return "property", None
    if t in typefacts.C_SLOTS:
        return "builtin", None   # C code: its parameters are not in a code object
    return None


def members(cls_items):
    """A class's own methods (name + signature) and its plain fields' names, from its namespace
    items [(name, value)]; dunders left out, bounded."""
    methods, fields, more = [], [], 0
    for name, value in cls_items:
        if name.startswith("__") and name.endswith("__"):
            continue
        member = of_member(value)
        if member is None:
            fields.append(name)
        elif len(methods) < MAX_METHODS:
            kind, sig = member
            methods.append({"name": name, "kind": kind, "signature": sig})
        else:
            more += 1
    return methods, fields, more
