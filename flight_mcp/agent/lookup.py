"""Finding modules, classes, functions and fields in the target without importing anything and
without running the target's code (no getattr: see objstate.py)."""
import os
import sys

from . import objstate
from .registry import AgentError


def module(name):
    mod = sys.modules.get(name)
    if mod is None:
        near = sorted(m for m in list(sys.modules) if type(m) is str and name.split(".")[-1] in m)[:8]
        hint = (" Modules with a similar name: %s." % ", ".join(near)) if near else ""
        raise AgentError(
            "module_not_found",
            "module %r is not imported in the target (flight-mcp never imports modules into it). "
            "Use the name under which the target imported it: for the script that was run it is "
            "'__main__'; the `module` tool maps a file path to its module name.%s" % (name, hint), arg="module")
    return mod


def names_of(owner):
    """[(name, value)] a module or class itself defines, read without running any of its code: a
    class's own namespace, a module's (or any object's) __dict__. Never a metaclass property, a
    module __getattr__ or a __dict__ property."""
    if issubclass(type(owner), type):
        return objstate.namespace_items(owner)
    d = objstate.Reader().instance_dict(owner)
    return [(k, v) for k, v in objstate.dict_items(d) if type(k) is str] if d is not None else []


def attribute(owner, name, what, label=None):
    """A name defined on a module or class; the raw class attribute (classmethod/staticmethod kept).
    Read from the namespaces themselves (a class's MRO, then type's own fields such as __name__):
    a value that only the target's code computes (module __getattr__, a metaclass property or
    __getattr__) is not found, and the message says so."""
    label = label or _label(owner)
    is_class = issubclass(type(owner), type)
    if is_class:
        klass, value = objstate.lookup(owner, name)
        if klass is not None:
            return value
        builtin = objstate.own(type, name, objstate.MISSING)  # __name__, __mro__, __bases__, ...
        if builtin is not objstate.MISSING and hasattr(type(builtin), "__get__"):
            return builtin.__get__(owner, type(owner))
        names = [n for klass in objstate.mro(owner) for n, v in objstate.namespace_items(klass)]
    else:
        pairs = names_of(owner)
        for n, v in pairs:
            if n == name:
                return v
        names = [n for n, v in pairs]
    close = [n for n in names if not n.startswith("__") and (name.lower() in n.lower() or n.lower() in name.lower())][:8]
    if not close:  # typos: 'regoin' for 'region'
        import difflib
        close = difflib.get_close_matches(name, [n for n in names if not n.startswith("__")], n=5, cutoff=0.7)
    public = sorted(set(n for n in names if not n.startswith("__")))
    hint = (" Did you mean: %s?" % ", ".join(close)) if close else (
        " It defines: %s." % ", ".join(public[:30]) if public else "")
    return _not_found(owner, name, what, label, is_class, names, hint)


def _not_found(owner, name, what, label, is_class, names, hint):
    computed = ""
    meta = objstate.lookup(type(owner), name)[0] if is_class else None
    if meta is not None and objstate.is_heap(meta):
        computed = (" Its metaclass %s computes %r; flight-mcp does not run the target's code to read it."
                    % (objstate.type_name(type(owner)), name))
    elif not is_class and "__getattr__" in names:
        computed = (" The module has a __getattr__ that may compute it; flight-mcp does not run the target's "
                    "code to read it (with --allow-mutating: getglobal of module %s, field __getattr__, expression "
                    "\"target(%r)\")." % (label, name))
    code, arg = _NOT_FOUND[what]
    raise AgentError(code, "%s %r not found in %s.%s%s" % (what, name, label, hint, computed), arg=arg)


# what was looked for -> (error code, the tool argument that named it)
_NOT_FOUND = {"class": ("class_not_found", "cls"), "field": ("field_not_found", "field"),
              "method": ("method_not_found", "method"), "function": ("function_not_found", "method")}


def _label(owner):
    if issubclass(type(owner), type):
        return objstate.short_name(owner)
    d = objstate.Reader().instance_dict(owner)
    name = objstate.dict_get(d, "__name__") if d is not None else None
    return name if type(name) is str else "?"


def klass(mod, name, modname=None):
    obj = mod
    modname = modname or _label(mod)
    for part in name.split("."):
        obj = attribute(obj, part, "class", modname if obj is mod else None)
    if not issubclass(type(obj), type):
        raise AgentError("not_a_class", "%s.%s is a %s, not a class" % (modname, name, objstate.short_name(type(obj))),
                         arg="cls")
    return obj


def file_to_module(path):
    """Module names whose __file__ is this path (symlinks resolved on both sides)."""
    want = os.path.realpath(path)
    found = []
    reader = objstate.Reader()
    for name, mod in list(sys.modules.items()):
        d = reader.instance_dict(mod) if type(name) is str else None  # never a module __getattr__
        f = objstate.dict_get(d, "__file__") if d is not None else None
        if type(f) is not str:
            continue
        try:
            if os.path.realpath(f) == want:
                found.append(name)
        except (OSError, ValueError):
            continue
    return found
