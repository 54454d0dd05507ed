"""Finding modules, classes, functions and fields in the target without importing anything."""
import os
import sys

from .registry import AgentError


def module(name):
    mod = sys.modules.get(name)
    if mod is None:
        near = sorted(m for m in list(sys.modules) if name.split(".")[-1] in m)[:8]
        hint = (" Modules with a similar name: %s." % ", ".join(near)) if near else ""
        raise AgentError(
            "module_not_found",
            "module %r is not imported in the target (flight-mcp never imports modules into it). "
            "Use the name under which the target imported it: for the script that was run it is "
            "'__main__'; the `module` tool maps a file path to its module name.%s" % (name, hint))
    return mod


def attribute(owner, name, what):
    """A name defined on a module or class; the raw class attribute (classmethod/staticmethod kept)."""
    d = getattr(owner, "__dict__", {})
    if name in d:
        return d[name]
    if isinstance(owner, type):
        for klass in owner.__mro__[1:]:
            if name in vars(klass):
                return vars(klass)[name]
    try:
        return getattr(owner, name)
    except AttributeError:
        pass
    except BaseException as e:
        raise AgentError("lookup_failed", "reading %s %r raised %s: %s" % (what, name, type(e).__name__, e))
    names = [n for n in d if not n.startswith("__")] if isinstance(d, dict) or hasattr(d, "keys") else []
    close = [n for n in names if name.lower() in n.lower() or n.lower() in name.lower()][:8]
    if not close:  # typos: 'regoin' for 'region'
        import difflib
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.7)
    label = getattr(owner, "__name__", "?")
    hint = (" Did you mean: %s?" % ", ".join(close)) if close else (
        " It defines: %s." % ", ".join(sorted(names)[:30]) if names else "")
    raise AgentError("%s_not_found" % what, "%s %r not found in %s.%s" % (what, name, label, hint))


def klass(mod, name):
    obj = mod
    for part in name.split("."):
        obj = attribute(obj, part, "class")
    if not isinstance(obj, type):
        raise AgentError("not_a_class", "%s.%s is a %s, not a class" % (mod.__name__, name, type(obj).__name__))
    return obj


def file_to_module(path):
    """Module names whose __file__ is this path (symlinks resolved on both sides)."""
    want = os.path.realpath(path)
    found = []
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if not isinstance(f, str):
            continue
        try:
            if os.path.realpath(f) == want:
                found.append(name)
        except (OSError, ValueError):
            continue
    return found
