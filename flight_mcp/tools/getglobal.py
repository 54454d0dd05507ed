"""getglobal: a module global or class field, or a listing of what a module or class holds."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..expressions import names_known
from ..models import Fact, ValueView
from ..render import NO_VIEW, expr_block, paint
from .base import Call, Cli, TimedParams, Tool
from .fields import READ_ONLY_RULES, ClassName, Expand, Module, Raw, Verbose


class GetGlobalParams(TimedParams):
    module: Module
    cls: ClassName = None
    field: Annotated[str | None, Cli("--var", "--field", positional=True)] = Field(
        None, description="Name of the global or class field. Omit to list every name the module/class "
                          "defines, with types and short values.")
    expr: Annotated[str, Cli("-e", "--expr"), names_known("target")] = Field(
        "target", description="Python expression over `target` (the value), e.g. \"target['db']\" or "
                              "\"len(target)\"." + READ_ONLY_RULES)
    expand: Expand = 2
    verbose: Verbose = False
    raw: Raw = False


class Method(Fact):
    name: str
    kind: Literal["method", "classmethod", "staticmethod", "property", "builtin"]
    signature: str | None = Field(None, description="Parameters, self/cls left out, e.g. '(order_id, amount=100.0)'.")


class Entry(Fact):
    name: str
    type: str
    value: str = Field(description="Short one-line text of the value.")
    kind: str | None = Field(None, description="In a class listing: method, classmethod, staticmethod, property or builtin (C).")
    signature: str | None = Field(None, description="A function's or method's parameters.")
    methods: list[Method] | None = Field(None, description="A class: its own methods with their parameters.")
    fields: list[str] | None = Field(None, description="A class: its own other names (class fields).")
    more_methods: int = Field(0, description="A class: methods beyond the 40 listed.")


class GetGlobalResult(Fact):
    mode: Literal["value", "listing"]
    owner: str = Field(description="module or module.Class read.")
    field: str | None = None
    expr: str | None = None
    view: ValueView | None = Field(None, description="The value.")
    entries: list[Entry] | None = None
    elided: int = Field(0, description="Listing: names left out (300 are listed).")


def run(p: GetGlobalParams, call: Call) -> GetGlobalResult:
    return GetGlobalResult(**call.request(p, "getglobal", p.agent_args()))


def render(r: GetGlobalResult, color: bool) -> str:
    if r.mode == "listing":
        lines = [paint(f"{r.owner}: {len(r.entries or [])} names", "bold", color)]
        width = max((len(e.name) for e in r.entries or []), default=0)
        for e in r.entries or []:
            kind = e.kind or e.type
            shown = f"{e.name}{e.signature}" if e.signature is not None else e.value
            lines.append(f"  {e.name.ljust(width)}  {paint(kind, 'cyan', color)}  {shown}")
            if e.methods:
                more = f", ... {e.more_methods} more (name the class to list them)" if e.more_methods else ""
                lines.append(" " * (width + 6) + "methods: " + ", ".join(
                    m.name + (m.signature if m.signature is not None else f" ({m.kind})") for m in e.methods) + more)
            if e.fields:
                lines.append(" " * (width + 6) + "fields: " + ", ".join(e.fields))
        if r.elided:
            lines.append(f"  ... {r.elided} more names (300 are listed): name the field to read one")
        return "\n".join(lines)
    return expr_block(r.expr or "target", r.view or NO_VIEW)


TOOL = Tool(
    name="getglobal", params=GetGlobalParams, result=GetGlobalResult, run=run, render=render,
    title="Read a global or class field",
    description=(
        "Read a module global or a class (static) field of a live Python process, optionally through an "
        "expression on `target`. Omit `field` to list what the module or class defines (names, types, short "
        "values; functions and each class's methods with their parameters): the way to discover what to look at. Never imports a module the target has not imported. "
        "Read-only."),
)
