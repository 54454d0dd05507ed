"""stack: what every thread (and with async_tasks, every asyncio task) is doing right now."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from ..render import paint
from .base import Call, Cli, TimedParams, Tool


class StackParams(TimedParams):
    async_tasks: Annotated[bool, Cli("-a", "--async")] = Field(
        False, description="Also show every pending asyncio task with the chain of coroutines it awaits.")
    native: Annotated[bool, Cli("--native")] = Field(
        False, description="Merge native (C) frames under the Python ones, read from outside the process.")
    filepath: Annotated[str | None, Cli("-f", "--filepath")] = Field(
        None, description="Also write the text rendering to this file (on the machine running flight-mcp).")


class Frame(BaseModel):
    file: str
    line: int
    name: str
    qualname: str = ""
    source: str = ""
    kind: Literal["python", "native"] = "python"


class ThreadStack(BaseModel):
    ident: int | None = None
    name: str
    native_id: int | None = None
    daemon: bool | None = None
    main: bool = False
    frames: list[Frame]
    note: str | None = Field(None, description="Why a thread shows no Python frames, or what it is waiting for.")


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


def run(p: StackParams, call: Call) -> StackResult:
    raw = call.request(p.pid, "stack", {"async": p.async_tasks}, timeout=p.timeout_s)
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
    result = StackResult(pid=raw["pid"], source="agent", threads=threads, tasks=tasks, notes=notes)
    if p.filepath:
        with open(p.filepath, "w") as f:
            f.write(render(result, False) + "\n")
        result.notes.append(f"written to {p.filepath}")
    return result


def _frame_lines(frames: list[Frame], color: bool) -> list[str]:
    lines = []
    for fr in frames:
        if fr.kind == "native":
            lines.append(f"    (C) {fr.name} " + paint(f"{fr.file}", "dim", color))
            continue
        lines.append(f'    File "{fr.file}", line {fr.line}, in {paint(fr.name, "cyan", color)}')
        if fr.source:
            lines.append(f"        {fr.source}")
    return lines


def render(r: StackResult, color: bool) -> str:
    out = []
    for t in r.threads:
        facts = [f"tid={t.ident}" if t.ident is not None else None,
                 f"native_id={t.native_id}" if t.native_id is not None else None,
                 f"daemon={t.daemon}" if t.daemon is not None else None]
        title = f'Thread "{t.name}" ' + " ".join(x for x in facts if x)
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
        "loop's select). Read-only; attaches on first use."),
)
