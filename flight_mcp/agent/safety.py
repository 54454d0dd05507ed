"""Read-only checker for user expressions: what "read-only mode" means for -f, --expr, -e.

check(source, flag) parses the expression, refuses every construct that could change the target,
and returns the AST rewritten so that EVERY operation runs through a run-time guard (guards.py):
attribute reads, subscripts, operators, comparisons, truth tests, iteration (comprehensions,
unpacking, star-args), calls of builtins, method calls and f-string fields. The guards decide by
the exact run-time type: an expression can neither run away (sizes are checked before the work;
loops spend a per-evaluation budget of steps, bytes and time) nor run any of the target's own
code (no __repr__/__eq__/__hash__/__iter__/__getitem__/keys()/properties/__getattr__ of its
classes, no generator advanced, no defaultdict key inserted). A refusal is AgentError("read_only")
at compile time, or guards.ReadOnlyRefused at run time, naming the construct, why, and what to do.

Refused before running, and why:
- assignment expressions (walrus), lambda, await/yield: they bind names or create code;
- calls of anything but PURE_CALLS by name: exec/eval/compile/open/__import__/setattr/
  delattr/globals/locals/breakpoint/input/print/iter/next/..., calling a value
  (`instances[0]()`, `type(x)(...)`), and method calls whose name no builtin type offers read-only;
- dunder attributes and names (`().__class__.__bases__`, `f.__globals__`, `__builtins__`) except
  the descriptive SAFE_DUNDERS; the classic sandbox escape chain needs __bases__/__subclasses__/
  __globals__, all refused;
- getattr with a computed or dunder name (it would bypass the dunder rule), hasattr with a computed
  name (a constant dunder is only looked up, never read);
- `key=` of sorted/min/max that is not a PURE_CALLS name; `type()` with 3 arguments;
- `**` and `<<` with a non-constant or large right operand;
- a chained comparison that contains `in` (write `a in b and b < c`);
- expressions longer than MAX_SOURCE characters or nested deeper than MAX_NESTING: the parser of
  Python 3.8 overflows on deep nesting (and the guards would not fit the agent's stack).

What read-only cannot promise: the C code of extension types runs as it is (their slots are C, so
no Python of the target runs); a builtin that the target itself replaced (builtins.len = ...) is
not called, but a key= naming it is refused. With --allow-mutating the expression runs unguarded.
"""
import ast
import builtins
import io
import sys
import tokenize

from . import guard_calls, guards
from .registry import AgentError

# Builtins whose call cannot change anything by itself (they run protocol methods only).
PURE_CALLS = frozenset([
    "len", "isinstance", "issubclass", "type", "str", "repr", "ascii", "sorted", "reversed", "min",
    "max", "sum", "any", "all", "abs", "round", "bool", "int", "float", "complex", "list", "tuple",
    "dict", "set", "frozenset", "enumerate", "zip", "range", "id", "hash", "divmod", "chr", "ord",
    "hex", "oct", "bin", "format", "callable", "hasattr", "getattr", "slice", "vars",
])
SAFE_DUNDERS = frozenset(["__class__", "__name__", "__qualname__", "__module__", "__doc__",
                          "__dict__", "__file__", "__slots__"])
MAX_EXPONENT = 128  # `x ** 128` and `1 << 128` stay cheap; anything larger is refused

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

ALLOW_HINT = guards.ALLOW_HINT
ReadOnlyRefused = guards.ReadOnlyRefused
MAX_SOURCE = 2000    # characters of one expression
MAX_NESTING = 40     # brackets, and levels of the parsed expression over its operands
_GUARD = "__flight_ro_"
BUDGET = _GUARD + "budget"


def _arg_of(flag):
    """The argument name in a flag given as codes.arg(NAME), else None."""
    if flag.startswith("{arg:") and flag.endswith("}"):
        return flag[5:-1]
    return None


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
        arg=_arg_of(flag), construct=what)


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
        if func.attr not in guard_calls.ANY_SAFE_METHOD:
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
    if name in ("hasattr", "getattr"):
        attr = node.args[1] if len(node.args) in (2, 3) else None
        constant = isinstance(attr, ast.Constant) and isinstance(attr.value, str)
        if not constant or (name == "getattr" and _is_dunder(attr.value) and attr.value not in SAFE_DUNDERS):
            _refuse(flag, source, node, "%s() with a computed or dunder name" % name,
                    "it would read attributes that .name syntax refuses; write %s(x, 'name') with a "
                    "constant, non-dunder name" % name)
    for kw in node.keywords:
        if kw.arg == "key" and not (isinstance(kw.value, ast.Name) and kw.value.id in PURE_CALLS):
            _refuse(flag, source, kw.value, "a key= that is not a read-only builtin",
                    "the key function is called for every item; use a builtin on the read-only list "
                    "(key=len, key=str, ...)")


def _too_deep(flag, source, what):
    raise AgentError(
        "bad_expression",
        "the %s expression is %s: read-only and mutating expressions alike are limited to %d characters "
        "and %d levels of nesting (deeper would overflow the parser of Python 3.8 and the agent's stack). "
        "Split it into smaller expressions, or read the value and expand it." % (
            flag, what, MAX_SOURCE, MAX_NESTING), arg=_arg_of(flag))


def precheck(source, flag):
    """Refuses what would overflow the parser or the compiler before either sees it."""
    if len(source) > MAX_SOURCE:
        _too_deep(flag, source, "%d characters long" % len(source))
    depth = unary = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
                if depth > MAX_NESTING:
                    _too_deep(flag, source, "nested more than %d brackets deep" % MAX_NESTING)
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
            if tok.string in ("-", "+", "~", "not", "**"):
                unary += 1
                if unary > MAX_NESTING:
                    _too_deep(flag, source, "a chain of more than %d operators" % MAX_NESTING)
            elif tok.type not in (tokenize.NUMBER, tokenize.NAME) or tok.string in ("if", "else", "and", "or"):
                unary = 0
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass   # compile() reports it with the caret


def _depth_ok(tree, flag, source):
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > 3 * MAX_NESTING:
            _too_deep(flag, source, "nested more than %d levels deep" % MAX_NESTING)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _g(name):
    return ast.Name(id=_GUARD + name, ctx=ast.Load())


def _call(name, *args):
    return ast.Call(func=_g(name), args=list(args), keywords=[])


def _index(n):
    return ast.Index(value=_const(n)) if hasattr(ast, "Index") and sys.version_info < (3, 9) else _const(n)


def _budget():
    return ast.Name(id=BUDGET, ctx=ast.Load())


def _const(value):
    return ast.Constant(value=value, kind=None)


_BOOLISH = (ast.Compare, ast.Constant)


def _truth(node):
    """node, wrapped so that testing its truth runs no __bool__/__len__ of the target."""
    if isinstance(node, _BOOLISH) or isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return node
    return ast.copy_location(_call("truth", node), node)


class _Guard(ast.NodeTransformer):
    """Routes every operation through guards.py; `budgeted` tells whether a Budget is needed."""

    def __init__(self, flag, source):
        self.flag, self.source = flag, source
        self.budgeted = False

    def _guard(self, name, node, *args):
        """A guard that makes things (calls, operators, loops): the expression gets a Budget."""
        self.budgeted = True
        return self._check(name, node, *args)

    @staticmethod
    def _check(name, node, *args):
        """A guard that only checks or reads (bounded per step): no Budget needed for it."""
        return ast.copy_location(_call(name, _budget(), *args), node)

    def visit_Attribute(self, node):
        self.generic_visit(node)
        return ast.copy_location(_call("attr", node.value, _const(node.attr)), node)

    def visit_Slice(self, node):
        self.generic_visit(node)
        parts = [p if p is not None else _const(None) for p in (node.lower, node.upper, node.step)]
        return ast.copy_location(_call("slice", *parts), node)

    def visit_Index(self, node):     # 3.8
        self.generic_visit(node)
        return node.value

    def visit_ExtSlice(self, node):  # 3.8
        self.generic_visit(node)
        return ast.Tuple(elts=node.dims, ctx=ast.Load())

    def visit_Subscript(self, node):
        copies = isinstance(getattr(node.slice, "value", node.slice), (ast.Slice, ast.ExtSlice, ast.Tuple))
        self.generic_visit(node)
        return (self._guard if copies else self._check)("item", node, node.value, node.slice)

    def visit_BinOp(self, node):
        self.generic_visit(node)
        return self._guard("binop", node, _const(type(node.op).__name__), node.left, node.right)

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            node.operand = _truth(node.operand)
            return node
        if isinstance(node.operand, ast.Constant):
            return node
        return ast.copy_location(_call("unary", _const(type(node.op).__name__), node.operand), node)

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        node.values = [_truth(v) for v in node.values[:-1]] + node.values[-1:]
        return node

    def visit_IfExp(self, node):
        self.generic_visit(node)
        node.test = _truth(node.test)
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        membership = [op for op in node.ops if isinstance(op, (ast.In, ast.NotIn))]
        if membership:
            if len(node.ops) > 1:
                _refuse(self.flag, self.source, node, "a chained comparison with `in`",
                        "each membership test is checked on its own; write `a in b and b < c`")
            test = self._check("contains", node, node.left, node.comparators[0])
            return test if isinstance(node.ops[0], ast.In) else \
                ast.copy_location(ast.UnaryOp(op=ast.Not(), operand=test), node)
        operands = [node.left] + node.comparators
        needs = [set() for _ in operands]
        for i, op in enumerate(node.ops):
            if isinstance(op, (ast.Eq, ast.NotEq)):
                kind = "eq_safe"
            elif isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
                kind = "ord_safe"
            else:
                continue   # is / is not: identity, no code runs
            needs[i].add(kind)
            needs[i + 1].add(kind)
        for i, operand in enumerate(operands):
            if needs[i] and not isinstance(operand, ast.Constant):
                kind = "ord_safe" if "ord_safe" in needs[i] else "eq_safe"
                operands[i] = self._check(kind, operand, operand)
        node.left, node.comparators = operands[0], operands[1:]
        return node

    def _args(self, node):
        args = [ast.Starred(value=self._guard("star", a, a.value), ctx=ast.Load()) if isinstance(a, ast.Starred)
                else a for a in node.args]
        keywords = [ast.keyword(arg=None, value=self._guard("mapping", k.value, k.value)) if k.arg is None else k
                    for k in node.keywords]
        return args, keywords

    def visit_Call(self, node):
        func = node.func
        node.args = [self.visit(a) for a in node.args]
        node.keywords = [self.visit(k) for k in node.keywords]
        args, keywords = self._args(node)
        self.budgeted = True
        if isinstance(func, ast.Attribute):
            receiver = self.visit(func.value)
            guard = _call("method", _budget(), receiver, _const(func.attr))
        else:
            guard = _call("call_" + func.id, _budget())
        guard.args.extend(args)
        guard.keywords = keywords
        return ast.copy_location(guard, node)

    def visit_Starred(self, node):
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load):
            node.value = self._guard("star", node.value, node.value)
        return node

    def visit_Set(self, node):
        self.generic_visit(node)
        node.elts = [self._hashable(e) for e in node.elts]
        return node

    def _hashable(self, node):
        if isinstance(node, ast.Constant):
            return node
        if isinstance(node, ast.Starred):
            node.value.func = _g("star_hashable")
            return node
        return self._check("hash_safe", node, node)

    def visit_Dict(self, node):
        self.generic_visit(node)
        node.values = [self._guard("mapping", v, v) if k is None else v for k, v in zip(node.keys, node.values)]
        node.keys = [self._hashable(k) if k is not None else None for k in node.keys]
        return node

    def visit_comprehension(self, node):
        self.generic_visit(node)
        unpack = isinstance(node.target, (ast.Tuple, ast.List))
        node.iter = self._guard("loop", node.iter, node.iter, _const(unpack))
        node.ifs = [_truth(t) for t in node.ifs]
        return node

    def visit_SetComp(self, node):
        self.generic_visit(node)
        node.elt = self._hashable(node.elt)
        return node

    def visit_DictComp(self, node):
        self.generic_visit(node)
        node.key = self._hashable(node.key)
        return node

    def visit_GeneratorExp(self, node):
        self.generic_visit(node)
        return ast.copy_location(_call("own", node), node)

    def visit_FormattedValue(self, node):
        self.generic_visit(node)
        spec = node.format_spec if node.format_spec is not None else _const("")
        node.value = self._guard("format_value", node.value, node.value, _const(node.conversion), spec)
        node.conversion, node.format_spec = -1, None
        return node


USES = {"value": None, "condition": "truth", "key": "hash_safe"}


def check(source, flag, use="value"):
    """The guarded AST of a read-only expression, or AgentError("read_only") naming what was refused.
    use: what the caller does with the value besides showing it: "condition" tests its truth (a
    filter), "key" hashes it (vmtool --count-by); neither may run the target's __bool__/__hash__."""
    precheck(source, flag)
    tree = ast.parse(source, "<%s>" % flag, "eval")
    _depth_ok(tree, flag, source)
    _check(tree, flag, source)
    guard = _Guard(flag, source)
    tree = guard.visit(tree)
    if use == "condition":
        tree.body = _truth(tree.body)
    elif use == "key":
        tree.body = guard._guard("hash_safe", tree.body, tree.body)
    if guard.budgeted:
        # (__flight_ro_budget := [steps, bytes, deadline], BODY)[1]: one fresh budget per evaluation,
        # a local of the filter's lambda that comprehensions see; without loops or calls the guards
        # get the global None and bound each step on their own.
        fresh = ast.List(elts=[_const(v) for v in guards.budget()], ctx=ast.Load())
        bind = ast.NamedExpr(target=ast.Name(id=BUDGET, ctx=ast.Store()), value=fresh)
        tree.body = ast.Subscript(value=ast.Tuple(elts=[bind, tree.body], ctx=ast.Load()),
                                  slice=_index(1), ctx=ast.Load())
    return ast.fix_missing_locations(tree)


RUNTIME = dict((_GUARD + name, getattr(guards, name)) for name in (
    "attr", "item", "binop", "unary", "truth", "contains", "eq_safe", "ord_safe", "hash_safe", "star",
    "star_hashable", "mapping", "loop", "own"))
RUNTIME.update((_GUARD + name, getattr(guard_calls, name)) for name in ("format_value", "method"))
RUNTIME.update((_GUARD + "call_" + name, guard_calls.CALL_GUARDS[name]) for name in PURE_CALLS)
RUNTIME[_GUARD + "slice"] = slice
RUNTIME[BUDGET] = None
