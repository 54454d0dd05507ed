"""vmtool: live instances of a class (who holds them, how many per key), and forceGc."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ..agent.codes import arg
from ..expressions import names_known
from ..models import ExceptionFact, Fact, ValueView
from ..render import NO_VIEW, expr_block, paint
from .base import CliSplit, Call, Cli, TimedParams, Tool
from .fields import READ_ONLY_RULES, Expand, Limit, Module, Raw, Verbose


def _description(shared) -> str:
    return next(m.description for m in shared.__metadata__ if hasattr(m, "description"))


class VmtoolParams(TimedParams):
    action: Annotated[Literal["getInstances", "forceGc"], Cli("-a", "--action")] = Field(
        "getInstances", description="getInstances: find live instances of `cls`; forceGc: run a full garbage "
                                    "collection (changes the target: needs --allow-mutating).")
    module: Annotated[str | None, Cli("--mod", positional=True)] = Field(None, description=_description(Module))
    # The CLI's -c takes flight_profiler's "module Class" (or module.Class) and fills both fields.
    cls: Annotated[str | None, Cli("-c", "--class", "--cls", positional=True), CliSplit(("-c", "--class"), into=("module", "cls"))] = Field(
        None, description="Class in `module` whose instances to find (dotted for nested classes: Outer.Inner).")
    expr: Annotated[str, Cli("-e", "--expr"), names_known("instances")] = Field(
        "instances", description="Python expression over `instances` (the list found, cut to `limit`), e.g. "
                                 "\"len(instances)\", \"[i.name for i in instances]\", \"instances[0].stats()\" (a "
                                 "method call of the target's own class needs --allow-mutating)." + READ_ONLY_RULES)
    limit: Limit = 10
    expand: Expand = 1
    verbose: Verbose = False
    raw: Raw = False
    subclasses: Annotated[bool, Cli("-s", "--subclasses")] = Field(
        False, description="Also find instances of subclasses of the class (else that exact class only).")
    referrers: Annotated[bool, Cli("--referrers")] = Field(
        False, description="Also report who holds the instances in `instances` (what keeps them alive), grouped "
                           "by owner path, e.g. '792 held in SubscriptionRegistry._by_topic[*]', bounded to 50 lines.")
    count_by: Annotated[str | None, Cli("--count-by"), names_known("target")] = Field(
        None, description="Count ALL instances found by a key expression over `target` (one instance), e.g. "
                          "\"target.status\" or \"type(target).__name__\"; the 50 most frequent keys are returned.")

    @model_validator(mode="after")
    def _class_named(self):
        if self.action == "getInstances" and not (self.module and self.cls):
            raise ValueError(f"getInstances needs the class: {arg('module')} and {arg('cls')}, e.g. module "
                             "\"__main__\" and cls \"OrderService\"")
        return self


class Count(Fact):
    key: str
    count: int


class CountBy(Fact):
    expr: str
    counts: list[Count]
    distinct: int = Field(description="Distinct keys (only the 50 most frequent are listed).")
    failed: int = Field(description="Instances for which the key expression raised.")
    first_error: ExceptionFact | None = Field(None, description="What the key expression raised first.")


class Referrer(Fact):
    referrer: str | None = Field(description="The owner path holding them, as a person reaches it: "
                                             "'app.registry.CACHE[*]' (a module global, then container levels), "
                                             "'SubscriptionRegistry._by_topic[*][*]' (an instance attribute), "
                                             "'frame of worker (app.py:40)'; None: no holder among GC-tracked objects.")
    count: int = Field(description="Instances (of those in `instances`) held there.")


class Generation(Fact):
    generation: int
    collected: int = Field(description="Objects found unreachable by gc.collect(generation), run for 0, 1, 2 in order.")
    count_before: int | None = Field(None, description="Allocations counted toward this generation before.")
    collections: int
    collected_total_after: int
    uncollectable_total_after: int


class VmtoolResult(Fact):
    action: Literal["getInstances", "forceGc"]
    module: str | None = None
    cls: str | None = None
    expr: str | None = None
    total: int | None = Field(None, description="Instances found on the GC heap.")
    shown: int | None = Field(None, description="Instances in `instances` (total cut to limit).")
    limit: int | None = None
    subclasses: bool = False
    search_ms: float | None = Field(None, description="Time the heap search took in the target.")
    untracked_kind: str | None = Field(None, description="The class is (a subclass of) this builtin container, "
                                                         "whose objects holding only atomic values the GC untracks: "
                                                         "those are not found.")
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
    return VmtoolResult(**call.request(p, "vmtool", p.agent_args()))


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
    what = f"{r.module}.{r.cls}" + (" and subclasses" if r.subclasses else "")
    lines.append(paint(f"found {r.total} instance(s) of {what} on the GC heap in {r.search_ms} ms; "
                       f"{r.shown} in `instances`" + (f" (cut to limit {r.limit})" if r.shown < r.total else ""), "dim", color))
    if r.untracked_kind:
        lines.append(paint(f"note: {r.untracked_kind} objects holding only atomic values are untracked by the GC "
                           "and not listed.", "dim", color))
    if r.count_by is not None:
        c = r.count_by
        lines.append(f"COUNT BY {c.expr}: {c.distinct} distinct key(s)")
        width = max((len(str(x.count)) for x in c.counts), default=1)
        for x in c.counts:
            lines.append(f"  {str(x.count).rjust(width)}  {x.key}")
        if c.distinct > len(c.counts):
            lines.append(f"  ... {c.distinct - len(c.counts)} more keys (the 50 most frequent are listed): narrow "
                         "with a filter in the key expression, or count by a coarser key")
        if c.failed:
            first = c.first_error
            why = f"{first.type}: {first.message}" if first and first.message else (first.type if first else "?")
            lines.append(f"  {c.failed} instance(s) failed: the key expression {c.expr!r} raised {why}")
    if r.referrers is not None:
        lines.append(f"REFERRERS of the {r.shown} instance(s) in `instances`, by who holds them:")
        if not r.referrers:
            lines.append("  none found among GC-tracked objects (held only by untracked containers, or unreachable)")
        width = max((len(str(x.count)) for x in r.referrers), default=1)
        for x in r.referrers:
            where = x.referrer or "(no holder among the objects the garbage collector tracks)"
            lines.append(f"  {str(x.count).rjust(width)}  held in {where}")
        if r.referrers_elided:
            lines.append(f"  ... {r.referrers_elided} more owner paths (50 are listed): narrow `instances` with "
                         "limit to see those of fewer instances")
    return "\n".join(lines)


TOOL = Tool(
    name="vmtool", params=VmtoolParams, result=VmtoolResult, run=run, render=render,
    title="Live instances of a class; force GC",
    read_only=False, destructive=False,
    description=(
        "Find the live instances of a class in a running Python process (through the garbage collector) and "
        "look at them with an expression over `instances`: e.g. module=\"__main__\", cls=\"OrderService\", "
        "expr=\"[i.processed for i in instances]\". Reports the total found; `limit` cuts the list. "
        "`count_by` counts ALL instances by a key expression over `target` (one instance); `referrers` groups "
        "them by who holds them (owner paths such as Registry._by_topic[*]) to find what keeps leaked objects "
        "alive; `subclasses` includes subclass instances. Objects of types the GC does not track (int, str, "
        "classes with __slots__=() ) cannot be found. Read-only unless the server runs with --allow-mutating: "
        "then method calls on instances in `expr` (instances[0].stats()) and action=forceGc (full collection, "
        "reports what each generation freed) are allowed."),
)
