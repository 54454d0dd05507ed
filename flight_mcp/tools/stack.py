"""stack: what every thread (and with async_tasks, every asyncio task) is doing right now.

Two sources, one model: the in-process agent (thread names, source lines, asyncio tasks), or a
reader from outside the process (native frames, GIL and GC state, and an answer when the agent
cannot run because a thread holds the GIL or no safe point comes). The session layer
(session/stack.py) decides which answers; this module says what the answer means.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_serializer

from ..agent import codes
from ..errors import FlightError
from ..models import Fact, Frame, ViewChild
from ..render import escaped, paint, view_lines
from ..session import Deadline
from ..session import stack as session_stack
from .base import Call, Cli, Params, TimedParams, Tool


class StackParams(TimedParams):
    host_only: ClassVar[frozenset[str]] = Params.host_only | {"native", "filepath"}

    async_tasks: Annotated[bool, Cli("-a", "--async")] = Field(
        False, description="Also show every pending asyncio task with the chain of coroutines it awaits.")
    locals: Annotated[bool, Cli("--locals")] = Field(
        False, description="Also show each Python frame's local variables, as read-only views (no code of the "
                           "target runs; a module's frame shows none: its locals are its globals).")
    native: Annotated[bool, Cli("--native")] = Field(
        False, description="Merge native (C) frames under the Python ones, read from outside the process.")
    filepath: Annotated[str | None, Cli("-f", "--filepath")] = Field(
        None, description="Also write the text rendering to this file (on the machine running flight-mcp, as its "
                          "user). Over MCP only when the server runs with --allow-mutating; the CLI writes where "
                          "its user asks.")


class StackFrame(Frame):
    locals: list[ViewChild] | None = Field(None, description="With locals: the frame's local variables "
                                           "(None: not asked, or a module's frame).")
    locals_elided: int = Field(0, description="Locals left out of a frame that has more than 40.")

    @model_serializer(mode="wrap")
    def _without_unasked_locals(self, handler):
        out = handler(self)
        if out.get("locals") is None:   # a frame's JSON without locals=true is Frame's, field for field
            out.pop("locals", None)
            out.pop("locals_elided", None)
        return out


class ThreadStack(Fact):
    ident: int | None = Field(None, description="threading.get_ident() (agent only).")
    name: str
    native_id: int | None = None
    daemon: bool | None = None
    main: bool = False
    frames: list[StackFrame]
    waits_for: int | None = Field(None, description="The lock (index in StackResult.locks) this thread is blocked "
                                                    "acquiring (agent only).")
    wait_how: Literal["with", "acquire"] | None = Field(None, description="How it acquires it: a with statement "
                                                        "or a call of acquire() / __enter__().")
    holds: list[int] = Field(default_factory=list, description="Locks (indexes in StackResult.locks) this thread "
                                                               "holds, among those some thread waits for.")
    note: str | None = Field(None, description="Why a thread shows no Python frames, or what it is waiting for.")
    holds_gil: bool | None = Field(None, description="Holds the GIL (external reading only; None: unknown).")
    waiting_for_gil: bool | None = Field(None, description="Blocked taking the GIL (external reading only).")
    gc_collecting: bool | None = Field(None, description="Running the garbage collector (external reading only).")


class FieldUser(Fact):
    name: str = Field(description="Class.method")
    lines: list[int]


class TaskStack(Fact):
    name: str
    coro: str
    frames: list[StackFrame] = Field(description="The await chain, outermost first; its last step may be the "
                                            "awaited object (file '', name <awaiting Type>).")
    waiter_held_in: str | None = Field(None, description="Who keeps the plain future this task awaits (the code "
                                                         "that should set its result), e.g. "
                                                         "'ExportCoordinator._waiters[*]' (async_tasks only).")
    waiter_users: list[FieldUser] | None = Field(None, description="The methods of the awaiting object's class "
                                                                   "that use that attribute, with their lines: "
                                                                   "where the future should be set.")


class LockFact(Fact):
    """A lock some thread is blocked acquiring."""
    name: str = Field(description="The owner path a person reaches it by: Catalog._lock (an attribute of a "
                                  "Catalog instance), app.LOCK (a module global), or `name (local of func)`.")
    kind: Literal["lock", "rlock", "condition", "semaphore"] = Field(
        description="threading.Lock, RLock, Condition (waiting for its lock, not for a notify) or Semaphore.")
    type: str = Field(description="The object's type (module.Class).")
    address: int = Field(description="id() of the lock (of a Condition's own lock), to tell apart two locks of "
                                     "the same name.")
    holders: list[int] = Field(description="Thread idents holding it (a semaphore may have several).")
    held_by: Literal["owner", "code"] | None = Field(
        description="How the holder is known: owner (the RLock's own owner field: certain), code (the thread's "
                    "frames are inside a `with` of it or after its acquire(): read from the bytecode), None (no "
                    "thread found: holder unknown).")
    waiters: list[int] = Field(description="Thread idents blocked acquiring it.")
    count: int | None = Field(None, description="An RLock's recursion count.")


class DeadlockStep(Fact):
    thread: int = Field(description="Thread ident.")
    lock: int = Field(description="The lock it waits for (index in locks), held by the next step's thread "
                                  "(the last step's by the first).")


class StackResult(Fact):
    pid: int
    source: Literal["agent", "external"] = Field(description="Who read the stacks: the in-process agent, "
                                                 "or a reader from outside the process.")
    threads: list[ThreadStack]
    locks: list[LockFact] = Field(default_factory=list, description="Locks threads are blocked acquiring, with "
                                  "their holders (agent only).")
    deadlocks: list[list[DeadlockStep]] = Field(default_factory=list, description="Cycles of the wait-for graph: "
                                                "each thread waits for a lock the next one holds (agent only).")
    tasks: list[TaskStack] | None = Field(None, description="Pending asyncio tasks: all with async_tasks, else "
                                                           "the first 10 when there are any (None: none).")
    tasks_total: int | None = Field(None, description="Pending asyncio tasks in all (agent only).")
    asyncio_imported: bool | None = Field(None, description="Whether the target imported asyncio (agent only).")
    event_loops: int | None = Field(None, description="Event loops with pending tasks, when tasks were not asked "
                                                      "for (agent only).")
    notes: list[str] = Field(default_factory=list)
    agent_error: str | None = Field(None, description="With source=external after a fallback: the error code "
                                    "of the agent's attempt (agent_timeout, no_safe_point, agent_pending, ...).")


def run(p: StackParams, call: Call) -> StackResult:
    if p.filepath:
        call.require_host_write(f"stack with {codes.arg('filepath')}")
    reading = session_stack.read(call.sessions, p.pid, call.agent_args(p),
                                 Deadline(p.timeout_s), native=p.native, cancelled=call.cancel_event.is_set)
    result = _from_agent(reading.facts, p) if reading.source == "agent" else _from_outside(reading, p)
    if p.filepath:
        try:
            with open(p.filepath, "w") as f:
                f.write(render(escaped(result), False) + "\n")
        except OSError as e:
            raise FlightError("write_failed", f"could not write the stacks to {p.filepath} "
                              f"({codes.arg('filepath')}): {e.strerror}.", arg="filepath")
        result.notes.append(f"Write stack to {p.filepath} successfully!")  # flight_profiler's words
    return result


_PENDING = {
    "waiting": "the agent injected earlier is still waiting for the GIL, so some thread holds it.",
    # its payload thread is gone without an agent listening: it failed or is starting now
    "gone": "the agent injected earlier is no longer waiting; the next call asks it again.",
}


def _from_outside(reading: session_stack.StackReading, p: StackParams) -> StackResult:
    facts = reading.facts
    notes = list(facts["notes"])
    agent_error = None
    if reading.pending is not None:
        agent_error = "agent_pending"
        notes.insert(0, f"read from outside the process (no code ran in it): {_PENDING[reading.pending]}")
    elif reading.agent_error is not None:
        agent_error = reading.agent_error.code
        notes.insert(0, "read from outside the process (no code ran in it) because the agent did not answer: "
                        f"{reading.agent_error.message}")
    elif reading.stall is not None:
        agent_error = "gil_held"
        notes.insert(0, _stall_note(reading.stall))
    if reading.stall is not None and not p.native and not reading.stall.get("starting"):  # the holder's C frames
        # are the point; the others' are not (a first attach reads no native frames: it has less time)
        for t in facts["threads"]:
            if not t["holds_gil"]:
                t["frames"] = [f for f in t["frames"] if f["kind"] != "native"]
        notes.append("native frames are shown for the thread holding the GIL only: call with native=true "
                     "(CLI: --native) for every thread's.")
    elif not p.native:
        notes.append("native frames are left out: call with native=true (CLI: --native) to see them.")
    if reading.named:
        notes.append(f"thread names of {reading.named} thread(s) come from the agent already running in the "
                     "process; the frames were read from outside.")
    else:
        notes.append("thread names are the OS thread names (Python's threading names are readable only from "
                     "inside); native_id matches threading.get_native_id().")
    if p.async_tasks:
        notes.append("asyncio tasks are listed only by the in-process agent: " + (
            "call without native=true for them." if p.native else "it did not answer."))
    return StackResult(pid=facts["pid"], source="external", threads=facts["threads"], notes=notes,
                       agent_error=agent_error)


def _stall_note(stall: dict) -> str:
    h = stall["holder"]
    who = (f"thread {h['native_id']} ({h['name']}) holds it, inside a C call under its innermost Python frame"
           if h else "no thread held it any more when read (the stall had just ended)")
    if stall.get("starting"):  # the first attach: the agent was loaded, and needs the GIL to start
        return (f"read from outside the process (no code ran in it) because the GIL was held: the agent, loaded "
                f"{stall['seen_after_ms'] / 1000:.2f}s before, could not start yet (it needs the GIL, and starts by "
                f"itself once it is free); {who}.")
    said = (f"read from outside the process (no code ran in it) because the GIL was held: the agent's request had "
            f"waited {stall['seen_after_ms'] / 1000:.2f}s for it without running when the process was read; {who}.")
    if stall["ended"]:
        said += (f" The agent got the GIL {stall['waited_ms'] / 1000:.2f}s after the request: its answer, showing "
                 "the threads after the stall, was set aside for this reading of the stall itself.")
    return said


def _from_agent(facts: dict, p: StackParams) -> StackResult:
    result = StackResult(source="agent", **facts)
    for t in result.threads:
        if not t.frames and t.note is None:
            t.note = ("no Python frames: the thread is running native code or idle inside the "
                      "interpreter (use native=true to see its C frames)")
    if result.tasks is not None and not result.asyncio_imported:
        result.notes.append("asyncio is not imported in the target: there are no tasks.")
    if not p.async_tasks and result.tasks:
        shown = len(result.tasks)
        more = (f"the first {shown} are shown; call again with async_tasks=true (CLI: -a) for all of them"
                if shown < (result.tasks_total or 0) else "each is shown with what it awaits")
        result.notes.append(f"{result.event_loops} asyncio event loop(s) have {result.tasks_total} pending "
                            f"task(s): {more}.")
    return result


def _frame_lines(frames: list[Frame], color: bool) -> list[str]:
    lines = []
    for fr in frames:
        if fr.kind == "native":
            lib = paint(f"({fr.library})", "dim", color) if fr.library else ""
            where = f'File "{fr.file}", line {fr.line}, in ' if fr.line else ""
            lines.append(f"    (C) {where}{paint(fr.name, 'yellow', color)} {lib}".rstrip())
            continue
        line = "?" if fr.line is None else fr.line  # unknown: said so, not guessed
        if not fr.file:  # the awaited object ending an await chain: no code of its own
            lines.append(f"    {paint(fr.name, 'cyan', color)}")
        else:
            lines.append(f'    File "{fr.file}", line {line}, in {paint(fr.qualname or fr.name, "cyan", color)}')
        if fr.source:
            lines.append(f"        {fr.source}")
        for var in getattr(fr, "locals", None) or ():
            lines.append(f"        {paint(var.name or '?', 'dim', color)} = {' '.join(view_lines(var.view))}")
        if getattr(fr, "locals_elided", 0):
            lines.append(f"        ... {fr.locals_elided} more locals (stack shows the first 40 of a frame; watch on "
                         "this function shows its arguments)")
    return lines


KIND = {"lock": "Lock", "rlock": "RLock", "condition": "Condition", "semaphore": "Semaphore"}


def _thread_label(r: StackResult, ident: int) -> str:
    for t in r.threads:
        if t.ident == ident:
            return f"thread {t.native_id if t.native_id is not None else t.ident} ({t.name})"
    return f"thread ident {ident} (no longer running)"


def _lock_label(r: StackResult, n: int) -> str:
    lk = r.locks[n]
    same = sum(1 for x in r.locks if x.name == lk.name) > 1
    return f"{lk.name} at {lk.address:#x}" if same else lk.name


def _holder_text(r: StackResult, lk: LockFact, waiter: int | None = None) -> str:
    if lk.holders:
        who = " and ".join("itself" if h == waiter else _thread_label(r, h) for h in lk.holders)
        return f"held by {'at least ' if lk.kind == 'semaphore' else ''}{who}"
    if lk.held_by == "owner":
        return "held by no thread right now (released as we read it)"
    return "holder unknown (no thread's frames are inside a with or after an acquire of it)"


def deadlock_lines(r: StackResult) -> list[str]:
    """One sentence per cycle of the wait-for graph, first in the answer."""
    out = []
    for cycle in r.deadlocks:
        first = cycle[0]
        if len(cycle) == 1:
            kind = KIND[r.locks[first.lock].kind]
            out.append(f"DEADLOCK: {_thread_label(r, first.thread)} holds {_lock_label(r, first.lock)} and waits "
                       f"for it again ({kind} is not reentrant).")
            continue
        text = (f"DEADLOCK: {_thread_label(r, first.thread)} holds {_lock_label(r, cycle[-1].lock)} and waits for "
                f"{_lock_label(r, first.lock)}")
        for step in cycle[1:]:
            text += f" held by {_thread_label(r, step.thread)}, which waits for {_lock_label(r, step.lock)}"
        out.append(text + ".")
    if r.locks and not r.deadlocks:
        waiting = sum(len(lk.waiters) for lk in r.locks)
        out.append(f"lock waits: {waiting} thread(s) blocked on {len(r.locks)} lock(s); no deadlock (the waits form "
                   f"no cycle).")
    return out


def _lock_lines(r: StackResult, t: ThreadStack) -> list[str]:
    lines = []
    if t.waits_for is not None and t.waits_for < len(r.locks):
        lk = r.locks[t.waits_for]
        how = {"with": ", by with", "acquire": ", by acquire()"}.get(t.wait_how or "", "")
        lines.append(f"    waiting to acquire {_lock_label(r, t.waits_for)} ({KIND[lk.kind]}{how}), "
                     f"{_holder_text(r, lk, t.ident)}")
    for n in t.holds:
        if n < len(r.locks):
            lk = r.locks[n]
            count = f", count {lk.count}" if lk.count and lk.count > 1 else ""
            by = "" if lk.held_by == "owner" else ", inside its with or after its acquire()"
            lines.append(f"    holds {_lock_label(r, n)} ({KIND[lk.kind]}{count}{by})")
    return lines


def thread_title(t: ThreadStack) -> str:
    """pystack's title, as flight_profiler prints it on Linux (`Traceback for thread 4242 (name) [Has the
    GIL] (most recent call last):`), numbered by the OS thread id when known, with our facts after it."""
    number = t.native_id if t.native_id is not None else t.ident
    state = [s for s, on in (("holds the GIL", t.holds_gil), ("waiting for the GIL", t.waiting_for_gil),
                             ("garbage collecting", t.gc_collecting)) if on]
    facts = [f"[{', '.join(state)}]" if state else None,
             f"tid={t.ident}" if t.ident is not None and t.native_id is not None else None,
             f"daemon={t.daemon}" if t.daemon is not None else None]
    return f"Traceback for thread {number} ({t.name}) " + "".join(f"{x} " for x in facts if x) + \
        "(most recent call last):"


ASYNC_HEADER = "Async Coroutine/Task Stacks"   # flight_profiler's `stack -a` header


def render(r: StackResult, color: bool) -> str:
    out = []
    if r.source == "external":
        out.append(paint("(read from outside the process: no code ran in it)", "dim", color))
    top = deadlock_lines(r)
    if top:
        out.extend(paint(line, "red" if r.deadlocks else None, color) for line in top)
        out.append("")
    for t in r.threads:
        out.append(paint(thread_title(t), "bold", color))
        out.extend(_frame_lines(t.frames, color))
        out.extend(paint(line, "red", color) for line in _lock_lines(r, t))
        if t.note:
            out.append(f"    ({t.note})")
        out.append("")
    if r.tasks is not None:
        rule = paint("=" * 60, "bold", color)
        total = r.tasks_total if r.tasks_total is not None else len(r.tasks)
        count = f"{len(r.tasks)} of {total}" if len(r.tasks) < total else f"{total}"
        out += [rule, paint(f"{ASYNC_HEADER}: {count} pending asyncio task(s)", "bold", color), rule]
        for group in _same_chains(r.tasks):
            task = group[0]
            out.append(f'Task "{task.name}" coro={task.coro}')
            if len(group) > 1:
                names = ", ".join(t.name for t in group[1:SAME_CHAIN_NAMED + 1])
                more = f", ... {len(group) - 1 - SAME_CHAIN_NAMED} more" if len(group) - 1 > SAME_CHAIN_NAMED else ""
                out.append(paint(f"  and {len(group) - 1} more task(s) waiting at the same place: {names}{more} "
                                 "(JSON: tasks lists each)", "bold", color))
            out.extend(_frame_lines(task.frames, color))
            if task.waiter_held_in:
                out.append(f"    the awaited future is kept in {task.waiter_held_in}: whatever should set its "
                           "result works there")
            if task.waiter_users:
                out.append("    code using it: " + ", ".join(
                    f"{u.name} (line{'s' if len(u.lines) > 1 else ''} {', '.join(map(str, u.lines))})"
                    for u in task.waiter_users))
            out.append("")
    out.extend(f"note: {n}" for n in r.notes)
    return "\n".join(out).rstrip()


SAME_CHAIN_NAMED = 8   # names of the other tasks of a group shown in the text


def _same_chains(tasks: list[TaskStack]) -> list[list[TaskStack]]:
    """Tasks grouped by where they wait (coroutine, each frame's place, who keeps the awaited future),
    biggest group first: a hundred requests stuck at one await read as one stack."""
    groups: dict[tuple, list[TaskStack]] = {}
    for t in tasks:
        key = (t.coro, t.waiter_held_in, tuple((f.file, f.line, f.name) for f in t.frames))
        groups.setdefault(key, []).append(t)
    return sorted(groups.values(), key=lambda g: -len(g))


TOOL = Tool(
    name="stack", params=StackParams, result=StackResult, run=run, render=render, title="Thread and task stacks",
    description=(
        "Show what every thread of a live Python process is doing right now: each thread's Python frames (file, "
        "line, function, source line), outermost first. Use it first for hangs, deadlocks, stuck requests or high"
        " CPU. It detects deadlocks: for a thread blocked acquiring a threading Lock, RLock, Condition or "
        "Semaphore it names the lock (Catalog._lock) and the thread holding it, and a cycle of such waits comes "
        "first as `DEADLOCK: ... holds X and waits for Y held by ...` (JSON: locks, deadlocks). With locals=true "
        "each frame also shows its local variables as read-only views. With async_tasks=true it also lists every "
        "pending asyncio task and the coroutines it awaits (use when the process runs an event loop: threads "
        "alone then show only the loop's select). With native=true it reads every thread from outside the process"
        " (no code runs in it) and merges the C frames of the interpreter, extensions and libc under the Python "
        "ones, with who holds or waits for the GIL: use it for a process stuck in native code. When the in-"
        "process agent cannot answer in time (a thread holds the GIL, no safe point), stack falls back to that "
        "outside reading by itself (source=external, with the reason in notes). Read-only; attaches on first use."),
)
