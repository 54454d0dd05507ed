"""What an object is and what its class holds, read without running any of the target's code.

The read-only guards (guards.py) decide by these facts: the exact run-time type, which class along
the MRO defines a name and whether that definition is C code (a slot wrapper, a method or getset
descriptor of a builtin or extension type) or the target's Python code (a function, a property, a
descriptor class of its own). attribute() reads like the interpreter does (data descriptors of the
class, then the instance __dict__, then the class) but runs only C-level descriptors: a property,
a Python-level descriptor or a __getattr__ fallback is refused, never run.

Class namespaces are read in one place, objstate.py (class_dicts, find): the same cached dicts
the views use.
"""
import gc
import sys
import types

from .objstate import class_dicts as _dicts
from .objstate import find as lookup   # (owner, value) along the MRO: objstate reads every class namespace

# Values in a class dict that are C code: calling or binding them runs no Python of the target.
C_SLOTS = frozenset([types.WrapperDescriptorType, types.MethodDescriptorType, types.BuiltinFunctionType,
                     types.ClassMethodDescriptorType])
# Descriptors whose __get__ is C code that calls nothing of the target's.
C_GETTERS = frozenset([types.GetSetDescriptorType, types.MemberDescriptorType]) | C_SLOTS
MAPPINGPROXY = type(type.__dict__)
_MISSING = object()


class Refused(Exception):
    """Reading this would run the target's own code; the message says what and what to do instead."""


def c_slot(tp, name):
    """True when tp's `name` is C code or not defined at all (then the interpreter's default runs)."""
    value = lookup(tp, name)[1]
    return value is None or type(value) in C_SLOTS


def slot_owner(tp, name):
    """The class whose C code implements `name` for tp, or None when it is the target's Python code
    (or absent). Lets a guard see that a dict subclass still compares, iterates and hashes as dict."""
    owner, value = lookup(tp, name)
    return owner if value is not None and type(value) in C_SLOTS else None


def is_a(obj, cls):
    """isinstance(obj, cls) by the real type: isinstance() falls back to reading obj.__class__,
    which a class of the target may define as a property (or serve through __getattribute__)."""
    return issubclass(type(obj), cls)


def is_class(obj):
    """is_a(obj, type) by the real type: is_a() would read obj.__class__, which a class
    of the target may define as a property."""
    return issubclass(type(obj), type)


def unproxy(obj):
    """The mapping behind a mappingproxy (a class's __dict__), without calling the proxy's methods
    (they forward to the mapping's own get/keys/copy, which may be the target's)."""
    if type(obj) is MAPPINGPROXY:
        inner = gc.get_referents(obj)
        if len(inner) == 1:
            return inner[0]
    return obj


def _refuse_descriptor(obj, name, owner, value):
    kind = type(value).__name__
    if is_a(value, property):
        raise Refused("%s.%s is a property: reading it runs the class's own code. Read the attribute it "
                      "wraps instead (look at type(x).__dict__ or the instance's __dict__)" % (owner.__name__, name))
    raise Refused("%s.%s is a %s descriptor: reading it runs its own __get__. Read the instance's "
                  "__dict__ instead" % (owner.__name__, name, kind))


def _c_accessor(vt):
    """namedtuple fields: a C descriptor that only indexes the tuple."""
    return vt.__name__ == "_tuplegetter" and vt.__module__ in ("_collections", "collections") \
        and c_slot(vt, "__get__")


# The standard library's properties that only return a private field, by (module, class): reading
# the field is what the property does, without running it. Decided by the class that defines the
# name (a subclass's own property is the target's code and stays refused).
_STDLIB_FIELDS = {
    ("enum", "Enum"): {"name": "_name_", "value": "_value_"},
    ("threading", "Thread"): {"name": "_name", "ident": "_ident", "daemon": "_daemonic",
                              "native_id": "_native_id"},
}


def _stdlib_field(obj, name, owner):
    for (module, cls), fields in _STDLIB_FIELDS.items():
        m = sys.modules.get(module)
        if m is not None and name in fields and owner is getattr(m, cls, None):
            d = instance_dict(obj)
            if d is not None and fields[name] in d:
                return True, d[fields[name]]
    return False, None


def _bind(obj, name, owner, value, cls=None):
    """What obj.name gives when the class holds `value`: only C-level or plain-function binding."""
    vt = type(value)
    if obj is not None:
        found, field = _stdlib_field(obj, name, owner)
        if found:
            return field
    if vt in C_GETTERS or _c_accessor(vt):
        return value.__get__(obj, cls if cls is not None else type(obj))
    if vt is types.FunctionType:
        return value if obj is None else types.MethodType(value, obj)
    if vt is staticmethod:
        return value.__func__
    if vt is classmethod and type(value.__func__) is types.FunctionType:
        return types.MethodType(value.__func__, cls if cls is not None else type(obj))
    if lookup(vt, "__get__")[1] is None:
        return value   # a plain value stored in the class
    _refuse_descriptor(obj, name, owner, value)


def _is_data_descriptor(value):
    vt = type(value)
    return lookup(vt, "__set__")[1] is not None or lookup(vt, "__delete__")[1] is not None


def instance_dict(obj):
    """obj's own __dict__ through the interpreter's C getter, or None (slots, builtins)."""
    owner, desc = lookup(type(obj), "__dict__")
    if desc is None:
        return None
    if type(desc) not in (types.GetSetDescriptorType, types.MemberDescriptorType):
        raise Refused("%s defines __dict__ itself: reading it runs the class's own code" % owner.__name__)
    d = desc.__get__(obj, type(obj))
    return d if is_a(d, dict) else None


_OBJECT_GETATTRIBUTE = object.__dict__["__getattribute__"]
_PLAIN_VALUES = frozenset([int, float, complex, bool, type(None), str, bytes, tuple, list, dict, set, frozenset])


def attribute(obj, name):
    """obj.name as the interpreter finds it, with only C-level descriptors run.
    Raises AttributeError like a read would, Refused when the read needs the target's code."""
    if name == "__class__":
        return type(obj)
    tp = type(obj)
    if issubclass(tp, type):
        return _class_attribute(obj, name)
    # One walk along the MRO finds the name, __getattribute__ and the __dict__ descriptor.
    owner = value = ga = dict_desc = None
    for klass, d in _dicts(tp):
        if owner is None and name in d:
            owner, value = klass, d[name]
        if ga is None and "__getattribute__" in d:
            ga = d["__getattribute__"]
            if type(ga) not in C_SLOTS:
                raise Refused("%s defines __getattribute__: every attribute read runs the class's own code"
                              % klass.__name__)
        if dict_desc is None and "__dict__" in d:
            dict_desc = d["__dict__"]
    plain = type(value) in _PLAIN_VALUES
    if owner is not None and not plain and _is_data_descriptor(value):
        return _bind(obj, name, owner, value)
    if dict_desc is not None:
        if type(dict_desc) not in (types.GetSetDescriptorType, types.MemberDescriptorType):
            raise Refused("%s defines __dict__ itself: reading it runs the class's own code" % tp.__name__)
        # The interpreter's own getter, found above; through the attribute when __getattribute__ is
        # object's (then obj.__dict__ reaches that same getter, at a third of the cost).
        d = obj.__dict__ if ga is _OBJECT_GETATTRIBUTE else dict_desc.__get__(obj, tp)
        if is_a(d, dict):
            found = dict.get(d, name, _MISSING)
            if found is not _MISSING:
                return found
            if is_a(obj, types.ModuleType) and "__getattr__" in d and owner is None:
                raise Refused("the module %s has a __getattr__: reading the missing name %r would run it"
                              % (dict.get(d, "__name__", "?"), name))
    if owner is not None:
        return value if plain else _bind(obj, name, owner, value)
    gowner, getattr_ = lookup(tp, "__getattr__")
    if getattr_ is not None:
        raise Refused("%s has no attribute %r of its own and defines __getattr__: reading it would run the "
                      "class's own code" % (gowner.__name__, name))
    raise AttributeError("%r object has no attribute %r" % (tp.__name__, name))


def _class_attribute(cls, name):
    """cls.name: data descriptors of the metaclass, then the class's MRO, then the metaclass."""
    meta = type(cls)
    mowner, mvalue = lookup(meta, name)
    if mvalue is not None and _is_data_descriptor(mvalue):
        return _bind(cls, name, mowner, mvalue, meta)
    owner, value = lookup(cls, name)
    if owner is not None:
        vt = type(value)
        if vt in C_GETTERS or vt in (types.FunctionType, staticmethod, property) \
                or lookup(vt, "__get__")[1] is None:
            # From the class: functions and properties come back as themselves, no code runs.
            if vt is staticmethod:
                return value.__func__
            if vt in C_GETTERS and vt is not types.GetSetDescriptorType and vt is not types.MemberDescriptorType:
                return value.__get__(None, cls)
            return value
        return _bind(None, name, owner, value, cls)
    if mowner is not None:
        return _bind(cls, name, mowner, mvalue, meta)
    gowner, getattr_ = lookup(meta, "__getattr__")
    if getattr_ is not None:
        raise Refused("the metaclass %s defines __getattr__: reading %r would run its code" % (gowner.__name__, name))
    raise AttributeError("type object %r has no attribute %r" % (cls.__name__, name))
