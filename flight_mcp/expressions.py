"""What the host can tell about a user expression before attaching: the names it reads that nothing
defines. `undefined_var > 1` as a filter would otherwise fail on every call until the deadline; it
is refused at once, naming the names an expression of that argument can see."""
from __future__ import annotations

import ast
import builtins

from pydantic import AfterValidator

CAPTURE_NAMES = ("target", "args", "kwargs", "return_obj", "cost", "params")


def unknown_names(source: str, known: tuple[str, ...]) -> list[str]:
    """Names read by the expression that are neither known, nor builtins, nor bound inside it
    (comprehension variables, lambda parameters, :=). A syntax error finds nothing here, nor does a
    dunder name (`__builtins__` exists where expressions run): the agent words those."""
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return []
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    for lam in (n for n in ast.walk(tree) if isinstance(n, ast.Lambda)):
        a = lam.args
        bound.update(x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x is not None)
    unknown: list[str] = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in known
                and node.id not in bound and not hasattr(builtins, node.id) and node.id not in unknown
                and not node.id.startswith("__")):
            unknown.append(node.id)
    return unknown


def names_known(*known: str) -> AfterValidator:
    """A field validator: the expression reads only `known` names and builtins."""
    def check(source: str | None) -> str | None:
        unknown = unknown_names(source, known) if source else []
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not defined: "
                             f"an expression here sees {', '.join(known)} and Python's builtins")
        return source
    return AfterValidator(check)
