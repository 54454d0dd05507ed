"""getglobal: a module global or class field, or a listing of what a module or class holds."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from ..models import ValueView
from ..render import NO_VIEW, expr_block, paint
from .base import Call, Cli, TimedParams, Tool


class GetGlobalParams(TimedParams):
    module: Annotated[str, Cli("--mod", positional=True)] = Field(
        description="Module name as the target imported it ('__main__' for the script that was run).")
    cls: Annotated[str | None, Cli("--cls", positional=True)] = Field(
        None, description="Class whose field to read (dotted for nested classes); omit for a module global.")
    field: Annotated[str | None, Cli("--var", "--field", positional=True)] = Field(
        None, description="Name of the global or class field. Omit to list every name the module/class "
                          "defines, with types and short values.")
    expr: Annotated[str, Cli("-e", "--expr")] = Field(
        "target", description="Python expression over `target` (the value), e.g. \"target['db']\" or "
                              "\"len(target)\".")
    expand: Annotated[int, Cli("-x", "--expand")] = Field(
        2, ge=0, le=6, description="Levels of contents to expand (0 = one-line repr).")
    verbose: Annotated[bool, Cli("-v", "--verbose")] = Field(
        False, description="Show every item of long containers (else the first and last 5) and dunder names.")
    raw: Annotated[bool, Cli("-r", "--raw")] = Field(
        False, description="Show the value (each value, in a listing) as its own repr() on one line: the target's "
                           "__repr__ runs on an agent thread, at most 200 ms per object (else shown as timed out). "
                           "Without it no code of the target runs: objects are shown from their __dict__/__slots__.")


class Entry(BaseModel):
    name: str
    type: str
    value: str


class GetGlobalResult(BaseModel):
    mode: Literal["value", "listing"]
    owner: str
    field: str | None = None
    expr: str | None = None
    view: ValueView | None = Field(None, description="The value.")
    entries: list[Entry] | None = None
    elided: int = 0


def run(p: GetGlobalParams, call: Call) -> GetGlobalResult:
    args = p.model_dump(exclude={"pid", "timeout_s"})
    return GetGlobalResult(**call.request(p, "getglobal", args))


def render(r: GetGlobalResult, color: bool) -> str:
    if r.mode == "listing":
        lines = [paint(f"{r.owner}: {len(r.entries or [])} names", "bold", color)]
        width = max((len(e.name) for e in r.entries or []), default=0)
        for e in r.entries or []:
            lines.append(f"  {e.name.ljust(width)}  {paint(e.type, 'cyan', color)}  {e.value}")
        if r.elided:
            lines.append(f"  ... {r.elided} more names")
        return "\n".join(lines)
    return expr_block(r.expr or "target", r.view or NO_VIEW)


TOOL = Tool(
    name="getglobal", params=GetGlobalParams, result=GetGlobalResult, run=run, render=render,
    title="Read a global or class field",
    description=(
        "Read a module global or a class (static) field of a live Python process, optionally through an "
        "expression on `target`. Omit `field` to list what the module or class defines (names, types, short "
        "values): the way to discover what to look at. Never imports a module the target has not imported. "
        "Read-only."),
)
