"""stack: what every thread (and with async_tasks, every asyncio task) is doing right now.

Two sources, one model: the in-process agent (thread names, source lines, asyncio tasks), or a
reader from outside the process (attach/external_stack.py: native frames, GIL and GC state, and an
answer when the agent cannot run because a thread holds the GIL or no safe point comes).
"""
from __future__ import annotations

import threading
import time
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from ..attach import external_stack, procs, safepoint
from ..errors import FlightError
from ..render import escaped, paint
from ..session import attach_existing
from .base import Call, Cli, TimedParams, Tool


class StackParams(TimedParams):
    async_tasks: Annotated[bool, Cli("-a", "--async")] = Field(
        False, description="Also show every pending asyncio task with the chain of coroutines it awaits.")
    native: Annotated[bool, Cli("--native")] = Field(
        False, description="Merge native (C) frames under the Python ones, read from outside the process.")
    filepath: Annotated[str | None, Cli("-f", "--filepath")] = Field(
        None, description="Also write the text rendering to this file (on the machine running flight-mcp, as its "
                          "user). Over MCP only when the server runs with --allow-mutating; the CLI writes where "
                          "its user asks.")


class Frame(BaseModel):
    file: str
    line: int | None = Field(description="None when the interpreter knows no line for where the frame stands "
                             "(f_lineno is None at some instructions on Python 3.11+).")
    name: str
    qualname: str = ""
    source: str = ""
    kind: Literal["python", "native"] = "python"
    library: str | None = Field(None, description="Native frames: the shared object the function is in.")


class ThreadStack(BaseModel):
    ident: int | None = None
    name: str
    native_id: int | None = None
    daemon: bool | None = None
    main: bool = False
    frames: list[Frame]
    note: str | None = Field(None, description="Why a thread shows no Python frames, or what it is waiting for.")
    holds_gil: bool | None = Field(None, description="Holds the GIL (external reading only; None: unknown).")
    waiting_for_gil: bool | None = Field(None, description="Blocked taking the GIL (external reading only).")
    gc_collecting: bool | None = Field(None, description="Running the garbage collector (external reading only).")


class TaskStack(BaseModel):
    name: str
    coro: str
    frames: list[Frame]


class StackResult(BaseModel):
    pid: int
    source: Literal["agent", "external"] = Field(description="Who read the stacks: the in-process agent, "
                                                 "or a reader from outside the process.")
    threads: list[ThreadStack]
    tasks: list[TaskStack] | None = None
    notes: list[str] = Field(default_factory=list)
    agent_error: str | None = Field(None, description="With source=external after a fallback: the error kind "
                                    "of the agent's attempt (agent_timeout, no_safe_point, inject_failed, ...).")


# Agent errors that a reading from outside cannot cure either: report them as they are.
_NO_FALLBACK = {"no_such_process", "not_python", "bad_pid", "usage", "read_only", "external_unavailable"}

# Processes in which the last outside reading saw an injected agent still waiting for the GIL, keyed
# by (pid, start time) against pid reuse. While it waits, asking again would only spend the deadline
# and inject one more payload, so stack goes straight to the outside reading.
_pending_agents: dict[tuple[int, str], int] = {}


def _identity(pid: int) -> tuple[int, str]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return pid, f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return pid, ""


def _agent_listening(pid: int, call: Call) -> bool:
    if pid in call.sessions.attached():
        return True
    try:
        client = attach_existing(pid)  # connects to a running agent's socket; never injects
    except FlightError:
        return False
    if client is None:
        return False
    client.close()
    return True


def run(p: StackParams, call: Call) -> StackResult:
    if p.filepath:
        call.require_host_write("stack with filepath")
    if p.native:
        result = _external(p, p.timeout_s, call)
    else:
        result = _agent_or_external(p, call)
    if p.filepath:
        try:
            with open(p.filepath, "w") as f:
                f.write(render(escaped(result), False) + "\n")
        except OSError as e:
            raise FlightError("write_failed", f"could not write the stacks to {p.filepath}: {e.strerror}. "
                              "Name a file in a directory you can write, or leave filepath out.")
        result.notes.append(f"written to {p.filepath}")
    return result


def _external(p: StackParams, timeout: float, call: Call | None = None) -> StackResult:
    names: dict = {}
    asker = None
    if call is not None:  # the agent's names, asked while the outside reading runs
        asker = threading.Thread(target=_names_from_running_agent, args=(p.pid, call, names), daemon=True,
                                 name=f"flight-mcp-names-{p.pid}")
        asker.start()
    raw = external_stack.read(p.pid, native=p.native, timeout=timeout)
    if raw["pending_agents"]:
        _pending_agents[_identity(p.pid)] = raw["pending_agents"]
    else:
        _pending_agents.pop(_identity(p.pid), None)
    if asker is not None:
        asker.join(_NAMES_GRACE_S)
    threads = [ThreadStack(**t) for t in raw["threads"]]
    notes = raw["notes"]
    named = _apply_names(threads, dict(names))
    if not p.native:
        notes.append("native frames are left out: call with native=true (CLI: --native) to see them.")
    if named:
        notes.append(f"thread names of {named} thread(s) come from the agent already running in the process; "
                     "the frames were read from outside.")
    else:
        notes.append("thread names are the OS thread names (Python's threading names are readable only from "
                     "inside); native_id matches threading.get_native_id().")
    if p.async_tasks:
        notes.append("asyncio tasks are listed only by the in-process agent: " + (
            "call without native=true for them." if p.native else "it did not answer."))
    return StackResult(pid=raw["pid"], source="external", threads=threads, notes=notes)


# How long an attach started by stack may go on in the background after stack answered from outside.
ATTACH_GRACE_S = 5.0

# How long the names may lag behind the outside reading (they are asked for in parallel with it).
_NAMES_GRACE_S = 0.3


def _names_from_running_agent(pid: int, call: Call, out: dict) -> None:
    """native_id -> the agent's thread facts, only from an agent that already runs: never injects."""
    try:
        if pid in call.sessions.attached():
            raw = call.sessions.get(pid).request("stack", {"async": False, "allow_mutating": False}, timeout=2.0)
        else:
            client = attach_existing(pid)
            if client is None:
                return
            try:
                raw = client.request("stack", {"async": False, "allow_mutating": False}, timeout=2.0)
            finally:
                client.close()
    except Exception:  # names are a nicety: the outside reading stands without them
        return
    out.update({t["native_id"]: t for t in raw.get("threads", ()) if t.get("native_id")})


def _apply_names(threads: list[ThreadStack], by_native_id: dict) -> int:
    named = 0
    for t in threads:
        seen = by_native_id.get(t.native_id)
        if seen:
            t.name, t.ident, t.daemon = seen["name"], seen.get("ident"), seen.get("daemon")
            named += 1
    return named


def _ask_agent(p: StackParams, call: Call, budget: float) -> dict:
    """The agent's answer within `budget` seconds, attach included, or a FlightError saying why not.

    We wait `budget` at most, but an attach under way goes on in the background for up to
    ATTACH_GRACE_S, so the next call finds the agent (one waiting for the GIL starts once it is free).
    """
    box: dict = {}

    def ask() -> None:
        try:
            call.client(p.pid, max(budget, ATTACH_GRACE_S))
            box["raw"] = call.request(p, "stack", {"async": p.async_tasks}, timeout=budget)
        except FlightError as e:
            box["error"] = e
        except Exception as e:  # never a traceback to the user; the fallback still answers
            box["error"] = FlightError("agent_failed", f"asking the agent failed: {type(e).__name__}: {e}")

    worker = threading.Thread(target=ask, name=f"flight-mcp-stack-{p.pid}", daemon=True)
    worker.start()
    worker.join(budget)
    if "raw" in box:
        return box["raw"]
    if "error" in box:
        raise box["error"]
    raise _why_no_answer(p.pid, budget)


def _why_no_answer(pid: int, budget: float) -> FlightError:
    """Why the attach (still going on in the background) gave no answer within our budget."""
    stopped = procs.stopped_error(pid)
    if stopped is not None:
        return stopped
    try:
        with open(f"/proc/{pid}/maps") as f:
            loaded = f"/inject-{pid}-" in f.read()
    except OSError:
        loaded = False
    if loaded:
        return FlightError("agent_timeout", f"the agent was loaded into pid {pid} but did not answer within "
                           f"{budget:.1f}s: it needs the GIL, so a thread is holding it (a long C call, or a "
                           "native deadlock). It starts by itself once the GIL is free.")
    states = safepoint.survey(pid)
    if states and not any(s.safe for s in states):
        seen = "; ".join(f"thread {s.tid}: {s.why}" for s in states[:6])
        return FlightError("no_safe_point", f"pid {pid} offered no safe point within {budget:.1f}s: flight-mcp "
                           f"only injects into a thread blocked in a system call, and none was ({seen}).")
    return FlightError("agent_timeout", f"attaching to pid {pid} did not finish within {budget:.1f}s.")


def _agent_or_external(p: StackParams, call: Call) -> StackResult:
    key = _identity(p.pid)
    if key in _pending_agents and not _agent_listening(p.pid, call):
        result = _external(p, p.timeout_s)
        result.agent_error = "agent_pending"
        if key in _pending_agents:
            why = "the agent injected earlier is still waiting for the GIL, so some thread holds it."
        else:  # its payload thread is gone without an agent listening: it failed or is starting now
            why = "the agent injected earlier is no longer waiting; the next call asks it again."
        result.notes.insert(0, f"read from outside the process (no code ran in it): {why}")
        return result
    deadline = time.monotonic() + p.timeout_s
    # Keep enough of the deadline for the reading from outside, in case the agent does not answer.
    reserve = min(external_stack.expected_seconds(p.pid), p.timeout_s / 2)
    try:
        raw = _ask_agent(p, call, p.timeout_s - reserve)
    except FlightError as e:
        if e.kind in _NO_FALLBACK:
            raise
        try:
            result = _external(p, max(deadline - time.monotonic(), reserve))
        except FlightError as ext:
            if ext.kind == e.kind:  # the same cause (no permission, process gone): say it once
                raise e
            raise FlightError(e.kind, f"{e.message} Reading pid {p.pid} from outside failed too: {ext.message}")
        result.agent_error = e.kind
        result.notes.insert(0, f"read from outside the process (no code ran in it) because the agent did not "
                               f"answer: {e.message}")
        return result
    return _from_agent(raw, p)


def _from_agent(raw: dict, p: StackParams) -> StackResult:
    threads = [ThreadStack(**t) for t in raw["threads"]]
    notes = []
    for t in threads:
        if not t.frames and t.note is None:
            t.note = ("no Python frames: the thread is running native code or idle inside the "
                      "interpreter (use native=true to see its C frames)")
    tasks = [TaskStack(**t) for t in raw["tasks"]] if "tasks" in raw else None
    if raw.get("async_note"):
        notes.append(raw["async_note"])
    if not p.async_tasks and raw.get("event_loops"):
        notes.append(f"{raw['event_loops']} asyncio event loop(s) have pending tasks: "
                     "call again with async_tasks=true (CLI: -a) to see what each task awaits.")
    return StackResult(pid=raw["pid"], source="agent", threads=threads, tasks=tasks, notes=notes)


def _frame_lines(frames: list[Frame], color: bool) -> list[str]:
    lines = []
    for fr in frames:
        if fr.kind == "native":
            lib = paint(f"({fr.library})", "dim", color) if fr.library else ""
            where = f'File "{fr.file}", line {fr.line}, in ' if fr.line else ""
            lines.append(f"    (C) {where}{paint(fr.name, 'yellow', color)} {lib}".rstrip())
            continue
        line = "?" if fr.line is None else fr.line  # unknown: said so, not guessed
        lines.append(f'    File "{fr.file}", line {line}, in {paint(fr.name, "cyan", color)}')
        if fr.source:
            lines.append(f"        {fr.source}")
    return lines


def render(r: StackResult, color: bool) -> str:
    out = []
    if r.source == "external":
        out.append(paint("(read from outside the process: no code ran in it)", "dim", color))
    for t in r.threads:
        facts = [f"tid={t.ident}" if t.ident is not None else None,
                 f"native_id={t.native_id}" if t.native_id is not None else None,
                 f"daemon={t.daemon}" if t.daemon is not None else None]
        title = f'Thread "{t.name}" ' + " ".join(x for x in facts if x)
        state = [s for s, on in (("holds the GIL", t.holds_gil), ("waiting for the GIL", t.waiting_for_gil),
                                 ("garbage collecting", t.gc_collecting)) if on]
        if state:
            title += " [" + ", ".join(state) + "]"
        out.append(paint(title, "bold", color))
        out.extend(_frame_lines(t.frames, color))
        if t.note:
            out.append(f"    ({t.note})")
        out.append("")
    if r.tasks is not None:
        out.append(paint(f"asyncio tasks: {len(r.tasks)} pending", "bold", color))
        for task in r.tasks:
            out.append(f'Task "{task.name}" coro={task.coro}')
            out.extend(_frame_lines(task.frames, color))
            out.append("")
    out.extend(f"note: {n}" for n in r.notes)
    return "\n".join(out).rstrip()


TOOL = Tool(
    name="stack", params=StackParams, result=StackResult, run=run, render=render, title="Thread and task stacks",
    description=(
        "Show what every thread of a live Python process is doing right now: each thread's Python frames "
        "(file, line, function, source line), outermost first. Use it first for hangs, deadlocks, stuck "
        "requests or high CPU. With async_tasks=true it also lists every pending asyncio task and the "
        "coroutines it awaits (use when the process runs an event loop: threads alone then show only the "
        "loop's select). With native=true it reads every thread from outside the process (no code runs in "
        "it) and merges the C frames of the interpreter, extensions and libc under the Python ones, with "
        "who holds or waits for the GIL: use it for a process stuck in native code. When the in-process "
        "agent cannot answer in time (a thread holds the GIL, no safe point), stack falls back to that "
        "outside reading by itself (source=external, with the reason in notes). Read-only; attaches on "
        "first use."),
)
