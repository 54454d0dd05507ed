"""watch: what real calls of a function receive, return, raise and cost, through an expression."""
from __future__ import annotations

import os

from typing import Annotated

from pydantic import Field

from ..models import ExceptionFact, Fact, ValueView
from ..render import (NO_VIEW, escape, escaped, exception_line, paint, traceback_lines, type_label, view_lines,
                      wall_time)
from ..expressions import CAPTURE_NAMES, names_known
from .base import Call, Cli, Tool
from .capture_common import (FunctionParams, Progress, Summary, empty_hint, refuse_hopeless_filter, render_failures, request,
                             summary_line)
from .fields import READ_ONLY_RULES, Expand, Raw, Verbose

SEPARATOR = "─" * 60


class WatchParams(FunctionParams):
    expr: Annotated[str, Cli("--expr"), names_known(*CAPTURE_NAMES)] = Field(
        "args,kwargs", min_length=1,
        description="Python expression shown for each call. Names: target (the instance for methods), args "
                    "(WITHOUT self), kwargs, params (every argument by parameter name), return_obj, cost (ms). "
                    "Examples: \"params\", \"return_obj\", \"args[0], cost\", "
                    "\"target.__dict__\"." + READ_ONLY_RULES)
    exception: Annotated[bool, Cli("-e", "--exception")] = Field(
        False, description="Capture only calls that raised (with their traceback).")
    expand: Expand = 2
    verbose: Verbose = False
    raw: Raw = False


class Caller(Fact):
    name: str = Field(description="The calling function, Class.method.")
    file: str
    line: int | None = None


class Record(Fact):
    time: float = Field(description="When the call started (epoch seconds).")
    cost_ms: float
    is_exp: bool = Field(description="The call raised.")
    thread: str
    tid: int
    daemon: bool | None = None
    view: ValueView | None = Field(None, description="The expression's value.")
    expr_error: ExceptionFact | None = Field(None, description="Why the expression failed on this call.")
    exception: ExceptionFact | None = Field(None, description="What the call raised, with its traceback.")
    line: int | None = Field(None, description="The line the call returned at (its return statement) or raised at "
                                               "(where the exception left the function); None when unknown.")
    caller: Caller | None = Field(None, description="Where the call was made from: the calling function and line.")


class WatchResult(Summary):
    expr: str
    records: list[Record] = Field(description="The captured calls, in the order they started.")


def run(p: WatchParams, call: Call) -> WatchResult:
    def show(ev: Progress) -> str:
        rec = escaped(Record.model_validate(ev.record))
        return "\n".join(render_record(rec, escape(ev.target), p.expr, call.stream_color))

    result = refuse_hopeless_filter(WatchResult.model_validate(request(p, call, "watch", show)))
    result.records.sort(key=lambda r: r.time)   # by start time, as each is stamped (they end in another order)
    return result.spoken_in(WatchParams, call)


def _rows(rows: list[tuple[str, str]], width: int) -> list[str]:
    """flight_profiler's label column: `  LABEL:` padded to width, continuation lines aligned."""
    out = []
    for label, text in rows:
        lines = text.split("\n")
        out.append(f"  {(label + ':').ljust(width)}{lines[0]}")
        out.extend(" " * (2 + width) + line for line in lines[1:])
    return out


def ended_at(rec: Record) -> str:
    """` returned at line 42` / ` raised at line 57`, or nothing when the line is unknown."""
    if rec.line is None:
        return ""
    return f" {'raised' if rec.is_exp else 'returned'} at line {rec.line}"


def called_from(rec: Record) -> str:
    c = rec.caller
    if c is None:
        return ""
    return f" called from {c.name} ({os.path.basename(c.file)}:{c.line})"


def render_record(rec: Record, method: str, expr: str, color: bool) -> list[str]:
    mark = paint("✗", "red", color) if rec.is_exp else paint("✓", "green", color)
    title = (f"{mark} {wall_time(rec.time)} method={method} cost={rec.cost_ms:.6f}ms is_exp={rec.is_exp} "
             f"thread={rec.thread}{ended_at(rec)}{called_from(rec)} result={{")
    if rec.expr_error is not None:
        rows = [("EXPR", expr), ("WATCH_FAIL_INFO", exception_line(rec.expr_error))]
        width = 20
    else:
        view = rec.view or NO_VIEW
        rows = [("EXPR", expr), ("TYPE", type_label(view)), ("VALUE", "\n".join(view_lines(view)))]
        width = 12 if rec.is_exp else 8
    if rec.is_exp:
        rows.append(("EXCEPTION", "\n".join(traceback_lines(rec.exception)) if rec.exception else ""))
    return [SEPARATOR, title, *_rows(rows, width), "}"]


def render(r: WatchResult, color: bool) -> str:
    out: list[str] = []
    for rec in r.records:
        if (rec.time, rec.tid) not in r._streamed:   # else shown as it arrived
            out.extend(render_record(rec, r.target, r.expr, color))
    out.append(SEPARATOR if r.records else "")
    out.append(summary_line(r, "watch"))
    if not r.records:
        out.append(empty_hint(r, "watch"))
    out.extend(render_failures(r))
    return "\n".join(out).strip("\n")


TOOL = Tool(
    name="watch", params=WatchParams, result=WatchResult, run=run, render=render,
    title="Watch a function's calls",
    description=(
        "Capture real calls of one function in a live Python process: its arguments, return value or exception "
        "(with traceback), the line it returned or raised at, who called it (function and line), and cost, seen "
        "through `expr` (names target, args "
        "without self, kwargs, return_obj, cost in ms). filter_expr keeps only calls where it is truthy (e.g. \"cost > 50\" or "
        "\"args[0] == 'u1'\"); exception=true keeps only calls that raised. Waits for up to `limit` captured calls "
        "or `timeout_s` and says how many calls it saw, matched and captured. Values "
        "are bounded; use expand for more depth or a narrower expr. Instrumentation is removed when the call "
        "returns. Read-only."),
)
