"""trace: the call tree under each invocation of a function, with the time of every sub-call."""
from __future__ import annotations

import os
from typing import Annotated

from pydantic import BaseModel, Field

from ..render import paint
from .base import Call, Cli, Tool
from .capture_common import FunctionParams, Summary, empty_hint, render_errors, request, summary_line, summary_of

SEPARATOR = "─" * 60


class TraceParams(FunctionParams):
    interval: Annotated[float, Cli("-i", "--interval")] = Field(
        0.1, ge=0, description="Hide sub-calls cheaper than this many milliseconds (ignored when depth is set).")
    entrance_time: Annotated[float, Cli("-et", "--entrance_time", "--entrance-time")] = Field(
        0, ge=0, description="Skip whole invocations cheaper than this many milliseconds (they do not count "
                             "toward limits).")
    depth: Annotated[int, Cli("-d", "--depth")] = Field(
        -1, ge=-1, description="Show this many levels (1 = the function alone, 2 = with its direct sub-calls); "
                               "-1 = unlimited. When set, interval is ignored.")


class Node(BaseModel):
    name: str
    qualname: str
    file: str = Field(description="Source file, or '<built-in>' for C functions, '' for [await]/[yield] gaps.")
    line: int
    cost_ms: float
    children: list["Node"] = Field(default_factory=list)


class Invocation(BaseModel):
    time: str
    thread: str
    tid: int
    daemon: bool | None
    cost_ms: float
    root: Node
    hidden_nodes: int = Field(0, description="Sub-calls left out by depth or interval.")
    elided_nodes: int = Field(0, description="Sub-calls left out by the size bound (500 shown per invocation).")
    dropped_nodes: int = Field(0, description="Sub-calls not recorded (more than 100,000 in one invocation).")
    exception: str | None = Field(None, description="The exception that ended the call, if it raised.")


class TraceResult(Summary):
    depth: int
    interval_ms: float
    entrance_ms: float
    invocations: list[Invocation]
    recorder: str = Field("c", description="What recorded the trees: 'c' (native profile hook, the normal case) "
                                           "or 'python' (fallback when the native one cannot load; slower).")
    recorder_fallback: str | None = Field(None, description="Why the Python recorder recorded instead of the native "
                                                            "one (each traced call then costs 30-90x more).")
    profiler_busy: int = Field(0, description="Calls not recorded because their thread was running another "
                                              "C-level profiler (such as cProfile).")


def run(p: TraceParams, call: Call) -> TraceResult:
    if p.depth == 0:
        from ..errors import FlightError
        raise FlightError("usage", "depth must be >= 1 (1 = the traced function alone, 2 = with its direct "
                          "sub-calls), or -1 for the full tree.")
    raw = request(p, call, "trace", {"interval": p.interval, "entrance_time": p.entrance_time, "depth": p.depth})
    return TraceResult(**summary_of(raw), depth=raw["depth"], interval_ms=raw["interval_ms"],
                       entrance_ms=raw["entrance_ms"], invocations=raw["invocations"],
                       recorder=raw.get("recorder", "c"), recorder_fallback=raw.get("recorder_fallback"),
                       profiler_busy=raw.get("profiler_busy", 0))


def _cost(ms: float) -> str:
    return f"[{round(ms, 3)}ms]"


def _color(ms: float, parent_ms: float) -> str:
    share = ms / parent_ms if parent_ms > 0 else 0
    return "red" if share > 0.5 else "yellow" if share > 0.2 else "green" if share > 0.05 else "faint"


def _where(n: Node) -> str:
    if n.file == "<built-in>":
        return "<built-in>"
    if not n.file:
        return ""
    return f"{os.path.basename(n.file)}:{n.line}"


def _node_line(n: Node, parent_ms: float, color: bool) -> str:
    text = f"{paint(_cost(n.cost_ms), _color(n.cost_ms, parent_ms), color)} {n.name}"
    where = _where(n)
    return f"{text} {where}" if where else text


def render_tree(root: Node, color: bool) -> list[str]:
    lines = [_node_line(root, root.cost_ms, color)]

    def walk(node: Node, prefix: str) -> None:
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            lines.append(prefix + ("└─ " if last else "├─ ") + _node_line(child, node.cost_ms, color))
            walk(child, prefix + ("   " if last else "│  "))

    walk(root, "")
    return lines


def render_invocation(inv: Invocation, color: bool) -> list[str]:
    title = (f"🔍 {inv.time} thread={inv.thread} tid={inv.tid} daemon={inv.daemon} cost={inv.cost_ms:.3f}ms")
    out = [SEPARATOR, paint(title, "bold", color), *render_tree(inv.root, color)]
    if inv.exception:
        out.append(f"  raised {inv.exception}")
    if inv.elided_nodes or inv.dropped_nodes:
        out.append(f"  ... {inv.elided_nodes + inv.dropped_nodes} more sub-calls not shown (size bound): "
                   "narrow with depth (-d) or interval (-i)")
    return out


def render(r: TraceResult, color: bool) -> str:
    out: list[str] = []
    for inv in r.invocations:
        out.extend(render_invocation(inv, color))
    out.append(SEPARATOR if r.invocations else "")
    out.append(summary_line(r, "trace"))
    if not r.invocations:
        out.append(empty_hint(r, "trace"))
    elif any(i.hidden_nodes for i in r.invocations) and r.depth == -1 and r.interval_ms > 0:
        out.append(f"Sub-calls under {r.interval_ms}ms are hidden (-i 0 shows them).")
    if r.recorder == "python":
        out.append("Recorded by the Python recorder, which makes traced calls 30-90x slower than the native one: "
                   f"{r.recorder_fallback or 'the native recorder could not be used'}.")
    if r.profiler_busy:
        out.append(f"{r.profiler_busy} calls were not recorded: their thread runs another profiler (such as "
                   "cProfile), which trace cannot displace and restore; stop it or trace another thread's calls.")
    out.extend(render_errors(r))
    return "\n".join(x for x in out if x is not None).strip("\n")


TOOL = Tool(
    name="trace", params=TraceParams, result=TraceResult, run=run, render=render, title="Trace a function's call tree",
    description=(
        "Record the call tree under real invocations of one function in a live Python process: every sub-call "
        "(Python functions and C built-ins such as time.sleep or socket reads) with its own time, so you see "
        "which sub-call makes it slow. Waits for up to `limits` calls (default 10) or `timeout_s` (default 30 s), "
        "whichever comes first, and always says how many calls it saw, matched and captured. Use depth=2 for an "
        "overview, interval to hide cheap sub-calls, entrance_time to keep only slow invocations, filter_expr to "
        "pick calls by argument (args excludes self), nested_method for a function defined inside `method`. "
        "The instrumentation is removed when the call returns. Read-only."),
)
