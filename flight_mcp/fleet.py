"""Worker fleets: one tool call on a set of processes (the workers of a master, or a list of pids).

The same Params, copied with each pid, run through Tool.invoke on threads that share one deadline; a
process that fails (not Python, gone, killed mid-call) is reported beside the others, never fatal to
them. The answer keeps each process's own Result and adds a merge that reads well: identical stacks
grouped across workers, watch/trace records tagged with their pid in one timeline, monitor and mem
figures summed with the split per worker.

Only stack, watch, trace, monitor and mem take `pids`/`workers_of` (Tool.__post_init__ extends their
Params with with_fleet()); a single `pid` keeps working exactly as before.
"""
from __future__ import annotations

import threading
import time
from typing import Any, ClassVar, Union

from pydantic import BaseModel, Field, PrivateAttr, RootModel, model_validator

from .errors import FlightError
from .models import Fact, Frame

TOOLS = frozenset({"stack", "watch", "trace", "monitor", "mem"})
FLEET_FIELDS = frozenset({"pids", "workers_of"})
MAX_PROCESSES = 64   # threads of one call; a fleet bigger than this is named by a narrower list
# multiprocessing's helper processes are children of a master but never do its work
_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.semaphore_tracker", "multiprocessing.forkserver")


# ---- Params -------------------------------------------------------------------------------------

def with_fleet(params: type[BaseModel]) -> type[BaseModel]:
    """params with an optional pid and the two fleet fields, exactly one of the three given."""
    class FleetParams(params):
        host_only: ClassVar[frozenset[str]] = params.host_only | FLEET_FIELDS

        pid: int | None = Field(None, description="Process id of the target Python process (list_processes "
                                                   "shows them). Required unless pids or workers_of names the "
                                                   "processes.")
        pids: list[int] | None = Field(None, min_length=1, max_length=MAX_PROCESSES,
                                       description="Run on each of these processes in parallel within the one "
                                                   "deadline: the answer has each process's result and a merge. CLI: "
                                                   "PID1,PID2 in place of PID.")
        workers_of: int | None = Field(None, description="Run on every worker (child process) of this master pid "
                                                         "(gunicorn, uvicorn, celery, multiprocessing) in parallel "
                                                         "within the one deadline: each worker's result and a merge. CLI: "
                                                         "--workers-of MASTER in place of PID.")

        @model_validator(mode="after")
        def _one_target(self):
            given = [n for n in ("pid", "pids", "workers_of") if getattr(self, n) is not None]
            if len(given) != 1:
                raise ValueError("give exactly one of {arg:pid}, {arg:pids} or {arg:workers_of}"
                                 + (f" (got {', '.join('{arg:%s}' % n for n in given)})" if given else ""))
            return self

    FleetParams.__name__ = FleetParams.__qualname__ = params.__name__
    FleetParams.__doc__ = params.__doc__
    return FleetParams


def is_fleet(params: BaseModel) -> bool:
    return getattr(params, "pids", None) is not None or getattr(params, "workers_of", None) is not None


def workers_of(master: int) -> list[int]:
    """The worker processes of master: its children, without multiprocessing's helper processes."""
    import psutil
    try:
        children = psutil.Process(master).children()
    except psutil.NoSuchProcess:
        raise FlightError("no_such_process", f"no process {master} ({{arg:workers_of}} names a master pid)",
                          arg="workers_of") from None
    except psutil.Error as e:
        raise FlightError("permission_denied", f"cannot list the children of {master}: {e}",
                          arg="workers_of") from None
    pids = []
    for child in children:
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue   # gone already
        if not any(h in cmdline for h in _HELPERS):
            pids.append(child.pid)
    if not pids:
        raise FlightError("no_workers", f"process {master} has no worker processes (no children)",
                          arg="workers_of")
    return sorted(pids)[:MAX_PROCESSES]


# ---- Result -------------------------------------------------------------------------------------

class ProcessError(Fact):
    code: str
    message: str
    hint: str | None = None


class ProcessAnswer(Fact):
    pid: int
    seconds: float = Field(description="How long this process's call took.")
    result: dict[str, Any] | None = Field(None, description="The tool's own result for this process.")
    error: ProcessError | None = Field(None, description="Why this process did not answer (the others did).")


class ThreadRef(Fact):
    pid: int
    name: str
    native_id: int | None = None


class StackGroup(Fact):
    """Threads (of any of the processes) whose stacks are the same frames."""
    count: int = Field(description="Threads in the group.")
    processes: list[int] = Field(description="Pids with at least one thread in the group.")
    threads: list[ThreadRef]
    frames: list[Frame] = Field(description="The common stack, outermost first (locals are left out).")
    note: str | None = None


class TaggedRecord(Fact):
    """One captured call (watch record, trace invocation) in the common timeline."""
    pid: int
    index: int = Field(description="Its index in that process's records / invocations.")
    time: float
    cost_ms: float
    thread: str
    failed: bool = Field(description="The call raised.")


class Figures(Fact):
    """monitor: calls summed over the processes; mem: sizes summed."""
    total: dict[str, float | int | None]
    by_pid: dict[int, dict[str, float | int | None]]


class Merge(Fact):
    stack_groups: list[StackGroup] | None = Field(None, description="stack: threads grouped by identical frames, "
                                                  "biggest group first.")
    records: list[TaggedRecord] | None = Field(None, description="watch/trace: every process's captures in the "
                                               "order they started, each tagged with its pid.")
    figures: Figures | None = Field(None, description="monitor/mem: figures summed, with the split per process.")
    types: list[dict[str, Any]] | None = Field(None, description="mem summary: types summed over the processes "
                                               "(count, size), largest first, up to limit.")


class FleetResult(Fact):
    tool: str
    workers_of: int | None = Field(None, description="The master whose workers were asked.")
    pids: list[int] = Field(description="The processes asked.")
    answered: int
    failed: int
    seconds: float = Field(description="Wall time of the whole call.")
    processes: list[ProcessAnswer] = Field(description="Each process's own answer or error, in pid order.")
    merged: Merge

    _results: dict = PrivateAttr(default_factory=dict)   # pid -> the tool's Result model (for the text)


def output_model(tool) -> type[BaseModel]:
    """What the MCP server declares a tool answers: its Result, or for a fleet tool either it or a
    FleetResult."""
    if tool.name not in TOOLS:
        return tool.result
    model = RootModel[Union[tool.result, FleetResult]]
    model.__name__ = f"{tool.result.__name__}OrFleet"
    model.model_config["json_schema_extra"] = {"type": "object"}
    return model


# ---- running ------------------------------------------------------------------------------------

def run(tool, params: BaseModel, call) -> FleetResult:
    """tool on each process of params.pids / params.workers_of, in parallel, sharing the one deadline."""
    from .session import Deadline
    from .tools.base import Call, DEFAULT_TIMEOUT_S

    start = time.monotonic()
    pids = sorted(set(params.pids)) if params.pids is not None else workers_of(params.workers_of)
    # one deadline for all (monitor's timeout_s may be left out: each derives the same from its cycles)
    timeout = getattr(params, "timeout_s", DEFAULT_TIMEOUT_S)
    deadline = Deadline(timeout) if timeout is not None else None
    answers: dict[int, tuple[float, BaseModel | None, FlightError | None]] = {}
    lock = threading.Lock()

    def one(pid: int) -> None:
        child = Call(call.sessions, allow_mutating=call.allow_mutating, on_cli=call.on_cli,
                     progress=lambda done, total, msg: call.progress(done, total, f"pid {pid}: {msg}"))
        child.cancel_event = call.cancel_event   # one cancel for all
        if call.stream is not None:
            child.stream = lambda text: _stream(call, pid, text)
            child.stream_color = call.stream_color
        update = {"pid": pid, "pids": None, "workers_of": None}
        if deadline is not None and "timeout_s" in type(params).model_fields:
            update["timeout_s"] = deadline.left(floor=0.001)
        t0 = time.monotonic()
        result = error = None
        try:
            result = tool.invoke(params.model_copy(update=update), child)
        except FlightError as e:
            error = e
        except Exception as e:   # a worker's failure of any kind is reported, not fatal to the others
            error = FlightError("agent_bug", f"{type(e).__name__}: {e}")
        with lock:
            answers[pid] = (time.monotonic() - t0, result, error)

    threads = [threading.Thread(target=one, args=(pid,), name=f"fleet-{pid}", daemon=True) for pid in pids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return assemble(tool.name, pids, answers, params.workers_of, time.monotonic() - start)


def _stream(call, pid: int, text: str) -> None:
    with _stream_lock:   # one capture's lines together
        call.stream(tag(text, pid))


_stream_lock = threading.Lock()


def tag(text: str, pid: int) -> str:
    """A capture's text (separator, title, body) with its title line tagged with the pid."""
    lines = text.split("\n")
    i = 1 if len(lines) > 1 else 0
    lines[i] = f"[pid {pid}] " + lines[i]
    return "\n".join(lines)


def assemble(name: str, pids: list[int], answers: dict, master: int | None, seconds: float) -> FleetResult:
    processes, results = [], {}
    for pid in pids:
        took, result, error = answers.get(pid, (0.0, None, FlightError("cancelled", "no answer")))
        if result is not None:
            results[pid] = result
        processes.append(ProcessAnswer(
            pid=pid, seconds=round(took, 3), result=result.model_dump(mode="json") if result is not None else None,
            error=ProcessError(code=error.code, message=error.message, hint=error.hint) if error else None))
    fleet = FleetResult(tool=name, workers_of=master, pids=pids, answered=len(results),
                        failed=len(pids) - len(results), seconds=round(seconds, 3), processes=processes,
                        merged=merge(name, results))
    fleet._results = results
    return fleet


# ---- merging ------------------------------------------------------------------------------------

def merge(name: str, results: dict[int, BaseModel]) -> Merge:
    if name == "stack":
        return Merge(stack_groups=group_stacks(results))
    if name in ("watch", "trace"):
        return Merge(records=timeline(results))
    if name == "monitor":
        return Merge(figures=monitor_figures(results))
    if name == "mem":
        figures, types = mem_figures(results)
        return Merge(figures=figures, types=types)
    return Merge()


def signature(thread) -> tuple:
    """What makes two threads' stacks the same: each frame's place (file, line, function)."""
    return (tuple((f.file, f.line, f.qualname or f.name, f.kind) for f in thread.frames), thread.note)


def group_stacks(results: dict[int, BaseModel]) -> list[StackGroup]:
    groups: dict[tuple, StackGroup] = {}
    for pid, r in sorted(results.items()):
        for t in r.threads:
            key = signature(t)
            g = groups.get(key)
            if g is None:
                frames = [Frame.model_validate(f.model_dump(exclude={"locals", "locals_elided"})) for f in t.frames]
                g = groups[key] = StackGroup(count=0, processes=[], threads=[], frames=frames, note=t.note)
            g.count += 1
            g.threads.append(ThreadRef(pid=pid, name=t.name, native_id=t.native_id))
            if pid not in g.processes:
                g.processes.append(pid)
    return sorted(groups.values(), key=lambda g: (-len(g.processes), -g.count))


def timeline(results: dict[int, BaseModel]) -> list[TaggedRecord]:
    out = []
    for pid, r in results.items():
        items = r.records if hasattr(r, "records") else r.invocations
        for i, rec in enumerate(items):
            failed = rec.is_exp if hasattr(rec, "is_exp") else rec.exception is not None
            out.append(TaggedRecord(pid=pid, index=i, time=rec.time, cost_ms=rec.cost_ms, thread=rec.thread,
                                    failed=failed))
    return sorted(out, key=lambda x: (x.time, x.pid))


def monitor_figures(results: dict[int, BaseModel]) -> Figures:
    by_pid = {}
    for pid, r in sorted(results.items()):
        s = r.total.stats
        by_pid[pid] = {"calls": s.calls, "failures": s.failures, "avg_ms": s.avg_ms, "p95_ms": s.p95_ms,
                       "max_ms": s.max_ms}
    calls = sum(x["calls"] for x in by_pid.values())
    weighted = sum(x["avg_ms"] * x["calls"] for x in by_pid.values() if x["avg_ms"] is not None)
    maxes = [x["max_ms"] for x in by_pid.values() if x["max_ms"] is not None]
    p95s = [x["p95_ms"] for x in by_pid.values() if x["p95_ms"] is not None]
    total = {"calls": calls, "failures": sum(x["failures"] for x in by_pid.values()),
             "avg_ms": round(weighted / calls, 3) if calls else None,
             "p95_ms": max(p95s) if p95s else None,   # percentiles do not add up: the worst worker's
             "max_ms": max(maxes) if maxes else None}
    return Figures(total=total, by_pid=by_pid)


MEM_SUMMARY = ("rss_bytes", "tracked_objects", "tracked_bytes")
MEM_DIFF = ("rss_before", "rss_after", "tracked_before", "tracked_after")


def mem_figures(results: dict[int, BaseModel]) -> tuple[Figures, list[dict] | None]:
    if not results:
        return Figures(total={}, by_pid={}), None
    diff = any(r.action == "diff" for r in results.values())
    keys = MEM_DIFF if diff else MEM_SUMMARY
    by_pid = {pid: {k: getattr(r, k) for k in keys} for pid, r in sorted(results.items())}
    total = {k: sum(x[k] for x in by_pid.values() if x[k] is not None) for k in keys}
    rows: dict[str, dict] = {}
    for r in results.values():
        for row in (r.types if not diff else r.rows) or ():
            acc = rows.setdefault(row.type, {"type": row.type, "count": 0, "size": 0, "processes": 0})
            acc["count"] += row.count
            acc["size"] += (row.size_delta if diff else row.size) or 0
            acc["processes"] += 1
    first = next(iter(results.values()))
    ordered = sorted(rows.values(), key=lambda x: x["size"], reverse=first.order == "descending")
    return Figures(total=total, by_pid=by_pid), ordered[:first.limit]


# ---- text ---------------------------------------------------------------------------------------

def text(tool, r: FleetResult, color: bool) -> str:
    from .render import escape, escaped, paint
    who = f"workers of {r.workers_of}" if r.workers_of is not None else "pids"
    head = (f"{r.tool} on {len(r.pids)} processes ({who}: {', '.join(map(str, r.pids))}): {r.answered} answered"
            + (f", {r.failed} failed" if r.failed else "") + f" in {r.seconds:.2f}s")
    out = [paint(head, "bold", color)]
    for p in r.processes:
        if p.error is not None:
            out.append(paint(f"  pid {p.pid}: error [{p.error.code}] {escape(p.error.message)}", "red", color))
    out.append("")
    results = {pid: escaped(res) for pid, res in r._results.items()}
    if r.tool == "stack":
        out += _stack_text(escaped(r.merged.stack_groups or []), results, color)
    elif r.tool in ("watch", "trace"):
        out += _capture_text(tool, r, results, color)
    elif r.tool == "monitor":
        out += _monitor_text(r.merged.figures, color)
    elif r.tool == "mem":
        out += _mem_text(r.merged.figures, escaped(r.merged.types or []), results, color)
    return "\n".join(out).rstrip()


def group_title(g: StackGroup) -> str:
    """`5 threads in 5 processes (101, 102, ...): MainThread` and where they are (the innermost frame)."""
    top = next((f for f in reversed(g.frames) if f.kind == "python"), g.frames[-1] if g.frames else None)
    where = f" at {top.qualname or top.name} ({top.file.rsplit('/', 1)[-1]}:{top.line})" if top else ""
    names = sorted({t.name for t in g.threads})
    shown = ", ".join(names[:3]) + (f", ... {len(names) - 3} more names" if len(names) > 3 else "")
    procs = ", ".join(map(str, g.processes[:8])) + (", ..." if len(g.processes) > 8 else "")
    return (f"{g.count} thread{'s' if g.count > 1 else ''} in {len(g.processes)} process"
            f"{'es' if len(g.processes) > 1 else ''} ({procs}){where} [{shown}]")


def _stack_text(groups: list[StackGroup], results: dict, color: bool) -> list[str]:
    from .render import paint
    from .tools.stack import _frame_lines
    out = []
    for g in groups:
        out.append(paint(group_title(g), "bold", color))
        out.extend(_frame_lines(g.frames, color))
        if g.note:
            out.append(f"    ({g.note})")
        out.append("")
    for pid, res in sorted(results.items()):   # what a single process's stack says on top: its deadlocks
        from .tools.stack import deadlock_lines
        lines = deadlock_lines(res)
        if lines or res.source == "external":
            out.append(paint(f"pid {pid}:" + (" (read from outside the process)" if res.source == "external" else ""),
                             "bold", color))
            out.extend(paint(x, "red" if res.deadlocks else None, color) for x in lines)
        out.extend(f"note (pid {pid}): {n}" for n in res.notes)
    return out


def _capture_text(tool, r: FleetResult, results: dict, color: bool) -> list[str]:
    from .tools.capture_common import summary_line
    out = []
    if r.tool == "watch":
        from .tools.watch import SEPARATOR, render_record
    else:
        from .tools.trace import SEPARATOR, render_invocation
    for rec in r.merged.records or []:
        res = results[rec.pid]
        item = (res.records if r.tool == "watch" else res.invocations)[rec.index]
        if (item.time, item.tid) in r._results[rec.pid]._streamed:
            continue   # shown as it arrived
        lines = (render_record(item, res.target, res.expr, color) if r.tool == "watch"
                 else render_invocation(item, color, res.say))
        out.extend(tag("\n".join(lines), rec.pid).split("\n"))
    if out:
        out.append(SEPARATOR)
    captured = sum(x.captured for x in results.values())
    out.append(f"{r.tool}: {captured} calls captured in {sum(1 for x in results.values() if x.captured)} of "
               f"{len(r.pids)} processes")
    for pid, res in sorted(results.items()):
        out.append(f"  pid {pid}: " + summary_line(res, r.tool))
    return out


def _num(x, fmt=".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _monitor_text(f: Figures, color: bool) -> list[str]:
    from .render import paint
    rows = [("all", f.total)] + [(str(pid), x) for pid, x in f.by_pid.items()]
    out = [paint(f"{'PID':>8} {'CALLS':>8} {'FAILED':>7} {'AVG_MS':>9} {'P95_MS':>9} {'MAX_MS':>9}", "bold", color)]
    for label, x in rows:
        out.append(f"{label:>8} {x['calls']:>8} {x['failures']:>7} {_num(x['avg_ms']):>9} {_num(x['p95_ms']):>9} "
                   f"{_num(x['max_ms']):>9}")
    out.append("(all: calls summed, avg weighted by calls, p95 and max the highest of the processes)")
    return out


def _mb(n) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MB"


def _mem_text(f: Figures, types: list[dict], results: dict, color: bool) -> list[str]:
    from .render import paint
    if not f.by_pid:
        return []
    diff = "rss_before" in f.total
    out = []
    if diff:
        out.append(paint(f"{'PID':>8} {'RSS_BEFORE':>12} {'RSS_AFTER':>12} {'OBJ_BEFORE':>11} {'OBJ_AFTER':>11}",
                         "bold", color))
        for label, x in [("all", f.total)] + [(str(p), x) for p, x in f.by_pid.items()]:
            out.append(f"{label:>8} {_mb(x['rss_before']):>12} {_mb(x['rss_after']):>12} "
                       f"{_num(x['tracked_before'], 'd'):>11} {_num(x['tracked_after'], 'd'):>11}")
    else:
        out.append(paint(f"{'PID':>8} {'RSS':>12} {'OBJECTS':>10} {'OBJ_SIZE':>12}", "bold", color))
        for label, x in [("all", f.total)] + [(str(p), x) for p, x in f.by_pid.items()]:
            out.append(f"{label:>8} {_mb(x['rss_bytes']):>12} {_num(x['tracked_objects'], 'd'):>10} "
                       f"{_mb(x['tracked_bytes']):>12}")
    if types:
        out.append("")
        what = "size change" if diff else "total size"
        out.append(paint(f"types summed over the processes ({what}):", "bold", color))
        width = max(len(t["type"]) for t in types)
        for t in types:
            out.append(f"  {t['type'].rjust(width)} | {t['count']:>10} | {t['size'] / 1024:>10.1f} KB | "
                       f"in {t['processes']}")
    return out


# ---- command line -------------------------------------------------------------------------------

def cli_target(target: str | None, master: int | None) -> dict | None:
    """`flight-mcp PID1,PID2 --cmd ...` or `flight-mcp --workers-of MASTER --cmd ...`: the fleet
    arguments, or None for a single pid."""
    if master is not None:
        if target is not None:
            raise FlightError("usage", "--workers-of MASTER names the processes: give no pid besides it")
        return {"workers_of": master}
    if target is None or "," not in target:
        return None
    words = [w for w in target.split(",") if w]
    if not words or not all(w.isdigit() for w in words):
        raise FlightError("usage", f"{target!r} is not a list of pids: give them as PID1,PID2 (digits and commas)")
    return {"pids": [int(w) for w in words]}


def cli_params(tool, params: BaseModel, target: dict) -> BaseModel:
    """The parsed command's params, on the fleet named on the command line instead of one pid."""
    if tool.name not in TOOLS:
        raise FlightError("usage", f"{tool.name} runs on one process at a time; several processes (PID1,PID2 or "
                          f"--workers-of) work with {', '.join(sorted(TOOLS))}")
    return tool.params.model_validate({**params.model_dump(exclude_unset=True, exclude={"pid"}), **target})
