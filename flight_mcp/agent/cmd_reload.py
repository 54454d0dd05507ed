"""reload: recompile one function from its file and swap its code in place.

The function object stays; only its __code__ (and defaults) change, so every reference (aliases,
bound methods, `from x import f`, decorators' wrappers) runs the new code at its next call. Only
the one `def` is compiled, wrapped in its classes (so zero-argument super(), `__class__` and
private-name mangling work) and, for a closure, in a function that defines its free variables;
its decorators are not re-run. Nothing is changed unless every check passed.
"""
import __future__
import ast
import copy
import dis
import os
import sys
import time
import tokenize
import types

from . import instrument, lookup
from .registry import AgentError, command

# What makes a function a generator/coroutine: the kind must not change under the callers' feet.
_KIND_FLAGS = 0x20 | 0x80 | 0x100 | 0x200
_FUTURE_FLAGS = 0
for _name in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _name).compiler_flag
_OUTER = "__flight_reload__"
_KEEP = "__flight_reload_keep__"

# (file, qualname) -> the file text the def was last reloaded from: the "old" side of the next diff.
_RELOADED = {}
# (file, qualname) -> when a reload last changed the function (the source tool says so).
RELOADED_AT = {}


def _refuse(kind, message):
    raise AgentError(kind, message + " The running code is unchanged.", arg="method")


def _target_function(raw, where):
    """(plain function whose code to replace, how it is reached) or a clear error."""
    how = "function"
    if isinstance(raw, staticmethod):
        raw, how = raw.__func__, "staticmethod"
    elif isinstance(raw, classmethod):
        raw, how = raw.__func__, "classmethod"
    elif isinstance(raw, types.MethodType):
        raw, how = raw.__func__, "bound method"
    elif isinstance(raw, property):
        _refuse("not_reloadable", "%s is a property: reload works on def functions and methods, not on "
                "property getters; restart the target to change it." % where)
    if isinstance(raw, (types.BuiltinFunctionType, types.MethodDescriptorType, types.WrapperDescriptorType)) \
            or (callable(raw) and not hasattr(raw, "__code__") and not hasattr(raw, "__wrapped__")):
        _refuse("not_reloadable", "%s is a builtin (%s implemented in C): there is no Python source to "
                "reload." % (where, type(raw).__name__))
    if not isinstance(raw, types.FunctionType):
        _refuse("not_reloadable", "%s is a %s, not a function: reload works on def functions and methods."
                % (where, type(raw).__name__))
    name = where.rsplit(".", 1)[-1]
    # Behind decorators: follow __wrapped__ (functools.wraps) and closure cells to the def itself.
    seen, queue = set(), [raw]
    while queue:
        f = queue.pop(0)
        if id(f) in seen or len(seen) > 20:
            continue
        seen.add(id(f))
        if f.__code__.co_name == name:
            return f, how if f is raw else "decorated " + how
        inner = getattr(f, "__wrapped__", None)
        if isinstance(inner, types.FunctionType):
            queue.append(inner)
        for cell in f.__closure__ or ():
            try:
                v = cell.cell_contents
            except ValueError:
                continue
            if isinstance(v, types.FunctionType):
                queue.append(v)
    if raw.__code__.co_name == "<lambda>":
        _refuse("not_reloadable", "%s is a lambda: it has no def to find in the file. Turn it into a def "
                "(restart needed once), then reload works." % where)
    inner = raw
    while isinstance(getattr(inner, "__wrapped__", None), types.FunctionType) and len(seen) < 40:
        inner = inner.__wrapped__
        seen.add(id(inner))
    if inner is not raw:
        return inner, "decorated " + how
    if not any(isinstance(getattr(c, "cell_contents", None), types.FunctionType) for c in raw.__closure__ or ()):
        return raw, how  # an alias (g = f, from x import f as g): the def has the function's own name
    _refuse("not_reloadable", "%s runs the code of %s (%s:%d), not a def named %s: a decorator without "
            "functools.wraps hides the original function. Reload the wrapped function by its own name." % (
                where, raw.__code__.co_name, raw.__code__.co_filename, raw.__code__.co_firstlineno, name))


def _statements(body):
    """Statements of a block, descending into if/try/with/for/while but not into defs or classes."""
    for stmt in body:
        yield stmt
        for field in ("body", "orelse", "finalbody", "handlers"):
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                break
            sub = getattr(stmt, field, None)
            if isinstance(sub, list):
                for s in _statements(sub):
                    yield s


def _find_def(body, parts):
    """([enclosing ClassDefs], the def) for a qualname split in parts; the last definition wins."""
    found = None
    for stmt in _statements(body):
        if len(parts) == 1 and isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == parts[0]:
            found = ([], stmt)
        elif len(parts) > 1 and isinstance(stmt, ast.ClassDef) and stmt.name == parts[0]:
            inner = _find_def(stmt.body, parts[1:])
            if inner is not None:
                found = ([stmt] + inner[0], inner[1])
    return found


def _span(node):
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    return first, node.end_lineno


def _code_lines(code):
    lines = [ln for _, ln in dis.findlinestarts(code) if ln]
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            lines.extend(_code_lines(c))
    return lines


def _same_code(a, b):
    """Same bytecode, names and constants (nested code compared the same way); line numbers ignored."""
    if a.co_code != b.co_code or a.co_names != b.co_names or a.co_varnames != b.co_varnames \
            or a.co_freevars != b.co_freevars or len(a.co_consts) != len(b.co_consts):
        return False
    for x, y in zip(a.co_consts, b.co_consts):
        if isinstance(x, types.CodeType) and isinstance(y, types.CodeType):
            if not _same_code(x, y):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


def _module_imports(tree):
    """The module's own import statements, placed under `if 0:` in the wrapper: never run, but the
    compiler then knows which globals are modules (3.11+ compiles `time.sleep()` differently for
    those), so the def compiles to exactly the bytecode a full import made."""
    found = [s for s in _statements(tree.body) if isinstance(s, (ast.Import, ast.ImportFrom))
             and not (isinstance(s, ast.ImportFrom) and s.module == "__future__")]
    if not found:
        return []
    guard = ast.If(test=ast.Constant(value=0, kind=None), body=[copy.copy(s) for s in found], orelse=[])
    return [ast.copy_location(guard, found[0])]


def _module_for(classes, node, old_code, imports=()):
    """A module AST holding just this def (decorators dropped), inside its classes and, for a
    closure, inside a function that defines the same free variables (their values unused)."""
    fn = copy.copy(node)
    # Decorators are not re-run, but kept as identity calls on their own lines: the code then
    # starts on the first decorator line, as the original compile made it.
    fn.decorator_list = [ast.copy_location(ast.Name(id=_KEEP, ctx=ast.Load()), d) for d in node.decorator_list]
    top = fn
    for cls in reversed(classes):
        wrapper = ast.ClassDef(name=cls.name, bases=[], keywords=[], body=[top], decorator_list=[])
        if "type_params" in ast.ClassDef._fields:
            wrapper.type_params = []
        top = ast.copy_location(wrapper, cls)
    free = [v for v in old_code.co_freevars if v != "__class__"]
    if free:
        assigns = [ast.copy_location(ast.Assign(targets=[ast.Name(id=v, ctx=ast.Store())],
                                                value=ast.Constant(value=None, kind=None)), node) for v in free]
        ret = ast.copy_location(ast.Return(value=ast.Name(id=top.name, ctx=ast.Load())), node)
        outer = ast.FunctionDef(name=_OUTER, args=ast.arguments(
            posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]),
            body=assigns + [top, ret], decorator_list=[], returns=None, type_comment=None)
        if "type_params" in ast.FunctionDef._fields:
            outer.type_params = []
        top = ast.copy_location(outer, node)
    module = ast.Module(body=list(imports) + [top], type_ignores=[])
    return ast.fix_missing_locations(module), bool(free)


def _compile_module(module, old_code, filename):
    return compile(module, filename, "exec", flags=old_code.co_flags & _FUTURE_FLAGS, dont_inherit=True)


def _def_code(code, path):
    """The code object of the def inside a compiled wrapper module, following the names in path."""
    for name in path:
        code = next((c for c in code.co_consts if isinstance(c, types.CodeType) and c.co_name == name), None)
        if code is None:
            return None
    return code


def _identity(f):
    return f


def _compile_def(classes, node, old_code, filename, func, imports):
    """A fresh function object for one def. Only its default values and annotations are evaluated
    (in a copy of the module's globals); its decorators are not run."""
    module, closure = _module_for(classes, node, old_code, imports)
    code = _compile_module(module, old_code, filename)
    scratch = dict(func.__globals__)
    scratch[_KEEP] = _identity
    exec(code, scratch)
    obj = scratch[_OUTER]() if closure else scratch[module.body[-1].name]  # outermost class, or the def
    for cls in classes[1:]:
        obj = vars(obj)[cls.name]
    return vars(obj)[node.name] if classes else obj


def _old_source(filename, qualname, old_code, classes_name_parts, current_text):
    """The source the running code was compiled from, when some copy of it can be proven so: the
    last reload's, linecache's (a copy taken before the edit), or the file itself (edited elsewhere)."""
    candidates = []
    if (filename, qualname) in _RELOADED:
        candidates.append(_RELOADED[(filename, qualname)])
    linecache = sys.modules.get("linecache")
    entry = getattr(linecache, "cache", {}).get(filename) if linecache else None
    if entry and len(entry) >= 3 and entry[2]:
        candidates.append("".join(entry[2]))
    candidates.append(current_text)
    for text in candidates:
        try:
            tree = ast.parse(text, filename)
        except (SyntaxError, ValueError):
            continue
        found = _find_def(tree.body, classes_name_parts)
        if found is None:
            continue
        first, last = _span(found[1])
        try:
            module, closure = _module_for(found[0], found[1], old_code, _module_imports(tree))
            path = ([_OUTER] if closure else []) + [c.name for c in found[0]] + [found[1].name]
            code = _def_code(_compile_module(module, old_code, filename), path)
        except (SyntaxError, ValueError):
            continue
        if code is not None and _same_code(code, old_code):
            return "".join(text.splitlines(True)[first - 1:last]), (first, last)
    return None, None


def _same_values(func, new_func):
    try:
        return func.__defaults__ == new_func.__defaults__ and func.__kwdefaults__ == new_func.__kwdefaults__
    except Exception:  # an __eq__ that raises: treat as changed
        return False


def _source_path(filename):
    """co_filename; a relative one (a script run as `python app.py` on 3.8) is tried against the
    script's directory too, in case the target changed its working directory since."""
    if os.path.isabs(filename) or os.path.isfile(filename):
        return filename
    base = sys.path[0] if sys.path and os.path.isabs(sys.path[0] or "") else None
    if base and os.path.isfile(os.path.join(base, os.path.basename(filename))):
        return os.path.join(base, os.path.basename(filename))
    return filename


@command("reload")
def reload(args, ctx):
    if not args["may_change_target"]:
        raise AgentError("read_only", "reload replaces code in the target, and this server is read-only.")
    cls = args["cls"]
    mod = lookup.module(args["module"])
    owner = lookup.klass(mod, cls) if cls else mod
    where = "%s.%s" % (mod.__name__ + ("." + cls if cls else ""), args["method"])
    raw = lookup.attribute(owner, args["method"], "method")
    func, how = _target_function(raw, where)
    if cls and how.endswith("function"):
        how = how[:-len("function")] + "method"
    old_code = instrument.current_code(func)
    qualname = func.__qualname__
    if "<locals>" in qualname:
        _refuse("not_reloadable", "%s is defined inside another function (%s): reload the enclosing function; "
                "functions it creates afterwards get the new code." % (where, qualname))
    filename = _source_path(old_code.co_filename)
    if not os.path.isfile(filename):
        _refuse("file_missing", "the source file of %s, %s, no longer exists (or was never a file). Restore "
                "it, then reload." % (where, filename))
    try:
        with tokenize.open(filename) as f:
            text = f.read()
    except (OSError, SyntaxError, UnicodeDecodeError) as e:
        _refuse("file_unreadable", "cannot read %s: %s: %s." % (filename, type(e).__name__, e))
    try:
        tree = ast.parse(text, filename)
    except SyntaxError as e:
        line = (e.text or "").rstrip("\n")
        _refuse("syntax_error", "%s has a syntax error at line %s: %s%s. Fix the file and reload again." % (
            filename, e.lineno, e.msg, ("\n  %s" % line) if line else ""))
    parts = qualname.split(".")
    found = _find_def(tree.body, parts)
    if found is None:
        _refuse("function_missing", "%s no longer defines %s (looked for `def %s` inside %s). Was it renamed "
                "or moved? Reload works on a def that is still in its file." % (
                    filename, qualname, parts[-1], " > ".join("class " + p for p in parts[:-1]) or "the module"))
    classes, node = found
    new_span = _span(node)
    lines = text.splitlines(True)
    new_source = "".join(lines[new_span[0] - 1:new_span[1]])
    try:
        new_func = _compile_def(classes, node, old_code, filename, func, _module_imports(tree))
    except SyntaxError as e:
        _refuse("syntax_error", "compiling %s failed at line %s: %s. Fix the file and reload again." % (
            qualname, e.lineno, e.msg))
    except Exception as e:
        _refuse("compile_failed", "defining the new %s failed (its default values or annotations are evaluated "
                "once): %s: %s." % (qualname, type(e).__name__, e))
    new_code = new_func.__code__
    if new_code.co_freevars != old_code.co_freevars:
        added = sorted(set(new_code.co_freevars) - set(old_code.co_freevars))
        gone = sorted(set(old_code.co_freevars) - set(new_code.co_freevars))
        _refuse("closure_changed", "the new %s uses a different set of closure variables (%s%s): the existing "
                "function object cannot take code that needs other cells%s. Restart the target for this change."
                % (qualname, ("added: %s" % ", ".join(added)) if added else "",
                   ("; removed: %s" % ", ".join(gone)) if gone else "",
                   " (__class__ appears when a method starts or stops using super())"
                   if "__class__" in added + gone else ""))
    if (new_code.co_flags & _KIND_FLAGS) != (old_code.co_flags & _KIND_FLAGS):
        _refuse("kind_changed", "the new %s is a %s and the running one a %s: callers would break. Restart the "
                "target for this change." % (qualname, _kind(new_code), _kind(old_code)))
    if hasattr(new_code, "co_qualname"):  # the wrappers must not show in tracebacks (3.11+)
        new_code = new_code.replace(co_qualname=old_code.co_qualname)
        new_func.__code__ = new_code
    old_lines = _code_lines(old_code)
    old_span = [old_code.co_firstlineno, max(old_lines) if old_lines else old_code.co_firstlineno]
    old_source, proven_span = _old_source(filename, qualname, old_code, parts, text)
    if proven_span:
        old_span = list(proven_span)
    code_changed = not (_same_code(old_code, new_code) and old_code.co_firstlineno == new_code.co_firstlineno)
    defaults_changed = not _same_values(func, new_func)
    instrumented = 0
    if code_changed:
        instrumented = instrument.replace_code(func, new_code)
    if defaults_changed:
        func.__defaults__ = new_func.__defaults__
        func.__kwdefaults__ = new_func.__kwdefaults__
    _RELOADED[(filename, qualname)] = text
    if code_changed or defaults_changed:
        RELOADED_AT[(filename, qualname)] = time.time()
    linecache = sys.modules.get("linecache")
    if linecache is not None:
        linecache.checkcache(filename)  # tracebacks show the new lines
    return {
        "module": mod.__name__, "qualname": qualname, "kind": how, "file": filename,
        "old_span": old_span, "new_span": list(new_span), "changed": code_changed or defaults_changed,
        "code_changed": code_changed, "defaults_changed": defaults_changed,
        "old_source_known": old_source is not None, "instrumentation_kept": instrumented,
        "new_source": new_source, "old_source": old_source,
    }


def _kind(code):
    f = code.co_flags
    if f & 0x200:
        return "async generator"
    if f & 0x80:
        return "coroutine function"
    if f & 0x20:
        return "generator function"
    return "plain function"
