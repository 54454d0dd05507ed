"""Read-only checker for user expressions: what "read-only mode" means for -f, --expr, -e.

check(source, flag) parses the expression, refuses every construct that could change the target,
and returns the AST rewritten with run-time guards (see RUNTIME). A refusal is
AgentError("read_only") naming the construct, where it is, and how to allow it (--allow-mutating).

What passes: names, attribute reads, subscripts, slices, literals (f-strings included: a format
spec runs the value's __format__, a protocol method like __str__; the spec is itself checked),
comparisons, boolean/arithmetic/bitwise operators, conditional expressions, comprehensions and
generator expressions, calls of PURE_CALLS, and calls of SAFE_METHODS on builtin values of
exactly those types (e.g. `target.get('db')` on a dict, `name.startswith('x')` on a str).

What is refused, and why:
- assignment expressions (walrus), lambda, await/yield: they bind names or create code;
- calls of anything but PURE_CALLS by name: exec/eval/compile/open/__import__/getattr/setattr/
  delattr/globals/locals/vars/breakpoint/input/print/iter/next/..., calling a value
  (`instances[0]()`, `type(x)(...)`), and method calls on anything but builtin values
  (`target.clear()`, `instances[0].stats()`): a method of a target class can do anything;
- dunder attributes and names (`().__class__.__bases__`, `f.__globals__`, `__builtins__`) except
  the descriptive SAFE_DUNDERS (__class__, __name__, __dict__, ...); the classic sandbox escape
  chain needs __bases__/__subclasses__/__globals__, all refused;
- getattr/hasattr with a computed name would bypass the dunder rule: getattr is refused,
  hasattr is allowed only with a constant, non-dunder name (it runs properties like a read does);
- `key=` of sorted/min/max must itself be a PURE_CALLS name (key=target.clear would call it);
- `type()` with 3 arguments (creating a class runs __init_subclass__ of its bases);
- `**` and `<<` with a non-constant or large right operand (10**10**10 would hold the GIL for
  ever: that changes the target too).
At run time (the guards): iterating an ITERATOR or GENERATOR of the target (list(gen), `x in
file`, a comprehension over it) is refused, because it consumes it; a method call is allowed only
when the receiver's exact type is a builtin listed in SAFE_METHODS; `d[k]` on a defaultdict
raises KeyError for a missing k instead of inserting it.

What read-only cannot promise: reading an attribute, subscripting, comparing, str()/repr()/len()
run the object's own protocol methods (properties, __getattr__, __getitem__, __eq__, __repr__,
...), exactly as any debugger or repr would. A class whose reads have side effects keeps them;
a builtin that the target itself replaced (builtins.len = ...) runs as the target made it.
Memory and CPU are not bounded beyond the `**`/`<<` rule ('x' * 10**8 allocates 100 MB).
"""
import ast
import builtins
import sys

from .registry import AgentError

# Builtins whose call cannot change anything by itself (they run protocol methods only).
PURE_CALLS = frozenset([
    "len", "isinstance", "issubclass", "type", "str", "repr", "ascii", "sorted", "reversed", "min",
    "max", "sum", "any", "all", "abs", "round", "bool", "int", "float", "complex", "list", "tuple",
    "dict", "set", "frozenset", "enumerate", "zip", "range", "id", "hash", "divmod", "chr", "ord",
    "hex", "oct", "bin", "format", "callable", "hasattr", "slice",
])
# Of those, the ones that iterate a positional argument (the iterator guard wraps it).
ITERATING_CALLS = frozenset([
    "sorted", "min", "max", "sum", "any", "all", "list", "tuple", "dict", "set", "frozenset",
    "enumerate", "zip",
])
SAFE_DUNDERS = frozenset(["__class__", "__name__", "__qualname__", "__module__", "__doc__",
                          "__dict__", "__file__", "__slots__"])
MAX_EXPONENT = 128  # `x ** 128` and `1 << 128` stay cheap; anything larger is refused

# str.format/format_map are left out: "{0.__globals__}".format(f) reads dunders past the checker.
_STR_METHODS = frozenset(n for n in dir(str) if not n.startswith("_") and not n.startswith("format"))
_BYTES_METHODS = frozenset(n for n in dir(bytes) if not n.startswith("_"))
_NUMBER_METHODS = frozenset(["as_integer_ratio", "bit_length", "conjugate", "hex", "is_integer",
                             "to_bytes", "real", "imag", "numerator", "denominator", "bit_count"])
_SET_METHODS = frozenset(["copy", "difference", "intersection", "isdisjoint", "issubset",
                          "issuperset", "symmetric_difference", "union"])
# Exact types (never subclasses: a subclass may override the method) -> methods that only read.
SAFE_METHODS = {
    str: _STR_METHODS, bytes: _BYTES_METHODS,
    int: _NUMBER_METHODS, float: _NUMBER_METHODS, bool: _NUMBER_METHODS,
    complex: frozenset(["conjugate"]),
    dict: frozenset(["get", "keys", "values", "items", "copy"]),
    list: frozenset(["count", "index", "copy"]),
    tuple: frozenset(["count", "index"]),
    set: _SET_METHODS, frozenset: _SET_METHODS,
    range: frozenset(["count", "index"]),
}
_ANY_SAFE_METHOD = frozenset().union(*SAFE_METHODS.values())

_ALLOWED_NODES = tuple(getattr(ast, n) for n in (
    "Expression", "BoolOp", "BinOp", "UnaryOp", "IfExp", "Dict", "Set", "ListComp", "SetComp",
    "DictComp", "GeneratorExp", "Compare", "Call", "FormattedValue", "JoinedStr", "Constant",
    "Attribute", "Subscript", "Starred", "Name", "List", "Tuple", "Slice", "comprehension", "keyword",
    "Index", "ExtSlice",  # 3.8 only
    "expr_context", "boolop", "operator", "unaryop", "cmpop",
) if hasattr(ast, n))
_REFUSED_WHY = {
    "NamedExpr": "an assignment expression (:=) binds a name",
    "Lambda": "lambda creates code that something could call",
    "Await": "await runs a coroutine", "Yield": "yield suspends", "YieldFrom": "yield suspends",
}

ITER_GUARD = "__flight_ro_iter"
METHOD_GUARD = "__flight_ro_method"
ITEM_GUARD = "__flight_ro_item"
ALLOW_HINT = ("Restart the server with --allow-mutating (CLI: flight-mcp --allow-mutating PID --cmd ...) "
              "if running it is intended.")


class ReadOnlyRefused(Exception):
    """Raised by the run-time guards; expr.describe_failure shows its message as is."""


def _refuse(flag, source, node, what, why):
    col = getattr(node, "col_offset", None)
    where = ""
    if col is not None and "\n" not in source:
        where = "\n  %s\n  %s^" % (source, " " * col)
    raise AgentError(
        "read_only",
        "read-only mode refused %s in the %s expression %r: %s.%s\nRead-only expressions may use names, "
        "attribute reads, subscripts, literals, operators, comparisons, comprehensions, calls of %s, and "
        "read-only methods of builtin values (str, dict.get/keys/values/items, ...). %s"
        % (what, flag, source, why, where, ", ".join(sorted(PURE_CALLS)), ALLOW_HINT),
        construct=what)


def _is_dunder(name):
    return name.startswith("__") and name.endswith("__") and len(name) > 4


def _name_ok(name):
    """None when the bare name may be read, else why not."""
    if name.startswith("__"):
        return "names starting with __ reach the interpreter's internals"
    if name in PURE_CALLS or not hasattr(builtins, name):
        return None  # unknown names fail with NameError at run time, harmlessly
    if isinstance(getattr(builtins, name), type) or name in ("None", "True", "False", "Ellipsis", "NotImplemented"):
        return None  # a builtin type or exception class as a value (isinstance(x, dict)); calls are checked apart
    return "the builtin %s is not on the read-only list" % name


def _const_number(node):
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return node.value
    return None


def _check(tree, flag, source):
    for node in ast.walk(tree):
        kind = type(node).__name__
        if not isinstance(node, _ALLOWED_NODES):
            _refuse(flag, source, node, kind, _REFUSED_WHY.get(kind, "this construct is not on the read-only list"))
        if isinstance(node, ast.Name):
            why = _name_ok(node.id)
            if why:
                _refuse(flag, source, node, "the name %s" % node.id, why)
        elif isinstance(node, ast.Attribute):
            if _is_dunder(node.attr) and node.attr not in SAFE_DUNDERS:
                _refuse(flag, source, node, "the attribute .%s" % node.attr,
                        "dunder attributes other than %s lead to the interpreter's internals"
                        % ", ".join(sorted(SAFE_DUNDERS)))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Pow, ast.LShift)):
            n = _const_number(node.right)
            if n is None or abs(n) > MAX_EXPONENT:
                _refuse(flag, source, node, "%s with a %s right operand" % (
                    "**" if isinstance(node.op, ast.Pow) else "<<", "large" if n is not None else "computed"),
                    "its cost is unbounded (it would hold the interpreter); use a constant up to %d" % MAX_EXPONENT)
        elif isinstance(node, ast.Call):
            _check_call(node, flag, source)


def _check_call(node, flag, source):
    func = node.func
    if isinstance(func, ast.Attribute):
        # The receiver's type is known only at run time (the guard checks it); a name that no
        # builtin type offers read-only (clear, pop, append, stats, ...) is refused now.
        if func.attr not in _ANY_SAFE_METHOD:
            _refuse(flag, source, node, "the method call .%s()" % func.attr,
                    "calling a method can change the object; only read-only methods of builtin values "
                    "(str methods, dict.get/keys/values/items, list.count/index, ...) run in read-only mode")
        return
    if not isinstance(func, ast.Name):
        _refuse(flag, source, node, "calling the result of an expression",
                "only builtins on the read-only list can be called by name")
    name = func.id
    if name not in PURE_CALLS:
        _refuse(flag, source, node, "the call %s()" % name,
                "only builtins on the read-only list can be called")
    if name == "type" and (len(node.args) != 1 or node.keywords):
        _refuse(flag, source, node, "type() with 3 arguments",
                "creating a class runs __init_subclass__ of its bases")
    if name == "hasattr":
        attr = node.args[1] if len(node.args) == 2 else None
        if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)) or _is_dunder(attr.value):
            _refuse(flag, source, node, "hasattr() with a computed or dunder name",
                    "it would read attributes that .name syntax refuses; write hasattr(x, 'name') with a "
                    "constant, non-dunder name")
    for kw in node.keywords:
        if kw.arg == "key" and not (isinstance(kw.value, ast.Name) and kw.value.id in PURE_CALLS):
            _refuse(flag, source, kw.value, "a key= that is not a read-only builtin",
                    "the key function is called for every item; use a builtin on the read-only list "
                    "(key=len, key=str, ...)")


class _Guard(ast.NodeTransformer):
    """Inserts the run-time guards: iterables fetched from the target, and method receivers."""

    @staticmethod
    def _fetched(node):
        return isinstance(node, (ast.Name, ast.Attribute, ast.Subscript))

    def _wrap(self, fn, *args):
        return ast.Call(func=ast.Name(id=fn, ctx=ast.Load()), args=list(args), keywords=[])

    def _iter(self, node):
        return ast.copy_location(self._wrap(ITER_GUARD, node), node) if self._fetched(node) else node

    def visit_comprehension(self, node):
        self.generic_visit(node)
        node.iter = self._iter(node.iter)
        return node

    def visit_Starred(self, node):
        self.generic_visit(node)
        node.value = self._iter(node.value)
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        node.comparators = [self._iter(c) if isinstance(op, (ast.In, ast.NotIn)) else c
                            for op, c in zip(node.ops, node.comparators)]
        return node

    def visit_Subscript(self, node):
        self.generic_visit(node)
        node.value = ast.copy_location(self._wrap(ITEM_GUARD, node.value), node.value)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Name) and func.id in ITERATING_CALLS:
            node.args = [self._iter(a) for a in node.args]
        elif isinstance(func, ast.Attribute):
            # obj.m(a) -> __flight_ro_method(obj, 'm')(a): the receiver is evaluated once, as before.
            node.func = ast.copy_location(
                self._wrap(METHOD_GUARD, func.value, ast.Constant(value=func.attr, kind=None)), func)
            node.args = [self._iter(a) for a in node.args]
        return node


def check(source, flag):
    """The guarded AST of a read-only expression, or AgentError("read_only") naming what was refused."""
    tree = ast.parse(source, "<%s>" % flag, "eval")
    _check(tree, flag, source)
    tree = _Guard().visit(tree)
    return ast.fix_missing_locations(tree)


# ---- run-time guards (placed in the evaluation globals by expr.evaluate) ----

_PLAIN_ITERABLES = (list, tuple, dict, set, frozenset, str, bytes, range, type({}.keys()),
                    type({}.values()), type({}.items()))


def _ro_iter(obj):
    if type(obj) in _PLAIN_ITERABLES:
        return obj
    try:
        it = iter(obj)
    except TypeError:
        return obj  # not iterable: let the consumer raise its own error
    if it is obj:
        raise ReadOnlyRefused(
            "read-only mode refused iterating a %s: it is an iterator/generator of the target, and "
            "iterating it would consume it. %s" % (type(obj).__name__, ALLOW_HINT))
    return obj


def _ro_method(obj, name):
    allowed = SAFE_METHODS.get(type(obj))
    if allowed is None or name not in allowed:
        raise ReadOnlyRefused(
            "read-only mode refused the method call .%s() on a %s: only read-only methods of builtin "
            "values run in read-only mode (str methods, dict.get/keys/values/items, list.count/index, "
            "set operations, ...); a method of the target's own classes can change anything. Read "
            "attributes instead (e.g. instances[0].processed), or: %s" % (name, type(obj).__name__, ALLOW_HINT))
    return getattr(obj, name)


class _NoMissing(object):
    """A defaultdict seen through [] without its __missing__: d[k] of a missing k would insert it."""
    __slots__ = ("d",)

    def __init__(self, d):
        self.d = d

    def __getitem__(self, key):
        if key in self.d:
            return dict.__getitem__(self.d, key)
        raise KeyError(key)


def _ro_item(obj):
    collections = sys.modules.get("collections")
    defaultdict = getattr(collections, "defaultdict", None)
    if defaultdict is not None and isinstance(obj, defaultdict):
        return _NoMissing(obj)
    return obj


RUNTIME = {ITER_GUARD: _ro_iter, METHOD_GUARD: _ro_method, ITEM_GUARD: _ro_item}
