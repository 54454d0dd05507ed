"""trace: the call tree under each invocation of a function, with the time of every sub-call."""
from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import Field, model_validator

from ..models import ExceptionFact, Fact, Frame
from ..render import escaped, exception_line, paint, wall_time
from ..errors import speak
from .base import Call, Cli, Tool, cli_name
from .capture_common import (FunctionParams, Progress, Summary, empty_hint, refuse_hopeless_filter, render_failures, request,
                             summary_line)

SEPARATOR = "─" * 60


class TraceParams(FunctionParams):
    interval: Annotated[float, Cli("-i", "--interval")] = Field(
        0.1, ge=0, description="Hide sub-calls cheaper than this many milliseconds (ignored when depth is set).")
    entrance_time: Annotated[float, Cli("-et", "--entrance_time", "--entrance-time")] = Field(
        0, ge=0, description="Skip whole invocations cheaper than this many milliseconds (they do not count "
                             "toward limit).")
    depth: Annotated[int, Cli("-d", "--depth")] = Field(
        -1, description="Show this many levels (1 = the function alone, 2 = with its direct sub-calls); "
                        "-1 = unlimited. When set, interval is ignored.")

    @model_validator(mode="after")
    def _depth_is_levels(self) -> "TraceParams":
        if self.depth == 0 or self.depth < -1:
            raise ValueError(f"{{arg:depth}} must be >= 1 (1 = the traced function alone, 2 = with its direct "
                             f"sub-calls), or -1 for the full tree; got {self.depth}")
        return self


class Node(Frame):
    """A call in the tree: a Python function (kind python), a C function called from Python (kind
    builtin, no file), or the time the traced call was suspended at await/yield (kind gap)."""
    cost_ms: float
    raised: bool = Field(False, description="The call ended by an exception (kept in the tree however cheap, up to "
                                            "20 per invocation).")
    exception: str | None = Field(None, description="The type of the exception it raised; null when not seen (the "
                                                    "events do not give it for built-ins, nor on Python <= 3.11 "
                                                    "without the frame evaluator, unless the exception was later "
                                                    "handled by running code or left the traced call).")
    raised_at: int | None = Field(None, description="The line it raised at (a built-in: its caller's line).")
    children: list["Node"] = Field(default_factory=list)


class Invocation(Fact):
    time: float = Field(description="When the call started (epoch seconds).")
    thread: str
    tid: int
    daemon: bool | None
    cost_ms: float
    root: Node
    hidden_nodes: int = Field(0, description="Sub-calls left out by depth or interval.")
    elided_nodes: int = Field(0, description="Sub-calls left out by the size bound (500 shown per invocation).")
    dropped_nodes: int = Field(0, description="Sub-calls not recorded (more than 100,000 in one invocation).")
    exception: ExceptionFact | None = Field(None, description="The exception that ended the call, if it raised.")


class TraceResult(Summary):
    depth: int
    interval: float
    entrance_time: float
    invocations: list[Invocation] = Field(description="The captured calls, in the order they started.")
    recorder: Literal["c", "python"] = Field(
        "c", description="What recorded the trees: 'c' (native profile hook, the normal case) or 'python' "
                         "(fallback when the native one cannot load; slower).")
    recorder_fallback: str | None = Field(None, description="Why the Python recorder recorded instead of the native "
                                                            "one (each traced call then costs 30-90x more).")
    profiler_busy: int = Field(0, description="Calls not recorded because their thread was running another "
                                              "C-level profiler (such as cProfile).")


def run(p: TraceParams, call: Call) -> TraceResult:
    def show(ev: Progress) -> str:
        def say(text: str) -> str:
            return speak(text, (lambda n: cli_name(TraceParams, n)) if call.on_cli else str)
        return "\n".join(render_invocation(escaped(Invocation.model_validate(ev.record)), call.stream_color, say))

    result = refuse_hopeless_filter(TraceResult.model_validate(request(p, call, "trace", show)))
    result.invocations.sort(key=lambda i: i.time)   # by start time, as each is stamped
    return result.spoken_in(TraceParams, call)


def _cost(ms: float) -> str:
    return f"[{round(ms, 3)}ms]"


def _color(ms: float, parent_ms: float) -> str:
    share = ms / parent_ms if parent_ms > 0 else 0
    return "red" if share > 0.5 else "yellow" if share > 0.2 else "green" if share > 0.05 else "faint"


def _where(n: Node) -> str:
    if n.kind == "builtin":
        return "<built-in>"
    if not n.file:
        return ""
    return f"{os.path.basename(n.file)}:{n.line}"


def raised_text(n: Node) -> str:
    """` raised KeyError at line 57` for a call that ended by an exception, else ``."""
    if not n.raised:
        return ""
    text = " raised " + (n.exception or "an exception")
    if n.raised_at is not None and n.kind == "python":
        text += f" at line {n.raised_at}"
    return text


def _node_line(n: Node, parent_ms: float, color: bool) -> str:
    text = f"{paint(_cost(n.cost_ms), _color(n.cost_ms, parent_ms), color)} {n.qualname or n.name}"
    where = _where(n)
    text = f"{text} {where}" if where else text
    raised = raised_text(n)
    return text + paint(raised, "red", color) if raised else text


def render_tree(root: Node, color: bool) -> list[str]:
    lines = [_node_line(root, root.cost_ms, color)]

    def walk(node: Node, prefix: str) -> None:
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            lines.append(prefix + ("└─ " if last else "├─ ") + _node_line(child, node.cost_ms, color))
            walk(child, prefix + ("   " if last else "│  "))

    walk(root, "")
    return lines


def render_invocation(inv: Invocation, color: bool, say=lambda text: text) -> list[str]:
    title = (f"🔍 {wall_time(inv.time)} thread={inv.thread} tid={inv.tid} daemon={inv.daemon} cost={inv.cost_ms:.3f}ms")
    out = [SEPARATOR, paint(title, "bold", color), *render_tree(inv.root, color)]
    if inv.exception:
        out.append(f"  raised {exception_line(inv.exception)}")
    if inv.elided_nodes or inv.dropped_nodes:
        out.append(say(f"  ... {inv.elided_nodes + inv.dropped_nodes} more sub-calls not shown (size bound): "
                       "narrow with {arg:depth} or {arg:interval}"))
    return out


def render(r: TraceResult, color: bool) -> str:
    out: list[str] = []
    for inv in r.invocations:
        if (inv.time, inv.tid) not in r._streamed:   # else shown as it arrived
            out.extend(render_invocation(inv, color, r.say))
    out.append(SEPARATOR if r.invocations else "")
    out.append(summary_line(r, "trace"))
    if not r.invocations:
        out.append(empty_hint(r, "trace"))
    elif any(i.hidden_nodes for i in r.invocations) and r.depth == -1 and r.interval > 0:
        out.append(r.say(f"Sub-calls under {r.interval}ms are hidden ({{arg:interval}} 0 shows them)."))
    if r.recorder == "python":
        out.append("Recorded by the Python recorder, which makes traced calls 30-90x slower than the native one: "
                   f"{r.recorder_fallback or 'the native recorder could not be used'}.")
    if r.profiler_busy:
        out.append(f"{r.profiler_busy} calls were not recorded: their thread runs another profiler (such as "
                   "cProfile), which trace cannot displace and restore; stop it or trace another thread's calls.")
    out.extend(render_failures(r))
    return "\n".join(x for x in out if x is not None).strip("\n")


TOOL = Tool(
    name="trace", params=TraceParams, result=TraceResult, run=run, render=render, title="Trace a function's call tree",
    description=(
        "Record the call tree under real invocations of one function in a live Python process: every sub-call "
        "(Python functions and C built-ins such as time.sleep or socket reads) with its own time, so you see "
        "which sub-call makes it slow; a sub-call that raised says so with the exception's type and line, even "
        "when the exception was caught higher up. Waits for up to `limit` calls or `timeout_s`, whichever comes "
        "first, and always says how many calls it saw, matched and captured. Use depth=2 for an "
        "overview, interval to hide cheap sub-calls, entrance_time to keep only slow invocations, filter_expr to "
        "pick calls by argument (args excludes self), nested_method for a function defined inside `method`. "
        "The instrumentation is removed when the call returns. Read-only."),
)
