"""One expression context for every tool: compiled once per command, evaluated per call.

Names an expression may use (the same in trace -f, watch --expr/-f, getglobal -e, vmtool -e):
  target      the instance for methods (the value for getglobal, None for plain functions)
  args        positional arguments WITHOUT the instance, kwargs: keyword arguments
  return_obj  the return value (watch), cost: milliseconds the call took, instances (vmtool)
"""
from . import safety, typefacts
from .registry import AgentError


def compile_expr(source, flag, allow_mutating=False, use="value"):
    """Compiles a user expression; a syntax error names the argument it came from and shows where.
    flag: that argument as codes.arg(NAME) (the host writes it in the caller's language).
    Unless allow_mutating, the expression must pass the read-only checker (safety.py).
    use: "condition" (a filter: its truth is tested) or "key" (hashed), see safety.check."""
    if source is None:
        return None
    arg = flag[5:-1] if flag.startswith("{arg:") and flag.endswith("}") else None   # the argument at fault
    safety.precheck(source, flag)   # deep nesting overflows the parser (3.8) before any SyntaxError
    try:
        code = compile(source, "<%s>" % flag, "eval")
    except (MemoryError, RecursionError):
        raise AgentError("bad_expression", "the %s expression %r is nested too deeply for the parser. Split it "
                         "into smaller expressions." % (flag, source[:200]), arg=arg)
    except SyntaxError as e:
        caret = ""
        if e.offset:
            caret = "\n  %s\n  %s^" % (source, " " * (e.offset - 1))
        raise AgentError("bad_expression",
                         "syntax error in %s expression %r: %s%s. Write a single Python expression, "
                         "e.g. 'args[0] > 1' or 'target.status'." % (flag, source, e.msg, caret), arg=arg)
    if not allow_mutating:
        # Read-only: the checked AST, every operation through a run-time guard (guards.py).
        code = compile(safety.check(source, flag, use), "<%s>" % flag, "eval")
    return code


def evaluate(code, names):
    """Evaluates with builtins available; raises whatever the expression raises.
    The names are globals, not locals: a comprehension's body sees them too (`[i for i in
    instances if i.size > target]` fails with NameError on Python < 3.12 when they are locals)."""
    return eval(code, scope(names))


def scope(names):
    """The globals an expression runs with; reuse one (changing a name) to evaluate many times."""
    env = {"__builtins__": __builtins__}
    env.update(safety.RUNTIME)
    env.update(names)
    return env


def describe_failure(flag, source, exc):
    """A failure as one sentence, for tools that answer with an error (capture sends facts instead)."""
    if isinstance(exc, typefacts.Refused):
        return "%s expression %r: %s" % (flag, source, exc)
    return "%s expression %r raised %s: %s" % (flag, source, type(exc).__name__, exc)
