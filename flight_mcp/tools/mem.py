"""mem: live objects by type with the process's RSS (summary); what grows between two snapshots and
who holds the new objects (diff)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..models import Fact
from ..render import paint
from .base import Call, Cli, TimedParams, Tool
from .fields import Limit


class MemParams(TimedParams):
    action: Annotated[Literal["summary", "diff"], Cli(positional=True)] = Field(
        "summary", description="summary: live objects by type (count, total size) and the RSS. diff: two snapshots "
                               "`interval` seconds apart: the types that grew and who holds their new objects.")
    limit: Limit = 10
    order: Annotated[Literal["descending", "ascending"], Cli("--order")] = Field(
        "descending", description="Rows by total size (summary) or size change (diff): largest first, or smallest "
                                  "first.")
    interval: Annotated[float, Cli("-i", "--interval")] = Field(
        15.0, gt=0, le=3600, description="diff: seconds between the two snapshots (the call lasts that much longer "
                                         "than `timeout_s` allows for the rest).")


class TypeRow(Fact):
    type: str = Field(description="module.Qualname (builtins by their name).")
    count: int = Field(description="Live objects of the type (summary), or after the interval (diff).")
    size: int | None = Field(None, description="summary: their total size in bytes (sys.getsizeof of each; "
                                               "contents held in other objects are counted there).")
    count_delta: int | None = None
    size_delta: int | None = None
    estimated: bool = Field(False, description="The class defines __sizeof__ in Python: its basic size is "
                                               "counted instead (the target's code is never run).")


class Owner(Fact):
    path: str | None = Field(description="Who holds the objects, the way one reaches them: pkg.mod.CACHE[*] (a "
                                         "module global, then container levels), Registry._by_topic[*] (an "
                                         "instance attribute), 'closure of mod.func', 'frame of f (file:line)'. "
                                         "None: no holder among the GC-tracked objects.")
    count: int = Field(description="Sampled new objects held there (one object may be held in two places).")


class Grower(Fact):
    type: str
    count_delta: int
    size_delta: int
    new_found: int = Field(description="New objects found (at addresses the first snapshot did not have).")
    candidates_capped: bool = Field(description="Only the first 50,000 objects of the type were tested for newness.")
    sampled: int = Field(description="New objects whose holders were looked for.")
    owners: list[Owner]
    owners_elided: int = 0


class MemResult(Fact):
    action: Literal["summary", "diff"]
    limit: int
    order: Literal["descending", "ascending"]
    rss_bytes: int | None = Field(None, description="summary: resident set size of the process.")
    tracked_objects: int | None = Field(None, description="summary: objects the GC tracks (the ones counted).")
    tracked_bytes: int | None = Field(None, description="summary: their total size.")
    types_total: int | None = Field(None, description="summary: distinct types (rows beyond limit left out).")
    types: list[TypeRow] | None = None
    excluded_own: int | None = Field(None, description="summary: flight-mcp's own objects, left out.")
    interval_s: float | None = None
    rss_before: int | None = None
    rss_after: int | None = None
    tracked_before: int | None = None
    tracked_after: int | None = None
    types_changed: int | None = Field(None, description="diff: types whose count or size changed.")
    rows: list[TypeRow] | None = None
    growers: list[Grower] | None = Field(None, description="diff: the types that grew most in count (classes "
                                                           "defined in Python first), with who holds their new "
                                                           "objects.")
    snapshot_bytes: int | None = Field(None, description="diff: memory the first snapshot took in the target "
                                                         "(8 bytes per object id).")
    owners_ms: float | None = None
    keys_by_id: bool = Field(False, description="A metaclass of the target hashes or compares classes itself: types "
                                                "were counted by id (slower; its code never runs).")
    scan_ms: float = Field(description="Time the snapshots and counting took in the target.")
    longest_hold_ms: float = Field(description="Longest stretch the agent held the GIL without yielding to the "
                                               "application's threads.")


def run(p: MemParams, call: Call) -> MemResult:
    def on_event(ev: dict) -> None:
        if ev.get("phase") == "waiting":
            call.progress(0, None, f"mem diff: first snapshot taken; the second in {ev.get('interval_s')} s")
    timeout = p.timeout_s + (p.interval if p.action == "diff" else 0.0)
    return MemResult(**call.request(p, "mem", p.agent_args(), on_event=on_event, timeout=timeout))


def _size(n: int | None, signed: bool = False) -> str:
    if n is None:
        return "?"
    sign = ("+" if n > 0 else "-" if n < 0 else "") if signed else ("-" if n < 0 else "")
    v = abs(n)
    for unit in ("B", "KB", "MB", "GB"):
        if v < 1024 or unit == "GB":
            return f"{sign}{v:.0f} {unit}" if unit == "B" else f"{sign}{v:.2f} {unit}"
        v /= 1024.0
    return str(n)


def _table(rows: list[tuple[str, str, str]], color: bool) -> list[str]:
    width = max([len("types")] + [len(r[0]) for r in rows])
    lines = [paint(f"{'types'.rjust(width)} | {'# objects'.rjust(11)} | {'total size'.rjust(12)}", "bold", color),
             f"{'=' * width} | {'=' * 11} | {'=' * 12}"]
    for name, count, size in rows:
        lines.append(f"{name.rjust(width)} | {count.rjust(11)} | {size.rjust(12)}")
    return lines


UNTRACKED = ("objects the GC does not track (int, float, str, bytes; tuples and dicts holding only those) "
             "are not enumerated")


def render(r: MemResult, color: bool) -> str:
    if r.action == "summary":
        lines = [f"RSS {_size(r.rss_bytes)}; {r.tracked_objects:,} GC-tracked objects take "
                 f"{_size(r.tracked_bytes)} in {r.types_total} types ({UNTRACKED})"]
        lines += _table([(t.type + (" (estimated)" if t.estimated else ""), str(t.count), _size(t.size))
                         for t in r.types or []], color)
        if r.types_total and r.types_total > len(r.types or []):
            lines.append(f"... {r.types_total - len(r.types or [])} more types (raise --limit to see them)")
        lines.append(paint(f"scanned in {r.scan_ms:.0f} ms, the GIL held at most {r.longest_hold_ms:.1f} ms at a "
                           f"time; {r.excluded_own} objects of flight-mcp left out", "dim", color))
        return "\n".join(lines)
    rss = ""
    if r.rss_before is not None and r.rss_after is not None:
        rss = (f"RSS {_size(r.rss_before)} -> {_size(r.rss_after)} ({_size(r.rss_after - r.rss_before, True)}, "
               "the scan's own memory included); ")
    lines = [f"mem diff over {r.interval_s:g} s: {rss}GC-tracked objects {r.tracked_before:,} -> "
             f"{r.tracked_after:,}; {r.types_changed} types changed"]
    lines += _table([(t.type + (" (estimated)" if t.estimated else ""), f"{t.count_delta:+d}",
                      _size(t.size_delta, True)) for t in r.rows or []], color)
    if r.types_changed and r.types_changed > len(r.rows or []):
        lines.append(f"... {r.types_changed - len(r.rows or [])} more types changed (raise --limit to see them)")
    held = [g for g in r.growers or [] if g.new_found]
    if held:
        lines.append(paint("WHO HOLDS THE NEW OBJECTS (of the types that grew most)", "bold", color))
        for g in held:
            lines.extend(_grower_lines(g))
    else:
        lines.append("no new objects among the types that grew in count" if r.growers else "no type grew in count")
    lines.append(paint(f"snapshots and counting {r.scan_ms:.0f} ms, owners {r.owners_ms or 0:.0f} ms, the GIL held at "
                       f"most {r.longest_hold_ms:.1f} ms at a time; first snapshot kept as "
                       f"{_size(r.snapshot_bytes)} of ids; {UNTRACKED}", "dim", color))
    return "\n".join(lines)


def _where(o: Owner) -> str:
    return o.path if o.path is not None else ("no holder among GC-tracked objects (held by C code, a running "
                                              "frame, or unreachable garbage awaiting collection)")


def _grower_lines(g: Grower) -> list[str]:
    head = f"{g.count_delta:+d} {g.type}"
    if not g.owners:
        return [f"{head}: its new objects are held by flight-mcp only"]
    top = g.owners[0]
    lines = [f"{head}, held in {_where(top)}  ({top.count} of {g.sampled} sampled new objects)"]
    for o in g.owners[1:]:
        lines.append(f"    also {o.count} held in {_where(o)}")
    if g.owners_elided:
        lines.append(f"    ... {g.owners_elided} more holders")
    if g.candidates_capped:
        lines.append("    (newness tested on the first 50,000 objects of the type only)")
    return lines


TOOL = Tool(
    name="mem", params=MemParams, result=MemResult, run=run, render=render,
    title="What memory holds, and what grows",
    description=(
        "Memory of a live Python process. action=summary: live objects by type (count, total size) with the "
        "process's RSS. action=diff: two snapshots `interval` seconds apart, the types that grew (count and size "
        "change) and, for the types that grew most, WHO HOLDS THE NEW OBJECTS grouped by owner path, e.g. "
        "\"+792 Subscription, held in SubscriptionRegistry._by_topic[*][*]\": one call points at a leak. "
        "Example: {\"action\": \"diff\", \"interval\": 10}. Counts the objects the garbage collector tracks: ints, "
        "strs, bytes and containers holding only those are not enumerated (compare the RSS). Works in slices, "
        "yielding the GIL, so the application keeps running; keeps nothing between calls; flight-mcp's own "
        "objects are left out. Read-only."),
)
