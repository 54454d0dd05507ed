"""`Class.method` for a code object on every Python: 3.11+ code carries co_qualname; on 3.8-3.10
only the bare name is in the code, so the class is found by looking for the function in the
classes of the code's module (its globals, or the module loaded from its file). Reads class
namespaces through objstate (no __getattr__, property or metaclass of the target runs); results
are cached per code object, bounded."""
import sys
import types

from . import objstate

_CACHE = {}          # code -> qualname; cleared past _CACHE_MAX entries
_CACHE_MAX = 4096
_MODULES = {}        # co_filename -> the module dict loaded from it (or None); cleared with _CACHE


def qualname(code, module_globals=None):
    """code's qualified name; module_globals: the globals of a frame running it, if known."""
    q = getattr(code, "co_qualname", None)
    if q is not None:
        return q
    q = _CACHE.get(code)
    if q is None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
            _MODULES.clear()
        g = module_globals if type(module_globals) is dict else _module_dict(code.co_filename)
        q = (_search(g, code) if g is not None else None) or code.co_name
        _CACHE[code] = q
    return q


def _module_dict(filename):
    if filename in _MODULES:
        return _MODULES[filename]
    found = None
    for module in list(sys.modules.values()):
        if type(module) is not types.ModuleType:
            continue
        d = types.ModuleType.__dict__["__dict__"].__get__(module)   # the module's own dict, no __getattr__
        if type(d) is dict and dict.get(d, "__file__") == filename:
            found = d
            break
    _MODULES[filename] = found
    return found


def _function_code(value):
    """The code of a function stored in a class namespace (plain, staticmethod, classmethod)."""
    if type(value) in (staticmethod, classmethod):
        value = value.__func__
    if type(value) is types.FunctionType:
        return value.__code__
    return None


def _search(g, code, depth=2):
    """'Class.name' (or 'Outer.Inner.name') when a class in g defines a function with this code."""
    for value in list(dict.values(g)):
        if issubclass(type(value), type) and objstate.is_heap(value):   # a class of the application
            found = _in_class(value, code, depth)
            if found:
                return found
    return None


def _in_class(klass, code, depth):
    name = objstate.qualname_of(klass)
    if name is None:
        return None
    for key, value in objstate.namespace_items(klass):
        if _function_code(value) is code:
            return "%s.%s" % (name, code.co_name)
        if depth > 1 and issubclass(type(value), type) and objstate.is_heap(value) and value is not klass:
            found = _in_class(value, code, depth - 1)
            if found:
                return found
    return None
