"""tt (time tunnel): calls of a function recorded into a table kept in the target's agent, for
later listing, showing one expanded, deleting, and replaying (calling the function again with the
recorded arguments)."""
from __future__ import annotations

from typing import Annotated, Any, Callable, Literal

from pydantic import Field, PrivateAttr, model_validator

from ..errors import speak
from ..models import ExceptionFact, Fact, ValueView
from ..render import paint, traceback_lines, view_lines, wall_time
from .base import Call, Cli, Tool, cli_name
from .capture_common import ExpressionFailure, FunctionParams, Summary, empty_hint, render_failures, request, \
    summary_line
from .fields import Expand, Raw, Verbose

RULE = "─" * 100
LABEL_WIDTH = 20   # flight_profiler's column of labels in an expanded record


class TtParams(FunctionParams):
    time_tunnel: Annotated[bool, Cli("-t", "--time_tunnel", "--time-tunnel")] = Field(
        False, description="Record calls of module [cls] method into the table (until limit or timeout_s); "
                           "implied when a function is named. With no action at all, tt lists the table.")
    module: Annotated[str | None, Cli("--mod", positional=True)] = Field(
        None, description="With time_tunnel: module name as the target imported it ('__main__' for the script "
                          "that was run). Never imported by flight-mcp.")
    method: Annotated[str | None, Cli("--func", positional=True)] = Field(
        None, description="With time_tunnel: the function or method to record.")
    list_records: Annotated[bool, Cli("-l", "--list")] = Field(
        False, description="List the recorded calls (filter_expr and method_filter narrow the listing).")
    index: Annotated[int | None, Cli("-i", "--index")] = Field(
        None, description="Show the record of this index expanded: arguments by name, return value or "
                          "exception with traceback, cost, thread.")
    play: Annotated[bool, Cli("-p", "--play")] = Field(
        False, description="With index: call the function again with that record's arguments (on an agent "
                           "thread); the new call is recorded and shown. Changes the target: over MCP only with "
                           "--allow-mutating.")
    delete: Annotated[int | None, Cli("-d", "--delete")] = Field(
        None, description="Delete the record of this index (frees what it holds).")
    delete_all: Annotated[bool, Cli("-da", "--delete_all", "--delete-all")] = Field(
        False, description="Delete every record (indexes start again at 1000).")
    method_filter: Annotated[str | None, Cli("-m", "--method")] = Field(
        None, description="With list_records: only records of this function, as module.Class.method (or "
                          "module.function).")
    limit: Annotated[int, Cli("-n", "--limits", "--limit")] = Field(
        10, ge=1, description="With time_tunnel: the most calls to record; one recording keeps at most the "
                              "table's bound (1000).")
    timeout_s: float = Field(
        10.0, gt=0, le=3600, description="Deadline in seconds, attach included: recording stops then; a replay "
                                         "still running then goes on in the target and is recorded when it ends.")
    expand: Expand = 2
    verbose: Verbose = False
    raw: Raw = False

    @model_validator(mode="before")
    @classmethod
    def _quoted_location(cls, data: Any) -> Any:
        """flight_profiler's `-t "module Class method"`: one quoted word fills the three fields. And
        `-t module method`: the command line fills optional positional slots from the right, so two
        words arrive as cls and method (module is optional here: -l and -i need none)."""
        if not isinstance(data, dict):
            return data
        given = [k for k in ("module", "cls", "method") if data.get(k) is not None]
        if len(given) == 1 and isinstance(data[given[0]], str) and len(data[given[0]].split()) in (2, 3):
            parts = data[given[0]].split()
            data = dict(data, module=parts[0], method=parts[-1], cls=parts[1] if len(parts) == 3 else None)
        elif data.get("module") is None and data.get("cls") and data.get("method"):
            data = dict(data, module=data["cls"], cls=None)
        return data

    def chosen(self) -> list[str]:
        """The actions asked for; none named means: record when a function is named, else list."""
        chosen = [n for n, on in (("time_tunnel", self.time_tunnel), ("list_records", self.list_records),
                                  ("index", self.index is not None), ("delete", self.delete is not None),
                                  ("delete_all", self.delete_all)) if on]
        if chosen or self.play:
            return chosen
        return ["time_tunnel"] if self.module or self.cls or self.method or self.nested_method else ["list_records"]

    def agent_args(self) -> dict:
        """The request names its action (an implied one too)."""
        args = super().agent_args()
        action = self.chosen()[0]
        if action in ("time_tunnel", "list_records"):
            args[action] = True
        return args

    @model_validator(mode="after")
    def _one_action(self) -> "TtParams":
        chosen = self.chosen()
        if len(chosen) != 1:
            raise ValueError("give exactly one of {arg:time_tunnel} (record), {arg:list_records}, {arg:index} "
                             "(show; with {arg:play}: replay), {arg:delete}, {arg:delete_all}"
                             + (f"; got {', '.join('{arg:%s}' % n for n in chosen)}" if chosen else ""))
        if chosen == ["time_tunnel"] and not (self.module and self.method):
            raise ValueError("{arg:time_tunnel} records calls of a function: give {arg:module} and {arg:method} "
                             "(and {arg:cls} for a method), e.g. module \"__main__\", method \"handle\"")
        if self.play and self.index is None:
            raise ValueError("{arg:play} replays one record: give its {arg:index}")
        return self


class Row(Fact):
    """One recorded call, as a line of the table."""
    index: int
    time: float = Field(description="When the call started (epoch seconds).")
    cost_ms: float
    is_exp: bool = Field(description="The call raised.")
    thread: str
    tid: int
    daemon: bool | None = None
    module: str
    cls: str | None = None
    method: str
    nested_method: str | None = None
    target: str = Field(description="module.Class.method of the recorded function.")
    replay_of: int | None = Field(None, description="This call was a replay of that record.")
    line: int | None = Field(None, description="The line the call returned at (its return statement) or raised at "
                                               "(where the exception left the function); None when unknown.")


class Arg(Fact):
    name: str | None = Field(None, description="The parameter's name (None for extra *args items).")
    view: ValueView


class Shown(Row):
    """One record expanded; values are read when shown (a mutable argument shows its state now)."""
    instance: ValueView | None = Field(None, description="self (or cls) of a method call.")
    args: list[Arg] = Field(default_factory=list, description="Positional arguments, without self.")
    kwargs: list[Arg] = Field(default_factory=list, description="Keyword-only arguments and **kwargs.")
    return_obj: ValueView | None = None
    exception: ExceptionFact | None = Field(None, description="What the call raised, with its traceback.")


class Recording(Summary):
    records: list[Row]


class TtResult(Fact):
    action: Literal["record", "list", "show", "replay", "delete", "delete_all"]
    table_size: int = Field(description="Records the table holds now.")
    kept: int = Field(description="The table's bound: past it the oldest record is dropped.")
    dropped: int = Field(0, description="Records dropped as the oldest past the bound since the last delete_all.")
    recording: Recording | None = Field(None, description="record: what was recorded and why it stopped.")
    limit_asked: int | None = Field(None, description="record: the limit asked, when above the table's bound.")
    records: list[Row] | None = Field(None, description="list: the records (after the filters).")
    expression_failures: list[ExpressionFailure] = Field(default_factory=list)
    record: Shown | None = Field(None, description="show/replay: the record (replay: the new call's).")
    replay_of: int | None = None
    running: bool = Field(False, description="replay: the call had not ended by the deadline; it goes on and is "
                                             "recorded when it ends.")
    timeout_s: float | None = None
    index: int | None = Field(None, description="delete: the index deleted.")
    deleted: int | None = Field(None, description="delete_all: how many records were deleted.")

    _name_of: Callable[[str], str] = PrivateAttr(default=str)

    def spoken_in(self, call: Call) -> "TtResult":
        if call.on_cli:
            self._name_of = lambda n: cli_name(TtParams, n)
        if self.recording is not None:
            self.recording.spoken_in(TtParams, call)
        return self

    def say(self, text: str) -> str:
        return speak(text, self._name_of)


def run(p: TtParams, call: Call) -> TtResult:
    if p.play:
        call.require_mutating("tt replay")
    answer = request(p, call, "tt")
    result = TtResult.model_validate(answer)
    if result.recording is not None and p.limit > result.kept:
        result.limit_asked = p.limit
    return result.spoken_in(call)


def _method_of(r: Row) -> str:
    return ".".join(x for x in (r.cls, r.method, r.nested_method) if x)


def table_lines(rows: list[Row], color: bool) -> list[str]:
    """flight_profiler's time-fragment table (its header words: INDEX, COST, MODULE, METHOD)."""
    methods = [_method_of(r) + (f" (replay of {r.replay_of})" if r.replay_of is not None else "") for r in rows]
    mod_w = max([len(r.module) for r in rows] + [28]) + 2
    meth_w = max([len(m) for m in methods] + [20]) + 2
    head = (f' {"INDEX":<9}{"TIMESTAMP":<25}{"COST(ms)":<10}{"IS-RET":<8}{"IS-EXP":<8}{"MODULE":<{mod_w}}'
            f'{"METHOD":<{meth_w}}THREAD')
    out = [paint(head, "bold", color), RULE]
    for r, method in zip(rows, methods):
        out.append(f" {str(r.index):<9}{wall_time(r.time):<25}{f'{r.cost_ms:.3f}':<10}{str(not r.is_exp):<8}"
                   f"{str(r.is_exp):<8}{r.module:<{mod_w}}{method:<{meth_w}}{r.thread}")
    return out


def _label(label: str, lines: list[str], color: bool) -> list[str]:
    pad = " " * (1 + LABEL_WIDTH)
    first = " " + paint(label.ljust(LABEL_WIDTH), "bold", color) + (lines[0] if lines else "")
    return [first] + [pad + line for line in lines[1:]]


def _named(items: list[Arg], empty: str) -> list[str]:
    if not items:
        return [empty]
    out = []
    for a in items:
        lines = view_lines(a.view)
        out.append(f"{a.name}={lines[0]}" if a.name else lines[0])
        out.extend("  " + line for line in lines[1:])
    return out


def shown_lines(r: Shown, color: bool) -> list[str]:
    rows = [("INDEX", [str(r.index)]), ("GMT-CREATE", [wall_time(r.time)]), ("COST(ms)", ["{:.7g}".format(r.cost_ms)]),
            ("MODULE", [r.module]), ("CLASS", [r.cls or ""]), ("METHOD", [r.method + (f".{r.nested_method}" if r.nested_method else "")]),
            ("THREAD", [f"{r.thread} (tid {r.tid}{', daemon' if r.daemon else ''})"]),
            ("IS_RETURN", [str(not r.is_exp)]), ("IS_EXCEPTION", [str(r.is_exp)])]
    if r.line is not None:
        rows.append(("LINE", [f"{'raised' if r.is_exp else 'returned'} at line {r.line}"]))
    if r.replay_of is not None:
        rows.append(("REPLAY_OF", [str(r.replay_of)]))
    if r.instance is not None:
        rows.append(("TARGET", view_lines(r.instance)))
    rows.append(("ARGS", _named(r.args, "()")))
    rows.append(("KWARGS", _named(r.kwargs, "{}")))
    if r.return_obj is not None and not r.is_exp:
        rows.append(("RETURN_OBJ", view_lines(r.return_obj)))
    if r.exception is not None:
        rows.append(("RAISE-EXCEPTION", traceback_lines(r.exception)))
    out = []
    for label, lines in rows:
        out.extend(_label(label, lines, color))
    return out


def _bound(r: TtResult) -> str:
    said = f"The table holds {r.table_size} records (at most {r.kept}; past that the oldest is dropped"
    return said + (f", {r.dropped} dropped so far)." if r.dropped else ").")


def render(r: TtResult, color: bool) -> str:
    out: list[str] = []
    if r.action == "record":
        rec = r.recording
        if rec.records:
            out.extend(table_lines(rec.records, color))
            out.append(RULE)
        out.append(summary_line(rec, "tt"))
        if r.limit_asked is not None:
            out.append(r.say(f"{{arg:limit}} {r.limit_asked} was capped at {r.kept}: one recording keeps at most "
                             "what the table holds."))
        if not rec.records:
            out.append(empty_hint(rec, "tt"))
        else:
            first = rec.records[0].index
            out.append(_bound(r) + r.say(f" Show one: {{arg:index}} {first}; replay it: {{arg:index}} {first} "
                                         "{arg:play}; list: {arg:list_records}."))
        out.extend(render_failures(rec))
    elif r.action == "list":
        if r.records:
            out.extend(table_lines(r.records, color))
            out.append(RULE)
        elif r.table_size:
            out.append("No record matches the filters.")
        else:
            out.append(r.say("No records: record calls first ({arg:time_tunnel} MODULE [CLASS] METHOD)."))
        out.append(f"{len(r.records or [])} listed. " + _bound(r))
        for f in r.expression_failures:
            out.append(r.say(f"warning: {{arg:{f.arg}}} expression {f.expr!r} raised {f.error.type}: "
                             f"{f.error.message} on {f.failures} records; those were left out."))
    elif r.action in ("show", "replay"):
        if r.action == "replay":
            if r.running:
                out.append(r.say(f"The replay of record {r.replay_of} had not ended after {r.timeout_s}s; it goes "
                                 "on in the target, on an agent thread, and is recorded when it ends "
                                 "({arg:list_records} shows it)."))
            else:
                out.append(paint(f"Replayed record {r.replay_of} as record {r.record.index}:", "green", color))
        if r.record is not None:
            out.extend(shown_lines(r.record, color))
    elif r.action == "delete":
        out.append(paint(f"Index {r.index} is deleted successfully.", "green", color) + " " + _bound(r))
    else:
        out.append(paint(f"All time fragments are deleted ({r.deleted} records).", "green", color))
    return "\n".join(out)


TOOL = Tool(
    name="tt", params=TtParams, result=TtResult, run=run, render=render,
    title="Record calls of a function, show and replay them (time tunnel)",
    read_only=False, destructive=False,
    description=(
        "Time tunnel: record real calls of one function of a live Python process (arguments, return value or "
        "exception with traceback, cost, thread, time) into a table kept in the target, then look at them in "
        "later calls. One action per call: time_tunnel=true with module/cls/method records (until limit or "
        "timeout_s; filter_expr keeps only matching calls, e.g. \"cost > 50\"); list_records=true lists the "
        "table; index=N shows record N expanded (arguments by parameter name; expand/raw/verbose as in watch); "
        "index=N with play=true calls the function again with N's arguments (changes the target: needs "
        "--allow-mutating; the new call is recorded too); delete=N / delete_all=true free records. Use it "
        "to catch a rare failing call and inspect it at leisure, or to reproduce it. The table keeps REFERENCES "
        "to each call's arguments and return value (that is what replay needs; values are shown as they are "
        "when shown) and holds at most 1000 records, the oldest dropped; detach empties it. Recording ends "
        "with the call; the function's code is restored."),
)
