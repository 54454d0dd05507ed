"""What the trace and watch tools share: where the function is, how long to wait, the summary."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from .base import Call, Cli, TimedParams

CAPTURE_TIMEOUT_S = 30.0
# The agent stops at the deadline (timeout_s less what the attach took) and answers with what it
# captured; the answer may take a little longer to arrive.
REPLY_MARGIN_S = 10.0


class FunctionParams(TimedParams):
    module: Annotated[str, Cli("--mod", positional=True)] = Field(
        description="Module name as the target imported it ('__main__' for the script that was run). "
                    "Never imported by flight-mcp: it must already be loaded in the target.")
    cls: Annotated[str | None, Cli("--cls", positional=True)] = Field(
        None, description="Class defining the method (dotted for nested classes); omit for a module-level function.")
    method: Annotated[str, Cli("--func", "--method", positional=True)] = Field(
        description="Function or method name (methods, classmethods, staticmethods, async functions and "
                    "generators all work; decorated functions are unwrapped to the real one).")
    nested_method: Annotated[str | None, Cli("-nm", "--nested-method", "--nested_method")] = Field(
        None, description="Instead of `method`, instrument the function of this name defined directly inside it.")
    filter_expr: Annotated[str | None, Cli("-f", "--filter_expr", "--filter")] = Field(
        None, description="Python expression; only calls where it is truthy count. Names: target (the instance "
                          "for methods, else None), args (WITHOUT self), kwargs, return_obj, cost (ms). "
                          "Example: \"args[0] >= 1\". A filter that raises counts the call as not matching.")
    limits: Annotated[int, Cli("-n", "--limits", "--limit")] = Field(
        10, ge=1, le=10000, description="Stop after capturing this many invocations.")
    timeout_s: float = Field(CAPTURE_TIMEOUT_S, gt=0, le=3600,
                             description="Deadline in seconds, attach included: the call returns what it "
                                         "captured by then.")


class Summary(BaseModel):
    """Why the capture stopped and what it saw: present in every trace/watch result."""
    target: str = Field(description="The instrumented function, module.Class.method.")
    kind: str = Field(description="function, generator or coroutine.")
    file: str
    line: int
    mechanism: str = Field(description="sys.monitoring (Python >= 3.12), frame evaluator (<= 3.11), or code "
                           "trampoline (<= 3.11 fallback; the text says why the evaluator could not be used).")
    started: str
    duration_s: float
    seen: int = Field(description="Calls of the function while instrumented.")
    matched: int = Field(description="Calls that passed the filter (and -e for watch).")
    skipped: int = Field(0, description="Matched calls dropped by a threshold (trace -et).")
    captured: int
    limit: int
    stopped: Literal["limit", "deadline", "cancel"]
    errors: list[dict] = Field(default_factory=list, description="Expressions that failed: flag, expr, failures, message.")


def summary_of(raw: dict) -> dict:
    t = raw["target"]
    return dict(target=t["label"], kind=t["kind"], file=t["file"], line=t["line"], mechanism=t["mechanism"],
                started=raw["started"], duration_s=raw["duration_s"], seen=raw["seen"], matched=raw["matched"],
                skipped=raw.get("skipped", 0), captured=raw["captured"], limit=raw["limit"],
                stopped=raw["stopped"], errors=raw.get("errors", []))


def request(p: FunctionParams, call: Call, cmd: str, args: dict) -> dict:
    def on_event(ev: dict) -> None:
        call.progress(ev.get("captured", 0), ev.get("limit"), ev.get("message", ""))

    args = dict(args, module=p.module, cls=p.cls, method=p.method, nested_method=p.nested_method,
                filter_expr=p.filter_expr, limits=p.limits)
    return call.request(p, cmd, args, on_event=on_event, budget_arg="duration_s",
                        margin=REPLY_MARGIN_S)


_STOP_WHY = {"limit": "the limit of {limit} was reached",
             "deadline": "the deadline of {duration_s}s passed",
             "cancel": "it was cancelled"}


def summary_line(s: Summary, what: str) -> str:
    why = _STOP_WHY[s.stopped].format(limit=s.limit, duration_s=s.duration_s)
    line = (f"{what} {s.target}: {s.captured} of {s.limit} captured; {s.seen} calls seen, {s.matched} matched"
            + (f", {s.skipped} below -et" if s.skipped else "") + f"; stopped because {why}.")
    return line


def empty_hint(s: Summary, what: str) -> str:
    """Why nothing was captured, and what to try."""
    where = f"{s.target} ({s.file}:{s.line}, via {s.mechanism})"
    if s.seen == 0:
        return (f"No call of {where} happened during the {s.duration_s}s it was instrumented. Make the "
                f"application call it (send a request) or raise timeout_s. Calls already running when it started "
                f"are not seen (only calls that start while instrumented); the stack tool shows what runs now.")
    if s.matched == 0:
        return (f"{where} was called {s.seen} times in {s.duration_s}s but no call passed the filter"
                f"{'/-e' if what == 'watch' else ''}; loosen it.")
    if s.skipped:  # trace -et only
        return (f"{where} was called {s.seen} times in {s.duration_s}s; {s.skipped} matching calls were below "
                f"the -et threshold; lower -et.")
    return (f"{where} was called {s.seen} times in {s.duration_s}s and {s.matched} calls matched, but none "
            f"ended before the capture stopped (only calls that end while instrumented are captured); raise "
            f"timeout_s.")


def render_errors(s: Summary) -> list[str]:
    return [f"warning: {e['message']}" for e in s.errors]
