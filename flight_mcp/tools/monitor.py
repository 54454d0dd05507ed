"""monitor: per interval, how often a function is called, how often it raises and how long it takes
(mean, p50, p95, max), optionally split by an expression's value; Arthas's monitor, for Python."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationError

from ..errors import FlightError
from ..models import Fact
from ..render import paint, wall_time
from .base import Call, Cli, Tool
from .capture_common import (REPLY_MARGIN_S, ExpressionFailure, FunctionParams, Summary, empty_hint, failure_warning,
                             gil_gap_note, said_gil_gap, with_gil_gap_holder)

# A derived deadline: the cycles' own time plus this much for the attach and the answer.
ATTACH_ALLOWANCE_S = 10.0
# A value whose mean and median are this many times the mean of the function's other calls is slow.
SLOW_RATIO = 2.0


class MonitorParams(FunctionParams):
    cycle_s: Annotated[float, Cli("-c", "--cycle")] = Field(
        5.0, ge=0.1, le=86400, description="Seconds per cycle: the statistics are reported for each cycle.")
    limit: Annotated[int, Cli("-n", "--limits", "--limit", "--cycles")] = Field(
        3, ge=1, description="Cycles to report (any number: only the latest 100 are kept in the answer, the "
                             "total covers all; cancel to stop early).")
    by: Annotated[str | None, Cli("--by")] = Field(   # (no -b: Arthas's monitor -b is another thing)
        None, min_length=1,
        description="Python expression whose value splits the figures (one row per value: the 20 values with the "
                    "most calls, the rest as other). Same names as watch's expressions: target, args (WITHOUT "
                    "self), kwargs, return_obj, cost. Examples: \"args[0]\", \"kwargs['tenant']\", "
                    "\"target.region\".")
    timeout_s: float | None = Field(
        None, gt=0, description="Deadline in seconds for the whole call, attach included; it must cover "
                                "limit × cycle_s. Left out: limit × cycle_s plus 10 s.")


def timeout_of(p: MonitorParams) -> float:
    """The call's deadline: timeout_s, which must cover the cycles, or the cycles plus ATTACH_ALLOWANCE_S.
    (Checked here rather than in a model validator: the parameters parse alone, the rule is the call's.)"""
    needed = p.limit * p.cycle_s
    if p.timeout_s is None:
        return needed + ATTACH_ALLOWANCE_S
    if p.timeout_s < needed:
        raise FlightError("bad_argument", f"{{arg:timeout_s}} {p.timeout_s:g}s is shorter than the {p.limit} cycles of "
                          f"{p.cycle_s:g}s asked for ({needed:g}s): raise {{arg:timeout_s}} above {needed:g} (a few "
                          "seconds more for the attach), or leave it out to have it derived, or ask for fewer "
                          "{arg:limit} or a shorter {arg:cycle_s}.", arg="timeout_s")
    return p.timeout_s


class Stats(Fact):
    """Calls that ended in the period (and passed the filter); costs in milliseconds."""
    calls: int
    successes: int
    failures: int = Field(description="Calls that raised.")
    avg_ms: float | None = Field(description="Mean cost (None without calls).")
    p50_ms: float | None = Field(description="Median cost, from a log-scale histogram (within about 2.2%).")
    p95_ms: float | None
    max_ms: float | None

    @property
    def fail_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


class KeyStats(Stats):
    kind: Literal["value", "other", "failed"] = Field(
        description="value: calls where `by` had this value; other: the values beyond the ones shown; failed: "
                    "calls where `by` raised.")
    key: str | None = Field(description="The value's repr (kind value only).")


class Table(Fact):
    stats: Stats = Field(description="The whole function.")
    keys: list[KeyStats] = Field(description="With `by`: the values with the most calls, then other and failed.")
    other_keys: int = Field(description="Distinct values counted in the other row besides the unseen ones.")
    keys_overflow: bool = Field(description="More distinct values came than are told apart (100): the later "
                                            "new ones went to the other row.")


class Cycle(Table):
    index: int = Field(description="1 for the first cycle.")
    start: float = Field(description="Epoch seconds.")
    end: float
    duration_s: float
    partial: bool = Field(description="Cut short by the deadline or a cancel.")


class MonitorFailure(ExpressionFailure):
    arg: Literal["filter_expr", "by"] = Field(description="The argument holding the expression.")


class MonitorResult(Summary):
    cycle_s: float
    by: str | None
    cycles: list[Cycle] = Field(description="Each cycle, the latest 100 at most (cycles_dropped says how many "
                                            "earlier ones are not here).")
    cycles_dropped: int
    total: Table = Field(description="All cycles together.")
    expression_failures: list[MonitorFailure] = Field(default_factory=list)


class CycleEvent(Fact):
    cycle: Cycle
    limit: int


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def progress_line(c: Cycle, limit: int) -> str:
    s = c.stats
    line = f"cycle {c.index}/{limit}: {s.calls} calls, {s.failures} failed"
    if s.calls:
        line += f", avg {_ms(s.avg_ms)}ms p95 {_ms(s.p95_ms)}ms max {_ms(s.max_ms)}ms"
    slow = [k.key for k in slow_keys(c)]
    if slow:
        line += f"; slow: {', '.join(slow)}"
    return line


def run(p: MonitorParams, call: Call) -> MonitorResult:
    def on_event(ev: dict) -> None:
        if "gil_gap" in ev:
            said_gil_gap(ev, call, done["cycles"], p.limit, stream=True)
            return
        try:
            fact = CycleEvent.model_validate(ev)
        except ValidationError:
            return   # progress is a courtesy: a fact we do not know does not end the monitor
        done["cycles"] = fact.cycle.index
        call.progress(fact.cycle.index, fact.limit, progress_line(fact.cycle, fact.limit))

    done = {"cycles": 0}
    timeout = timeout_of(p)   # first: a deadline too short is refused before anything is attached
    answer = call.request(p, "monitor", p.agent_args(), on_event=on_event, budget_arg="timeout_s",
                          margin=REPLY_MARGIN_S, timeout=timeout)
    return MonitorResult.model_validate(with_gil_gap_holder(answer)).spoken_in(MonitorParams, call)


def slow_keys(t: Table) -> list[KeyStats]:
    """The values whose mean and median cost are at least SLOW_RATIO times the mean of all the function's
    other calls."""
    out = []
    whole = t.stats
    for k in t.keys:
        if k.kind != "value" or not k.calls or k.avg_ms is None or whole.avg_ms is None:
            continue
        rest_calls = whole.calls - k.calls
        if rest_calls <= 0:
            continue
        rest_mean = (whole.avg_ms * whole.calls - k.avg_ms * k.calls) / rest_calls
        # the median too: one outlier among a value's few calls does not make it slow
        if rest_mean > 0 and k.avg_ms >= SLOW_RATIO * rest_mean and (k.p50_ms or 0) >= SLOW_RATIO * rest_mean:
            out.append(k)
    return out


COLUMNS = ["timestamp", "class", "method", "total", "success", "fail", "avg-rt(ms)", "p50(ms)", "p95(ms)",
           "max(ms)", "fail-rate"]


def _row(stamp: str, owner: str, method: str, s: Stats) -> list[str]:
    return [stamp, owner, method, str(s.calls), str(s.successes), str(s.failures), _ms(s.avg_ms), _ms(s.p50_ms),
            _ms(s.p95_ms), _ms(s.max_ms), f"{s.fail_rate * 100:.2f}%"]


def _key_label(k: KeyStats) -> str:
    return {"value": k.key or "", "other": "(other)", "failed": "(by failed)"}[k.kind]


def _table(r: MonitorResult, t: Table, stamp: str, color: bool) -> list[str]:
    owner, _, method = r.target.rpartition(".")
    header = list(COLUMNS)
    rows = [_row(stamp, owner, method, t.stats)]
    slow = {id(k) for k in slow_keys(t)}
    marks = [""]
    if r.by is not None:
        header.insert(3, "by")
        rows[0].insert(3, "*")
        for k in t.keys:
            row = _row("", "", "", k)
            row.insert(3, _key_label(k))
            rows.append(row)
            marks.append("  ◀ slow" if id(k) in slow else "")
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]
    numeric = {i for i, h in enumerate(header) if h not in ("timestamp", "class", "method", "by")}

    def line(cells: list[str]) -> str:
        return " " + "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                               for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(header), "-" * (sum(widths) + 2 * (len(widths) - 1) + 1)]
    for cells, mark in zip(rows, marks):
        out.append(line(cells) + (paint(mark, "red", color) if mark else ""))
    return out


def render(r: MonitorResult, color: bool) -> str:
    out: list[str] = []
    if r.cycles_dropped:
        out.append(f"(the first {r.cycles_dropped} cycles are not kept; the total covers them)")
    for c in r.cycles:
        title = f"cycle {c.index}/{r.limit}, {c.duration_s:g}s" + (" (cut short)" if c.partial else "")
        out += [title, *_table(r, c, wall_time(c.end), color), ""]
    if len(r.cycles) + r.cycles_dropped > 1:
        out += [f"total of {len(r.cycles) + r.cycles_dropped} cycles, {r.duration_s:g}s",
                *_table(r, r.total, "total", color), ""]
    last = r.total
    if r.by is not None:
        shown = sum(1 for k in last.keys if k.kind == "value")
        if last.other_keys or last.keys_overflow:
            more = f"{last.other_keys} more values" if last.other_keys else "more values"
            if last.keys_overflow:
                more += " (and values beyond the first 100 told apart in a cycle)"
            out.append(f"by {r.by}: the {shown} values with the most calls are shown; {more} are counted in "
                       "(other).")
        slow = slow_keys(last)
        if slow:
            rest = ", ".join(f"{k.key} avg {_ms(k.avg_ms)}ms p95 {_ms(k.p95_ms)}ms" for k in slow)
            out.append(f"slow values of {r.by} over all cycles (mean and median at least {SLOW_RATIO:g}x the "
                       f"other calls' mean, marked ◀ slow): {rest}; the function's avg {_ms(last.stats.avg_ms)}ms.")
    out.append(summary_line(r))
    if r.matched == 0:
        out.append(empty_hint(r, "monitor"))
    for f in r.expression_failures:
        out.append(r.say("warning: " + _failure_warning(f)))
    return "\n".join(out).strip("\n")


def summary_line(r: MonitorResult) -> str:
    why = {"limit": "the cycle was done" if r.limit == 1 else f"the {r.limit} cycles were done", "deadline": f"the deadline of {r.duration_s}s passed",
           "cancel": "it was cancelled"}[r.stopped]
    gaps = gil_gap_note(r)
    return (gaps + "\n" if gaps else "") + r.say(
        f"monitor {r.target}: {r.captured} of {r.limit} cycle{'s' if r.limit != 1 else ''} of {r.cycle_s:g}s; "
        f"{r.seen} calls seen, {r.matched} counted; stopped because {why}.")


def _failure_warning(f: MonitorFailure) -> str:
    if f.arg != "by":
        return failure_warning(f)
    what = f"{{arg:by}} expression {f.expr!r}"
    said = f"{what}: {f.error.message}" if f.refused else f"{what} raised {f.error.type}: {f.error.message}"
    if f.failures > 1:
        said += f" ({f.failures} calls)"
    return said + ". Those calls are counted in the (by failed) row; the application was not affected."


TOOL = Tool(
    name="monitor", params=MonitorParams, result=MonitorResult, run=run, render=render,
    title="Monitor a function per interval",
    description=(
        "Statistics of one function of a live Python process, per cycle of cycle_s seconds for `limit` cycles: calls, "
        "successes, failures (raised), mean / p50 / p95 / max milliseconds, and with `by` the same split by an "
        "expression's value (e.g. by=\"args[0]\" for a tenant or user argument), the slow values marked. Use it for "
        "an intermittent slow path or error rate: one call answers how often it is slow and for which values. "
        "filter_expr keeps only matching calls (names as in watch). Example: {\"module\": \"app.api\", \"cls\": "
        "\"Handler\", \"method\": \"get\", \"cycle_s\": 5, \"limit\": 3, \"by\": \"args[0]\"}. Each cycle is sent as "
        "progress as it ends. Instrumentation is removed when the call returns. Read-only."),
)
