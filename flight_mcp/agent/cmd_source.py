"""source: the text of the code the target is running, with its line numbers.

The running code object says where it came from (co_filename, co_firstlineno, its lines). Its text
is read from that file (tokenize.open: the file's own encoding; never a loader of the target) and
the def is found in it by its name and the classes/functions around it. Whether the file still
holds what runs is decided by compiling: the def's block (found with tokenize) is compiled inside
headers that give it the same scopes and the module's imports (compile() runs nothing: no
decorator, default or module code), and the code object it gives is compared with the running one
(bytecode, names, constants, nested code; then its line numbers). So an edit that changed nothing
the interpreter runs (a comment elsewhere) is "same", one that only shifted lines is "moved", any
other is "differs". The whole file is never compiled at once: one compile() holds the GIL, and a
large file would stop the target's threads for as long. The text shown is the one proven to be
the running code: the text the reload tool compiled it from (cmd_reload keeps it), else the file,
else linecache's copy (taken before an edit, e.g. by a traceback); when none is, the file's current
def is shown and said to differ.

A class is compared through its methods' code (a class keeps no code of its own); a module through
its functions and its classes' methods. Built-ins, C extensions and generated code (`<string>`)
have no text: the answer says which it is. Nothing of the target runs: objects are read through
objstate (the C descriptors of built-in types), never getattr.
"""
import __future__
import ast
import os
import re
import sys
import tokenize
import types

from . import instrument, lookup, objstate
from .codes import arg
from .registry import AgentError, command

MAX_LINES = 10000           # lines kept in one answer, whatever the limit asks
MAX_LINE_CHARS = 1000       # characters of one line
MAX_FILE_BYTES = 8 << 20    # files larger than this are not read
MAX_COMPARED = 300          # functions compared for a class or a module
MAX_LISTED = 20             # differing functions named in the answer
MAX_CODES = 200000          # code objects walked in one compiled file

_func_dict = types.FunctionType.__dict__["__dict__"].__get__
_func_code = types.FunctionType.__dict__["__code__"].__get__
_func_qualname = types.FunctionType.__dict__["__qualname__"].__get__
_sm_func = staticmethod.__dict__["__func__"].__get__
_cm_func = classmethod.__dict__["__func__"].__get__
_prop_fget = property.__dict__["fget"].__get__
_method_func = types.MethodType.__dict__["__func__"].__get__
_builtin_self = types.BuiltinFunctionType.__dict__["__self__"].__get__
_BUILTIN_KINDS = (types.BuiltinFunctionType, types.MethodDescriptorType, types.WrapperDescriptorType,
                  types.MethodWrapperType, types.ClassMethodDescriptorType, types.GetSetDescriptorType,
                  types.MemberDescriptorType)
_CODE = types.CodeType
_FUTURE_FLAGS = 0
for _name in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _name).compiler_flag


# ---- what the arguments name -------------------------------------------------------------------

def _unwrap(raw):
    """(plain function or None, how it is reached, the object when it is not a function)."""
    t = type(raw)
    how = "function"
    if issubclass(t, staticmethod):
        raw, how = _sm_func(raw), "staticmethod"
    elif issubclass(t, classmethod):
        raw, how = _cm_func(raw), "classmethod"
    elif issubclass(t, property):
        raw, how = _prop_fget(raw), "property"
    elif t is types.MethodType:
        raw, how = _method_func(raw), "bound method"
    if type(raw) is not types.FunctionType:
        return None, how, raw
    seen = 0
    while seen < 40:  # functools.wraps decorators: the def behind them (read from the function's dict)
        inner = objstate.dict_get(_func_dict(raw), "__wrapped__")
        if type(inner) is not types.FunctionType:
            break
        raw, seen = inner, seen + 1
        if not how.startswith("decorated"):
            how = "decorated " + how
    return raw, how, None


def _module_file(modname):
    mod = sys.modules.get(modname) if type(modname) is str else None
    d = objstate.Reader().instance_dict(mod) if mod is not None else None
    f = objstate.dict_get(d, "__file__") if d is not None else None
    return f if type(f) is str else None


def _native_kind(modname):
    """("builtin" | "c_extension", file or None) for C code defined in module modname."""
    f = _module_file(modname)
    if f and not f.endswith((".py", ".pyc", ".pyw")):
        return "c_extension", f
    return "builtin", f


def _no_source(base, why, kind, file=None):
    return dict(base, kind=kind, no_source=why, file=file)


def _builtin_answer(base, obj, how):
    """No source: C code. Which module it belongs to says builtin (in the interpreter) or c_extension."""
    t = type(obj)
    kind = "builtin " + ("method" if how != "function" else "function")
    owner = None
    if t is types.BuiltinFunctionType:
        owner = _builtin_self(obj)
    else:
        objclass = objstate.own(t, "__objclass__", None)  # the descriptors' member: the C class they belong to
        if objclass is not None and hasattr(type(objclass), "__get__"):
            try:
                owner = objclass.__get__(obj, t)
            except Exception:
                owner = None
    modname = None
    if type(owner) is types.ModuleType:
        d = objstate.Reader().instance_dict(owner)
        modname = objstate.dict_get(d, "__name__") if d is not None else None
    elif owner is not None:
        k = owner if issubclass(type(owner), type) else type(owner)
        modname = objstate.own(k, "__module__") if objstate.is_heap(k) else type.__dict__["__module__"].__get__(k)
    why, file = _native_kind(modname)
    return _no_source(base, why, kind, file)


# ---- reading and comparing ----------------------------------------------------------------------

def _source_path(filename):
    """co_filename; a relative one (a script run as `python app.py`) is also tried against the
    script's directory, in case the target changed its working directory since."""
    if os.path.isabs(filename) or os.path.isfile(filename):
        return filename
    base = sys.path[0] if sys.path and os.path.isabs(sys.path[0] or "") else None
    if base and os.path.isfile(os.path.join(base, os.path.basename(filename))):
        return os.path.join(base, os.path.basename(filename))
    return filename


def _read(path):
    """(text, mtime) of a source file, or (None, why)."""
    try:
        st = os.stat(path)
    except OSError:
        return None, "file_missing"
    if st.st_size > MAX_FILE_BYTES:
        return None, "file_too_large"
    try:
        with tokenize.open(path) as f:
            return f.read(), st.st_mtime
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None, "unreadable"


def _linecache_text(filename):
    lc = sys.modules.get("linecache")
    cache = lc.__dict__.get("cache") if lc is not None else None
    entry = dict.get(cache, filename) if type(cache) is dict else None
    if type(entry) is tuple and len(entry) >= 3 and type(entry[2]) is list:
        lines = [x for x in entry[2] if type(x) is str]
        return "".join(lines) or None
    return None


def _reloaded(path, qualname):
    """(the text the reload tool compiled qualname from, when) when a reload changed it (cmd_reload
    keeps both), else (None, None)."""
    mod = sys.modules.get(__name__.rsplit(".", 1)[0] + ".cmd_reload")
    texts = getattr(mod, "_RELOADED", None) if mod is not None else None
    when = getattr(mod, "RELOADED_AT", None) if mod is not None else None
    if type(texts) is not dict or type(when) is not dict:
        return None, None
    for key in ((path, qualname), (_source_path(path), qualname)):
        if key in when and key in texts:
            return texts[key], when[key]
    return None, None


def _reloaded_text(path, qualname):
    return _reloaded(path, qualname)[0]


def _codes(code):
    """{(co_name, co_firstlineno): code} of every code object in a compiled module."""
    found, todo = {}, [code]
    while todo and len(found) < MAX_CODES:
        c = todo.pop()
        found.setdefault((c.co_name, c.co_firstlineno), c)
        todo.extend(x for x in c.co_consts if type(x) is _CODE)
    return found


def _line_starts(code):
    import dis
    lines = [ln for _, ln in dis.findlinestarts(code) if ln]
    for c in code.co_consts:
        if type(c) is _CODE:
            lines.extend(_line_starts(c))
    return lines


def _same_code(a, b):
    """Same bytecode, names and constants (nested code compared the same way); lines ignored."""
    if a.co_code != b.co_code or a.co_names != b.co_names or a.co_varnames != b.co_varnames \
            or a.co_freevars != b.co_freevars or a.co_cellvars != b.co_cellvars \
            or len(a.co_consts) != len(b.co_consts):
        return False
    for x, y in zip(a.co_consts, b.co_consts):
        if type(x) is _CODE and type(y) is _CODE:
            if not _same_code(x, y):
                return False
        elif type(x) is not type(y) or not _same_const(x, y):
            return False
    return True


def _same_const(x, y):
    if type(x) in (tuple, frozenset):
        return len(x) == len(y) and all(type(i) is type(j) and _same_const(i, j) for i, j in zip(x, y)) \
            if type(x) is tuple else x == y
    try:
        return x == y or (x != x and y != y)  # constants are built-in values: comparing runs no target code
    except Exception:
        return False


_HEADER = re.compile(r"^([ \t]*)(?:async[ \t]+)?(def|class)[ \t]+([A-Za-z_][A-Za-z_0-9]*)")
_COMPOUND = re.compile(r"^([ \t]*)(if|elif|else|try|except|finally|with|for|while|async|match|case)\b")
_IMPORT = re.compile(r"^[ \t]*(import|from)[ \t]")
MAX_CANDIDATES = 20     # defs of the same name compiled to find the running one


class _Span(object):
    def __init__(self, first, last):
        self.first, self.last = first, last


def _indent(line):
    return len(line) - len(line.lstrip(" \t"))


class _Text(object):
    """One candidate text of a file. Nothing compiles the whole file: one compile() of a large
    file holds the GIL for as long as it takes (half a second for 3,000 lines on a loaded machine),
    and the target's threads would stand still meanwhile. Instead, the lines are scanned (Python
    code: the GIL changes hands as usual), a def's block is found with tokenize, and only that
    block is compiled, inside headers that give it the same scopes (its classes, a function that
    defines its free variables) and under the module's import statements (3.11+ compiles
    `module.func()` differently for names bound by an import)."""

    def __init__(self, text, path):
        self.path = path
        self.lines = text.splitlines()
        self._raw = text.splitlines(True)
        self._headers = None
        self._chains = {}
        self._imports = None

    def headers(self):
        """{name: [(line number, kind, indent)]} of every def and class line; and, in one pass, the
        blocks around each (a stack of the header lines by indentation)."""
        if self._headers is None:
            found, chains, stack = {}, {}, []
            for i, line in enumerate(self.lines):
                m = _HEADER.match(line)
                if m is not None:
                    entry = (m.group(2), m.group(3), len(m.group(1)))
                else:
                    c = _COMPOUND.match(line)
                    if c is None:
                        continue
                    entry = ("if", None, len(c.group(1)))
                while stack and stack[-1][2] >= entry[2]:
                    stack.pop()
                if m is not None:
                    found.setdefault(entry[1], []).append((i + 1, entry[0], entry[2]))
                    chains[i + 1] = list(stack)
                stack.append(entry)
            self._headers, self._chains = found, chains
        return self._headers

    def imports(self):
        """The module's import statements on one line under `if 0:` (never run), or ""."""
        if self._imports is None:
            stmts = []
            for i, line in enumerate(self.lines):
                if _IMPORT.match(line) is None or len(stmts) > 500:
                    continue
                text = line.strip()
                j = i
                while (text.count("(") > text.count(")") or text.endswith("\\")) and j + 1 < len(self.lines) \
                        and j < i + 50:
                    j += 1
                    text = text.rstrip("\\") + " " + self.lines[j].strip()
                try:
                    tree = ast.parse(text.split(";")[0].split("#")[0])
                except (SyntaxError, ValueError):
                    continue
                for node in tree.body:
                    if isinstance(node, ast.Import):
                        stmts.append("import " + ", ".join(_alias(a) for a in node.names))
                    elif isinstance(node, ast.ImportFrom) and node.module != "__future__" \
                            and not any(a.name == "*" for a in node.names):
                        stmts.append("from %s%s import %s" % ("." * node.level, node.module or "",
                                                              ", ".join(_alias(a) for a in node.names)))
            self._imports = ("if 0: " + "; ".join(stmts)) if stmts else ""
        return self._imports

    def enclosing(self, line_no):
        """[(kind, name, indent)] of the blocks around line line_no, outermost first: class, def,
        or another compound statement ('if')."""
        self.headers()
        if line_no in self._chains:
            return self._chains[line_no]
        out = []
        want = _indent(self.lines[line_no - 1])
        i = line_no - 2
        while i >= 0 and want > 0:
            line = self.lines[i]
            if line.strip() and not line.lstrip().startswith("#") and _indent(line) < want:
                m = _HEADER.match(line)
                if m is not None:
                    out.append((m.group(2), m.group(3), len(m.group(1))))
                    want = len(m.group(1))
                elif _COMPOUND.match(line) is not None:
                    out.append(("if", None, _indent(line)))
                    want = _indent(line)
            i -= 1
        out.reverse()
        return out

    def block(self, line_no):
        """_Span of the def/class on line line_no: its decorators above it, its body (tokenize)."""
        indent = _indent(self.lines[line_no - 1])
        first = line_no
        i = line_no - 2
        while i >= 0 and line_no - i < 100:
            line = self.lines[i]
            stripped = line.strip()
            if stripped.startswith("@") and _indent(line) == indent:
                first = i + 1
            elif not stripped or _indent(line) <= indent and not stripped[0] in ")]}":
                break
            i -= 1
        return _Span(first, self._end(line_no))

    def _end(self, line_no):
        depth, base, opened, last = 0, None, False, line_no
        it = iter(self._raw[line_no - 1:])
        try:
            for tok in tokenize.generate_tokens(lambda: next(it, "")):
                kind = tok[0]
                if kind == tokenize.INDENT:
                    depth += 1
                    if base is not None:
                        opened = True
                elif kind == tokenize.DEDENT:
                    depth -= 1
                    if opened and base is not None and depth <= base:
                        return last
                elif kind == tokenize.NEWLINE:
                    if base is None:
                        base = depth
                    last = line_no + tok[2][0] - 1
                    if not opened and base is not None and not _ends_with_colon(tok[4]):
                        return last  # `def f(): return 1` on one line
                elif kind == tokenize.ENDMARKER:
                    break
        except (tokenize.TokenError, IndentationError, SyntaxError):
            pass
        return last

    def compile_def(self, line_no, code):
        """The code object the def on line_no compiles to, in its scopes; None when it does not."""
        span = self.block(line_no)
        head = []
        imports = self.imports()
        if imports:
            head.append(imports)
        chain = self.enclosing(line_no)
        inner_def = max((i for i, c in enumerate(chain) if c[0] == "def"), default=-1)
        free = [v for v in code.co_freevars if v != "__class__"]
        for i, (kind, name, indent) in enumerate(chain):
            if kind == "class":
                head.append(" " * indent + "class %s:" % name)
            elif kind == "def":
                head.append(" " * indent + "def %s(%s):" % (name, ", ".join(free) if i == inner_def else ""))
            else:
                head.append(" " * indent + "if 1:")
        if free and inner_def < 0:
            return None
        text = "\n".join(head) + ("\n" if head else "") + "".join(self._raw[span.first - 1:span.last])
        try:
            module = compile(text, self.path, "exec", flags=code.co_flags & _FUTURE_FLAGS, dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        return _codes(module).get((code.co_name, len(head) + 1)), span

    def locate(self, qualname, code):
        """(state, _Span): where the def of qualname is, and how its code compares with `code`:
        same (same code at the same lines), moved (same code, other lines), differs, missing."""
        parts = [p for p in qualname.split(".") if p != "<locals>"]
        name = code.co_name
        found = []
        for line_no, kind, indent in self.headers().get(name, ()):
            if kind != "def":
                continue
            chain = [c[1] for c in self.enclosing(line_no) if c[0] != "if"]
            if chain == parts[:-1]:
                found.append(line_no)
        if not found:
            return "missing", None
        want = code.co_firstlineno
        found.sort(key=lambda n: abs(n - want))
        moved = None
        rel = [x - code.co_firstlineno for x in _line_starts(code)]
        for line_no in found[:MAX_CANDIDATES]:
            got = self.compile_def(line_no, code)
            if got is None or got[0] is None or not _same_code(got[0], code):
                continue
            compiled, span = got
            shift = span.first - code.co_firstlineno
            same_lines = [x - compiled.co_firstlineno for x in _line_starts(compiled)] == rel
            if shift == 0 and same_lines:
                return "same", span
            moved = moved or span
        if moved is not None:
            return "moved", moved
        return "differs", self.block(found[0])

    def classes(self, qualname):
        parts = qualname.split(".")
        out = []
        for line_no, kind, indent in self.headers().get(parts[-1], ()):
            if kind == "class" and [c[1] for c in self.enclosing(line_no) if c[0] != "if"] == \
                    [p for p in parts[:-1] if p != "<locals>"]:
                out.append(self.block(line_no))
        return out


def _ends_with_colon(line):
    code = line.split("#")[0].rstrip()
    return code.endswith(":")


def _alias(a):
    return a.name + (" as " + a.asname if a.asname else "")


class _Candidates(object):
    """The texts that may hold a file's running code: the last reload's, the file's, linecache's."""

    def __init__(self, path, reloaded_text=None):
        self.path = path
        self.disk, got = _read(path)
        self.mtime = got if self.disk is not None else None
        self.disk_problem = None if self.disk is not None else got
        self._parsed = {}
        self.reloaded_text = reloaded_text

    def texts(self, reloaded_text=None):
        out = []
        for origin, text in (("reload", reloaded_text), ("file", self.disk),
                             ("linecache", _linecache_text(self.path))):
            if text is not None:
                out.append((origin, text))
        return out

    def parsed(self, text):
        got = self._parsed.get(text)   # equal texts (the reload's and the file's) are compiled once
        if got is None:
            got = self._parsed[text] = _Text(text, self.path)
        return got


def _lines_of(text_obj, first, last, limit):
    lines = text_obj.lines[first - 1:last]
    keep = min(limit, MAX_LINES)
    shown = [ln if len(ln) <= MAX_LINE_CHARS else ln[:MAX_LINE_CHARS] + "..." for ln in lines[:keep]]
    return shown, len(lines), max(0, len(lines) - keep)


# ---- the answers --------------------------------------------------------------------------------

def _code_answer(base, code, qualname, limit, kind):
    """The source of one running code object (function, method, nested function)."""
    path = _source_path(code.co_filename)
    base = dict(base, kind=kind, qualname=qualname, file=path, running_line=code.co_firstlineno)
    if code.co_name == "<lambda>":
        base["kind"] = "lambda"
    reloaded, base["reloaded_at"] = _reloaded(code.co_filename, qualname.split(".<locals>.")[0])
    base["reloaded"] = reloaded is not None
    files = _Candidates(path)
    base["file_mtime"] = files.mtime
    if code.co_filename.startswith("<") and code.co_filename.endswith(">") and _linecache_text(path) is None:
        return _no_source(base, "generated", base["kind"], code.co_filename)
    disk_state, disk_node, shown = "unknown", None, None
    for origin, text in files.texts(reloaded):
        parsed = files.parsed(text)
        if base["kind"] == "lambda":
            state, node = "unknown", _Span(code.co_firstlineno, code.co_firstlineno)
        else:
            state, node = parsed.locate(qualname, code)
        if origin == "file":
            disk_state, disk_node = state, node
        if shown is None and state == "same":
            shown = (origin, parsed, node)
    if files.disk is None:
        disk_state = files.disk_problem
    base["disk"] = disk_state
    if disk_node is not None:
        base["disk_line"] = disk_node.first
    if shown is None and disk_node is not None:  # not proven: the file's def now, said to differ
        shown = ("file", files.parsed(files.disk), disk_node)
    if shown is None:
        why = files.disk_problem if files.disk is None else "not_in_file"
        return _no_source(base, why if why != "unreadable" else "unreadable", base["kind"], path)
    origin, parsed, node = shown
    first, last = node.first, node.last
    base["origin"] = origin
    base["first_line"] = first
    base["lines"], base["total_lines"], base["elided"] = _lines_of(parsed, first, last, limit)
    return base


def _functions_in(owner, is_class, path):
    """[(qualname, code)] of the Python functions a class or module defines in file path (a
    module: its functions and its classes' methods), at most MAX_COMPARED."""
    found = []
    todo = [(owner, is_class)]
    seen = set()
    while todo and len(found) < MAX_COMPARED:
        obj, klass = todo.pop(0)
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if klass:
            items = objstate.namespace_items(obj)
        else:
            d = objstate.Reader().instance_dict(obj)
            items = [(k, v) for k, v in objstate.dict_items(d) if type(k) is str] if d is not None else []
        for name, value in items:
            if issubclass(type(value), type):
                if not klass and objstate.is_heap(value) and len(todo) < MAX_COMPARED:
                    todo.append((value, True))
                continue
            func, _, _ = _unwrap(value)
            if func is None:
                continue
            code = instrument.current_code(func)
            if _source_path(code.co_filename) != path:
                continue
            found.append((_func_qualname(func), code))
            if len(found) >= MAX_COMPARED:
                break
    return found


def _compare_all(files, functions, reloaded_of):
    """(disk state, [qualnames that differ], [qualnames reloaded]) for the functions of a class or
    module against the file on disk."""
    if files.disk is None:
        return files.disk_problem, [], []
    parsed = files.parsed(files.disk)
    states, differing, reloaded = set(), [], []
    for qualname, code in functions:
        state, _ = parsed.locate(qualname, code)
        states.add(state)
        if state in ("differs", "missing") and len(differing) < MAX_LISTED:
            differing.append(qualname)
        if reloaded_of(qualname) is not None and len(reloaded) < MAX_LISTED:
            reloaded.append(qualname)
    if not functions:
        return "unknown", differing, reloaded
    for state in ("differs", "missing", "moved"):
        if state in states:
            return ("differs" if state == "missing" else state), differing, reloaded
    return "same", differing, reloaded


def _class_answer(base, klass, limit):
    qualname = objstate._qualname_of(klass)
    qualname = qualname if type(qualname) is str else objstate.short_name(klass)
    base = dict(base, kind="class", qualname=qualname)
    if not objstate.is_heap(klass):
        why, file = _native_kind(type.__dict__["__module__"].__get__(klass))
        return _no_source(base, why, "builtin class" if why == "builtin" else "class", file)
    modname = objstate.own(klass, "__module__")
    path = _module_file(modname)
    if path is None or not path.endswith(".py"):  # a class made elsewhere: where its methods' code is
        codes = _all_codes(klass)
        path = codes[0].co_filename if codes else path
    if path is None:
        return _no_source(base, "generated", "class", None)
    path = _source_path(path)
    base["file"] = path
    files = _Candidates(path)
    base["file_mtime"] = files.mtime
    if path.startswith("<"):
        return _no_source(base, "generated", "class", path)
    functions = _functions_in(klass, True, path)
    base["disk"], base["differing"], reloaded = _compare_all(
        files, functions, lambda q: _reloaded_text(path, q))
    base["reloaded_functions"] = reloaded
    base["reloaded"] = bool(reloaded)
    base["compared"] = len(functions)
    if files.disk is None:
        return _no_source(base, files.disk_problem, "class", path)
    parsed = files.parsed(files.disk)
    nodes = parsed.classes(qualname)
    if not nodes:
        return _no_source(base, "not_in_file", "class", path)
    lines = [c.co_firstlineno for _, c in functions]
    node = next((n for n in reversed(nodes) if all(n.first <= x <= n.last for x in lines)), nodes[-1])
    first, last = node.first, node.last
    if base["disk"] in ("same", "unknown"):
        base["running_line"] = first
    base["origin"] = "file"
    base["first_line"] = first
    base["disk_line"] = first
    base["lines"], base["total_lines"], base["elided"] = _lines_of(parsed, first, last, limit)
    return base


def _all_codes(klass):
    out = []
    for _, value in objstate.namespace_items(klass):
        func, _, _ = _unwrap(value)
        if func is not None:
            out.append(instrument.current_code(func))
    return out


def _module_answer(base, mod, modname, limit):
    base = dict(base, kind="module", qualname=modname)
    path = _module_file(modname) if sys.modules.get(modname) is mod else None
    if path is None:
        d = objstate.Reader().instance_dict(mod)
        path = objstate.dict_get(d, "__file__") if d is not None else None
        path = path if type(path) is str else None
    if path is None:
        why = "builtin" if modname in sys.builtin_module_names else "generated"
        return _no_source(base, why, "module", None)
    if path.endswith(".pyc"):
        src = path[:-1]
        path = src if os.path.isfile(src) else path
    if not path.endswith((".py", ".pyw")):
        return _no_source(base, "c_extension" if not path.endswith(".pyc") else "no_source_file", "module", path)
    path = _source_path(path)
    base["file"] = path
    files = _Candidates(path)
    base["file_mtime"] = files.mtime
    if files.disk is None:
        return _no_source(base, files.disk_problem, "module", path)
    functions = _functions_in(mod, False, path)
    base["disk"], base["differing"], reloaded = _compare_all(files, functions, lambda q: _reloaded_text(path, q))
    base["reloaded_functions"] = reloaded
    base["reloaded"] = bool(reloaded)
    base["compared"] = len(functions)
    parsed = files.parsed(files.disk)
    base["origin"] = "file"
    base["first_line"] = 1
    base["running_line"] = 1
    base["lines"], base["total_lines"], base["elided"] = _lines_of(parsed, 1, len(parsed.lines), limit)
    return base


@command("source")
def source(args, ctx):
    modname, cls, method, nested = args["module"], args["cls"], args["method"], args["nested_method"]
    limit = args["limit"]
    mod = lookup.module(modname)
    owner = lookup.klass(mod, cls, modname) if cls else mod
    target = modname + ("." + cls if cls else "") + ("." + method if method else "") + ("." + nested if nested else "")
    base = {"target": target, "lines": [], "total_lines": 0, "elided": 0, "reloaded": False}
    if method is None:
        if cls:
            return _class_answer(base, owner, limit)
        return _module_answer(base, mod, modname, limit)
    raw = lookup.attribute(owner, method, "method", modname if owner is mod else None)
    if issubclass(type(raw), type):  # `source module Class`: the class itself
        if nested:
            raise AgentError("not_a_function", "%s.%s is a class: %s names a function defined inside a function."
                             % (modname, method, arg("nested_method")), arg="nested_method")
        return _class_answer(base, raw, limit)
    if type(raw) is types.ModuleType:
        d = objstate.Reader().instance_dict(raw)
        name = objstate.dict_get(d, "__name__") if d is not None else None
        return _module_answer(base, raw, name if type(name) is str else method, limit)
    func, how, other = _unwrap(raw)
    if cls and how.endswith("function"):
        how = how[:-len("function")] + "method"
    if func is None:
        if issubclass(type(other), _BUILTIN_KINDS):
            return _builtin_answer(base, other, how)
        raise AgentError("not_a_function", "%s is a %s, not a function, method or class: it has no source of its "
                         "own. getglobal shows its value; its class's source is `source` of the class." % (
                             target, objstate.type_name(type(other))), arg="method")
    code = instrument.current_code(func)
    qualname = _func_qualname(func)
    if not nested:
        return _code_answer(base, code, qualname if type(qualname) is str else code.co_name, limit, how)
    inner = [instrument.TRAMPOLINE_CODES.get(c, c) for c in code.co_consts
             if type(c) is _CODE and c.co_name == nested]
    if not inner:
        names = sorted(set(c.co_name for c in code.co_consts if type(c) is _CODE and not c.co_name.startswith("<")))
        raise AgentError("nested_method_not_found", "%s defines no nested function %r. %s" % (
            target.rsplit(".", 1)[0], nested, ("Nested functions it defines: %s." % ", ".join(names)) if names else
            "It defines no nested functions (only functions defined directly inside it can be named as %s)."
            % arg("nested_method")), arg="nested_method")
    return _code_answer(base, inner[0], "%s.<locals>.%s" % (qualname, nested), limit, "nested function")
