"""What the trace and watch tools share: where the function is, how long to wait, the summary, the
facts of failed expressions and of progress, and the sentences about them.

The agent answers with facts named as these models' fields (agent/capture.py); the host writes
every sentence, naming arguments in the caller's language: run() makes the Result remember it
(`spoken_in`), and the renderer writes `{arg:NAME}` through `Summary.say`.
"""
from __future__ import annotations

from typing import Annotated, Callable, Literal

from pydantic import Field, PrivateAttr, ValidationError

from ..errors import FlightError, speak
from ..session import gil
from ..models import ExceptionFact, Fact, GilHolder
from ..render import wall_time
from .base import Call, Cli, TimedParams, cli_name
from . import gil_wait
from .fields import ClassName, FilterExpr, Limit, Method, Module

CAPTURE_TIMEOUT_S = 30.0
# The agent stops at the deadline (timeout_s less what the attach took) and answers with what it
# captured; the answer may take a little longer to arrive.
REPLY_MARGIN_S = 10.0


class FunctionParams(TimedParams):
    module: Module
    cls: ClassName = None
    method: Method
    nested_method: Annotated[str | None, Cli("-nm", "--nested-method", "--nested_method")] = Field(
        None, description="Instead of `method`, instrument the function of this name defined directly inside it.")
    filter_expr: FilterExpr = None
    limit: Limit = 10
    timeout_s: float = Field(CAPTURE_TIMEOUT_S, gt=0, le=3600,
                             description="Deadline in seconds, attach included: the call returns what it "
                                         "captured by then.")


class ExpressionFailure(Fact):
    """An expression that raised on some calls (those calls did not match, or were shown without a value)."""
    arg: Literal["filter_expr", "expr"] = Field(description="The argument holding the expression.")
    expr: str
    failures: int = Field(description="Calls it failed on.")
    error: ExceptionFact = Field(description="The first failure (type and message).")
    refused: bool = Field(False, description="The read-only mode refused an operation (error.message says "
                                             "which and what to do instead), rather than the expression raising.")


class GilGap(Fact):
    """A time the capture's own thread in the agent could not run: another thread held the GIL (one long
    C call), so no Python code ran in the process, the instrumented function included."""
    at: float = Field(description="When it began (epoch seconds).")
    ms: float = Field(description="How long it lasted (a lower bound).")


class Summary(Fact):
    """Why the capture stopped and what it saw: present in every trace/watch result."""
    target: str = Field(description="The instrumented function, module.Class.method.")
    kind: str = Field(description="function, generator or coroutine.")
    signature: str = Field("", description="Its parameters, the instance left out: `(order_id, amount=100.0)`; "
                                           "expressions see them by name in `params`.")
    file: str
    line: int
    mechanism: str = Field(description="sys.monitoring (Python >= 3.12), frame evaluator (<= 3.11), or code "
                           "trampoline (<= 3.11 fallback; the text says why the evaluator could not be used).")
    started: float = Field(description="When instrumenting started (epoch seconds).")
    duration_s: float = Field(description="How long the function was instrumented.")
    seen: int = Field(description="Calls of the function while instrumented.")
    matched: int = Field(description="Calls that passed the filter (and exception, for watch).")
    skipped: int = Field(0, description="Matched calls below trace's entrance_time.")
    captured: int
    not_kept: int = Field(0, description="Captured calls left out of this answer: only the latest 1000 are kept "
                                         "(each was still counted, and reported as progress when it arrived).")
    limit: int
    stopped: Literal["limit", "deadline", "cancel", "filter_failed"]
    expression_failures: list[ExpressionFailure] = Field(default_factory=list)
    gil_gaps: list[GilGap] = Field(default_factory=list, description="Times the GIL was held (by one long C call) for "
                                   "0.5s or more while capturing: no call could run, nor be captured, then. The first 20.")
    gil_gaps_not_kept: int = Field(0, description="Further such times, left out of gil_gaps.")
    gil_gap_holder: GilHolder | None = Field(None, description="The thread seen holding the GIL during one of them, "
                                                               "read from outside (None: not read).")

    # How the text names arguments: the MCP name unless run() says the caller is on the CLI.
    _name_of: Callable[[str], str] = PrivateAttr(default=str)
    # (time, tid) of the captures shown as they arrived (call.stream): the text leaves them out.
    _streamed: set = PrivateAttr(default_factory=set)

    def spoken_in(self, params: type[TimedParams], call: Call) -> "Summary":
        """This result, rendered in the caller's language (flags on the CLI, argument names over MCP)."""
        if call.on_cli:
            self._name_of = lambda n: cli_name(params, n)
        self._streamed = set(call.streamed)
        return self

    def say(self, text: str) -> str:
        return speak(text, self._name_of)


class Progress(Fact):
    """A progress event of the agent: one more call captured."""
    captured: int
    limit: int
    target: str
    cost_ms: float
    thread: str | None = Field(None, description="trace: the thread it ran on.")
    exception: str | None = Field(None, description="watch: the type of the exception it raised.")
    record: dict | None = Field(None, description="The capture itself (watch's Record, trace's Invocation): the "
                                                  "command line shows each as it arrives.")


def progress_line(ev: Progress) -> str:
    line = f"{ev.target} {ev.cost_ms:.3f}ms"
    if ev.thread is not None:
        line += f" on {ev.thread}"
    if ev.exception is not None:
        line += f" raised {ev.exception}"
    return line


def request(p: FunctionParams, call: Call, cmd: str, show: Callable[["Progress"], str] | None = None) -> dict:
    """The capture: p's arguments, its own deadline as timeout_s (what the attach left of it).
    show: the text of one capture, streamed to the caller as it arrives (call.stream: the CLI)."""
    last = {"captured": 0, "limit": p.limit}

    def on_event(ev: dict) -> None:
        if "gil_gap" in ev:
            said_gil_gap(ev, call, last["captured"], last["limit"], stream=show is not None)
            return
        try:
            fact = Progress.model_validate(ev)
        except ValidationError:
            return   # progress is a courtesy: a fact we do not know does not end the capture
        last.update(captured=fact.captured, limit=fact.limit)
        call.progress(fact.captured, fact.limit, progress_line(fact))
        if show is not None and fact.record is not None and call.stream is not None:
            try:
                text = show(fact)
            except ValidationError:
                return   # shown with the final answer instead
            call.stream(text)
            call.streamed.add((fact.record.get("time"), fact.record.get("tid")))

    answer = call.request(p, cmd, p.agent_args(), on_event=on_event, budget_arg="timeout_s", margin=REPLY_MARGIN_S)
    return with_gil_gap_holder(answer)


def said_gil_gap(ev: dict, call: Call, done: int, total: int, stream: bool) -> None:
    """A GIL gap the agent saw during a capture or monitor (ev["gil_gap"]), said as progress, and on the
    command line as it happens when the command streams."""
    try:
        gap = GilGap.model_validate(ev["gil_gap"])
    except ValidationError:
        return
    text = gil_gap_progress(gap)
    call.progress(done, total, text)
    if stream and call.stream is not None:
        call.stream(text)


def with_gil_gap_holder(answer: dict) -> dict:
    """The answer, with the thread seen holding the GIL from outside during its gaps, when one was read."""
    held = gil.held_during()
    if held is not None and answer.get("gil_gaps"):
        answer["gil_gap_holder"] = held
    return answer


def gil_gap_progress(g: GilGap) -> str:
    return f"GIL held {g.ms / 1000:.2f}s from {wall_time(g.at)}: no other thread ran Python code (no call could start)"


def gil_gap_note(s: Summary) -> str | None:
    """One note for the times the GIL was held during the capture, or None."""
    if not s.gil_gaps:
        return None
    n = len(s.gil_gaps) + s.gil_gaps_not_kept
    longest = max(s.gil_gaps, key=lambda g: g.ms)
    text = (f"note: the GIL was held {n} time(s) for 0.5s or more while the function was instrumented (longest "
            f"{longest.ms / 1000:.2f}s from {wall_time(longest.at)}; {sum(g.ms for g in s.gil_gaps) / 1000:.2f}s in "
            "all): no other thread ran Python code then, so no call of the function could start, and the command's "
            "progress waited")
    h = s.gil_gap_holder
    if h is None:
        return text + "."
    return text + f"; thread {h.native_id} ({h.name}) held it when read from outside{gil_wait.where(h)}."


def refuse_hopeless_filter(result: Summary) -> Summary:
    """A capture the agent ended because its filter raised on every call (none could match) is an
    error of the caller's expression, not an empty answer."""
    if result.stopped != "filter_failed":
        return result
    failure = next(e for e in result.expression_failures if e.arg == "filter_expr")
    what = "was refused by the read-only mode" if failure.refused else f"raised {failure.error.type}"
    raise FlightError("expression_failed", f"the {{arg:filter_expr}} expression {failure.expr!r} {what} on each of "
                      f"the first {failure.failures} calls, so no call could match: {failure.error.message}. The "
                      "capture was ended and its instrumentation removed.", arg="filter_expr")


_STOP_WHY = {"limit": "the limit of {limit} was reached",
             "deadline": "the deadline of {duration_s}s passed",
             "cancel": "it was cancelled",
             "filter_failed": "the filter raised on every call"}


def summary_line(s: Summary, what: str) -> str:
    why = _STOP_WHY[s.stopped].format(limit=s.limit, duration_s=s.duration_s)
    gaps = gil_gap_note(s)
    return (gaps + "\n" if gaps else "") + s.say(f"{what} {s.target}{s.signature}: {s.captured} of {s.limit} captured; {s.seen} calls seen, {s.matched} matched"
                 + (f", {s.skipped} below {{arg:entrance_time}}" if s.skipped else "") + f"; stopped because {why}."
                 + (f" {s.not_kept} of them are left out of this answer (a capture keeps the latest 1000)."
                    if s.not_kept else ""))


def empty_hint(s: Summary, what: str) -> str:
    """Why nothing was captured, and what to try."""
    where = f"{s.target} ({s.file}:{s.line}, via {s.mechanism})"
    if s.seen == 0:
        return s.say(f"No call of {where} happened during the {s.duration_s}s it was instrumented. Make the "
                     "application call it (send a request) or raise {arg:timeout_s}. Calls already running when "
                     "it started are not seen (only calls that start while instrumented); the stack tool shows "
                     "what runs now.")
    if s.matched == 0:
        return s.say(f"{where} was called {s.seen} times in {s.duration_s}s but no call passed the filter ("
                     + ("{arg:filter_expr}/{arg:exception}" if what == "watch" else "{arg:filter_expr}")
                     + "); loosen it.")
    if s.skipped:  # trace's entrance_time only
        return s.say(f"{where} was called {s.seen} times in {s.duration_s}s; {s.skipped} matching calls were "
                     "below the {arg:entrance_time} threshold; lower {arg:entrance_time}.")
    return s.say(f"{where} was called {s.seen} times in {s.duration_s}s and {s.matched} calls matched, but none "
                 "ended before the capture stopped (only calls that end while instrumented are captured); raise "
                 "{arg:timeout_s}.")


def failure_warning(f: ExpressionFailure) -> str:
    """One failed expression, as the warning sentence (arguments as {arg:NAME})."""
    what = f"{{arg:{f.arg}}} expression {f.expr!r}"
    said = f"{what}: {f.error.message}" if f.refused else f"{what} raised {f.error.type}: {f.error.message}"
    if f.failures > 1:
        said += f" ({f.failures} calls)"
    said += (". Those calls are shown without a value" if f.arg == "expr" else
             ". Those calls were treated as not matching")
    return said + "; the application was not affected."


def render_failures(s: Summary) -> list[str]:
    return [s.say("warning: " + failure_warning(f)) for f in s.expression_failures]
