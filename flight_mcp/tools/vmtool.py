"""vmtool: live instances of a class (who holds them, how many per key), and forceGc."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from ..errors import FlightError
from ..models import ValueView
from ..render import NO_VIEW, expr_block, paint
from .base import Call, Cli, TimedParams, Tool


class VmtoolParams(TimedParams):
    action: Annotated[Literal["getInstances", "forceGc"], Cli("-a", "--action")] = Field(
        "getInstances", description="getInstances: find live instances of `cls`; forceGc: run a full garbage "
                                    "collection (changes the target: needs --allow-mutating).")
    cls: Annotated[str | None, Cli("-c", "--class")] = Field(
        None, description="\"module class\" in one string, e.g. \"__main__ OrderService\" (also \"module.Class\"); "
                          "dotted class names for nested classes.")
    class_name: Annotated[str | None, Cli("--class-name", positional=True)] = Field(
        None, description="Class name, when `cls` holds only the module (the CLI's unquoted `-c module class`).")
    expr: Annotated[str, Cli("-e", "--expr")] = Field(
        "instances", description="Python expression over `instances` (the list found, cut to `limit`), e.g. "
                                 "\"len(instances)\", \"[i.name for i in instances]\", \"instances[0].stats()\" (a "
                                 "method call of the target's own class needs --allow-mutating).")
    limit: Annotated[int, Cli("-n", "--limit", "--limits")] = Field(
        10, ge=-1, description="How many instances go into `instances` (-1 = all). The total found is always reported.")
    expand: Annotated[int, Cli("-x", "--expand")] = Field(
        1, ge=0, le=6, description="Levels of contents to expand (0 = repr only).")
    verbose: Annotated[bool, Cli("-v", "--verbose")] = Field(False, description="Include dunder names when expanding.")
    raw: Annotated[bool, Cli("-r", "--raw")] = Field(
        False, description="Show the value's own repr() on one line instead of a view: the target's __repr__ runs on "
                           "an agent thread, at most 200 ms per object (else shown as timed out).")
    subclasses: Annotated[bool, Cli("-s", "--subclasses")] = Field(
        False, description="Also find instances of subclasses of the class (default: that exact class only).")
    referrers: Annotated[bool, Cli("--referrers")] = Field(
        False, description="Also report what refers to the instances in `instances` (who keeps them alive): "
                           "referrer type and attribute/key/global name, with counts, bounded to 50 lines.")
    count_by: Annotated[str | None, Cli("--count-by")] = Field(
        None, description="Count ALL instances found by a key expression over `target` (one instance), e.g. "
                          "\"target.status\" or \"type(target).__name__\"; the 50 most frequent keys are returned.")


class Count(BaseModel):
    key: str
    count: int


class CountBy(BaseModel):
    expr: str
    counts: list[Count]
    distinct: int = Field(description="Distinct keys (only the 50 most frequent are listed).")
    failed: int = Field(description="Instances for which the key expression raised.")
    first_error: str | None = None


class Referrer(BaseModel):
    referrer: str = Field(description="e.g. 'module __main__, global SERVICE', '__main__.Registry.items', "
                                      "'list[3] (len 10)', 'dict[\\'k\\']', 'frame of worker (app.py:40)'.")
    count: int


class Generation(BaseModel):
    generation: int
    collected: int = Field(description="Objects found unreachable by gc.collect(generation), run for 0, 1, 2 in order.")
    count_before: int | None = Field(None, description="Allocations counted toward this generation before.")
    collections: int
    collected_total_after: int
    uncollectable_total_after: int


class VmtoolResult(BaseModel):
    action: Literal["getInstances", "forceGc"]
    cls: str | None = None
    expr: str | None = None
    total: int | None = Field(None, description="Instances found on the GC heap.")
    shown: int | None = Field(None, description="Instances in `instances` (total cut to limit).")
    limit: int | None = None
    subclasses: bool = False
    search_ms: float | None = Field(None, description="Time the heap search took in the target.")
    notes: list[str] = Field(default_factory=list)
    view: ValueView | None = Field(None, description="The expression's value.")
    count_by: CountBy | None = None
    referrers: list[Referrer] | None = None
    referrers_elided: int = 0
    collected: int | None = Field(None, description="forceGc: unreachable objects found, all generations.")
    generations: list[Generation] | None = None
    gc_enabled: bool | None = None
    garbage_added: int | None = Field(None, description="forceGc: objects added to gc.garbage (uncollectable).")
    count_after: list[int] | None = None
    cost_ms: float | None = None


def run(p: VmtoolParams, call: Call) -> VmtoolResult:
    if p.action == "forceGc":
        call.require_mutating("vmtool forceGc (a full garbage collection: frees objects, runs finalizers)")
        return VmtoolResult(**call.request(p, "vmtool", {"action": "forceGc"}))
    cls = p.cls
    if cls and p.class_name:
        cls = f"{cls} {p.class_name}"
    elif p.class_name:
        raise FlightError("usage", f"vmtool: give the class as -c \"MODULE {p.class_name}\".")
    if not cls:
        raise FlightError("usage", "vmtool getInstances needs -c/--class \"MODULE CLASS\", e.g. "
                          "vmtool -a getInstances -c '__main__ OrderService'.")
    args = p.model_dump(exclude={"pid", "timeout_s", "class_name", "cls"})
    args["cls"] = cls
    return VmtoolResult(**call.request(p, "vmtool", args))


def render(r: VmtoolResult, color: bool) -> str:
    if r.action == "forceGc":
        lines = [f"Gc execute successfully, totally {r.collected} unreachable objects are freed."]
        for g in r.generations or []:
            lines.append(f"  gen{g.generation}: gc.collect({g.generation}) collected {g.collected}"
                         + (f" (pending allocations before: {g.count_before})" if g.count_before is not None else ""))
        if r.garbage_added:
            lines.append(f"  {r.garbage_added} uncollectable objects were added to gc.garbage.")
        if r.gc_enabled is False:
            lines.append("  note: automatic GC is disabled in this process (gc.disable()).")
        lines.append(f"  took {r.cost_ms} ms")
        return "\n".join(lines)
    lines = [expr_block(r.expr or "instances", r.view or NO_VIEW)]
    what = f"{r.cls}" + (" and subclasses" if r.subclasses else "")
    lines.append(paint(f"found {r.total} instance(s) of {what} on the GC heap in {r.search_ms} ms; "
                       f"{r.shown} in `instances`" + (" (-n/--limit; -1 for all)" if r.shown < r.total else ""), "dim", color))
    for note in r.notes:
        lines.append(paint("note: " + note, "dim", color))
    if r.count_by is not None:
        c = r.count_by
        lines.append(f"COUNT BY {c.expr}: {c.distinct} distinct key(s)")
        width = max((len(str(x.count)) for x in c.counts), default=1)
        for x in c.counts:
            lines.append(f"  {str(x.count).rjust(width)}  {x.key}")
        if c.distinct > len(c.counts):
            lines.append(f"  ... {c.distinct - len(c.counts)} more keys")
        if c.failed:
            lines.append(f"  {c.failed} instance(s) failed: {c.first_error}")
    if r.referrers is not None:
        lines.append(f"REFERRERS of the {r.shown} instance(s) in `instances`:")
        if not r.referrers:
            lines.append("  none found among GC-tracked objects (held only by untracked containers, or unreachable)")
        width = max((len(str(x.count)) for x in r.referrers), default=1)
        for x in r.referrers:
            lines.append(f"  {str(x.count).rjust(width)}  {x.referrer}")
        if r.referrers_elided:
            lines.append(f"  ... {r.referrers_elided} more referrer kinds")
    return "\n".join(lines)


TOOL = Tool(
    name="vmtool", params=VmtoolParams, result=VmtoolResult, run=run, render=render,
    title="Live instances of a class; force GC",
    read_only=False, destructive=False,
    description=(
        "Find the live instances of a class in a running Python process (through the garbage collector) and "
        "look at them with an expression over `instances`: e.g. cls=\"__main__ OrderService\", "
        "expr=\"[i.processed for i in instances]\". Reports the total found; `limit` cuts the list (-1 = all). "
        "`count_by` counts ALL instances by a key expression over `target` (one instance); `referrers` tells "
        "who refers to them (referrer type and attribute/key/global name) to find what keeps leaked objects "
        "alive; `subclasses` includes subclass instances. Objects of types the GC does not track (int, str, "
        "classes with __slots__=() ) cannot be found. Read-only unless the server runs with --allow-mutating: "
        "then method calls on instances in `expr` (instances[0].stats()) and action=forceGc (full collection, "
        "reports what each generation freed) are allowed."),
)
