"""source: the code a live process is really running, with its line numbers (Arthas jad)."""
from __future__ import annotations

import datetime
from typing import Annotated, Literal

from pydantic import Field

from ..errors import FlightError

from ..models import Fact
from ..render import paint
from .base import Call, Cli, TimedParams, Tool
from .fields import ClassName, Limit, Module

DiskState = Literal["same", "moved", "differs", "missing", "unknown", "file_missing", "file_too_large", "unreadable"]
NoSource = Literal["builtin", "c_extension", "generated", "file_missing", "file_too_large", "unreadable",
                   "not_in_file", "no_source_file"]


class SourceParams(TimedParams):
    module: Module
    cls: ClassName = None
    method: Annotated[str | None, Cli("--func", "--method", positional=True)] = Field(
        None, description="Function, method or class name in `module` (or in `cls`); omit for the whole class, or "
                          "with no class either, the whole module.")
    nested_method: Annotated[str | None, Cli("-nm", "--nested-method", "--nested_method")] = Field(
        None, description="Instead of `method`, the function of this name defined directly inside it.")
    limit: Limit = 400


class SourceResult(Fact):
    target: str = Field(description="What was asked: module[.Class][.method][.nested].")
    kind: str = Field(description="function, method, classmethod, staticmethod, property, bound method, 'decorated "
                                  "...', nested function, lambda, class, module, builtin function/method/class.")
    qualname: str | None = None
    file: str | None = Field(None, description="The file the running code was compiled from (for C code: the "
                                               "extension's file, when it has one).")
    first_line: int | None = Field(None, description="Line number of lines[0] in that text.")
    lines: list[str] = Field(description="The source lines shown.")
    total_lines: int = Field(description="Lines of the whole def/class/module.")
    elided: int = Field(description="Lines left out at the end (limit, or the 10,000 kept at most).")
    origin: Literal["file", "reload", "linecache"] | None = Field(
        None, description="Where the lines come from: the file now; the text the reload tool last compiled this "
                          "function from; or linecache's copy (read before the file was edited).")
    disk: DiskState = Field("unknown", description="The file on disk against the running code (compiled and "
                            "compared): same; moved (same code, other line numbers); differs (edited, or for a "
                            "class/module: one of its functions differs); missing (the def is no longer in it); "
                            "unknown (nothing to compare); file_missing/file_too_large/unreadable.")
    disk_line: int | None = Field(None, description="Where the def starts in the file now.")
    running_line: int | None = Field(None, description="First line of the running code (co_firstlineno).")
    file_mtime: float | None = Field(None, description="The file's modification time (epoch seconds).")
    reloaded: bool = Field(description="The function (for a class/module: one of its functions) was replaced by "
                                       "the reload tool.")
    reloaded_at: float | None = Field(None, description="When the reload tool last changed it (epoch seconds).")
    reloaded_functions: list[str] = Field(default_factory=list)
    compared: int | None = Field(None, description="Class/module: functions compared with the file.")
    differing: list[str] = Field(default_factory=list, description="Class/module: functions whose code differs "
                                                                   "from the file or is not in it (20 named at most).")
    no_source: NoSource | None = Field(None, description="Why there is no text: builtin (C code of the interpreter), "
                                       "c_extension, generated (compiled from a string, e.g. '<string>'), the file's "
                                       "state, not_in_file (the def is not found in it), no_source_file (.pyc only).")


def run(p: SourceParams, call: Call) -> SourceResult:
    if p.nested_method and not p.method:
        raise FlightError("usage", "{arg:nested_method} names a function defined inside {arg:method}: give "
                          "{arg:method} too.", arg="nested_method")
    return SourceResult(**call.request(p, "source", p.agent_args()))


_NO_SOURCE = {
    "builtin": "it is built into the interpreter (C code): there is no Python source",
    "c_extension": "it is compiled C code of an extension module: there is no Python source",
    "generated": "it was compiled from a string (generated code: exec, namedtuple, dataclass, a template), "
                 "not from a file, and no copy of that text is kept",
    "file_missing": "its source file no longer exists",
    "file_too_large": "its source file is larger than 8 MB",
    "unreadable": "its source file cannot be read by the target's user (or is not valid text)",
    "not_in_file": "its file no longer holds a def of that name (renamed or removed since it was loaded)",
    "no_source_file": "only its compiled .pyc is installed",
}

_DISK = {
    "same": "the file on disk matches the running code",
    "moved": "the file on disk holds the same code at other line numbers (lines were added or removed "
             "above or inside it)",
    "differs": "the file on disk DIFFERS from the running code (edited since it was loaded; a restart or "
               "reload would run the file's version)",
    "missing": "the file on disk no longer defines it: the running code was defined before an edit",
    "file_missing": "the file no longer exists on disk",
    "file_too_large": "the file is too large to compare",
    "unreadable": "the file cannot be read to compare",
}


def _when(epoch: float | None, how: str = " (modified") -> str:
    if epoch is None:
        return ""
    return datetime.datetime.fromtimestamp(epoch).strftime(how + " %Y-%m-%d %H:%M:%S") + (")" if "(" in how else "")


def render(r: SourceResult, color: bool) -> str:
    what = f"{r.kind} {r.qualname or r.target}"
    if r.no_source is not None:
        where = f" ({r.file})" if r.file else ""
        return f"{r.target}: no source for this {r.kind}{where}: {_NO_SOURCE[r.no_source]}.\n"
    lines = [paint(f"{what}  {r.file}:{r.first_line}", "bold", color)]
    notes = []
    if r.origin == "reload":
        notes.append("RELOADED" + (_when(r.reloaded_at, " at") if r.reloaded_at is not None else "") +
                     ": this is the code the reload tool installed (the text it compiled)")
    elif r.reloaded:
        notes.append("reloaded by the reload tool: " + ", ".join(r.reloaded_functions or [r.qualname or r.target]))
    if r.origin == "linecache":
        notes.append("shown from linecache's copy of the file, taken before the file was edited")
    if r.disk in _DISK:
        text = _DISK[r.disk]
        if r.disk == "moved" and r.disk_line is not None:
            text += f"; it starts at line {r.disk_line} now, the running code at line {r.running_line}"
        if r.disk == "differs" and r.differing:
            text += ": " + ", ".join(r.differing)
        if r.disk in ("differs", "moved", "missing"):
            text += _when(r.file_mtime)
        if r.kind in ("class", "module") and r.compared is not None:
            text += f" (compared {r.compared} function(s))"
        notes.append(text)
    if r.origin == "file" and r.disk in ("differs", "missing") and r.kind not in ("class", "module"):
        notes.append(f"the running code's own text is not available: shown is the file's current def; the "
                     f"running code starts at line {r.running_line}")
    for n in notes:
        lines.append(paint("# " + n, "yellow" if r.disk in ("differs", "missing") or r.reloaded else "dim", color))
    first = r.first_line or 1
    width = len(str(first + max(len(r.lines) - 1, 0)))
    for i, text in enumerate(r.lines):
        lines.append(f"{paint(str(first + i).rjust(width), 'dim', color)}  {text}")
    if r.elided:
        lines.append(f"... {r.elided} more lines (of {r.total_lines}): raise the limit (-n) to see them, or ask for "
                     "one method")
    return "\n".join(lines) + "\n"


TOOL = Tool(
    name="source", params=SourceParams, result=SourceResult, run=run, render=render,
    title="Show the source a live process runs",
    description=(
        "Show the source of a live function, method, nested function (nested_method), class or whole module, "
        "with line numbers, read from the file the RUNNING code object was compiled from and checked against "
        "it: says whether the file on disk still matches the running code (same / moved / differs), whether "
        "the function was hot-reloaded, and when there is no source (built-in, C extension, generated code). "
        "Use it before watch/trace to see what a function does, or to confirm which version of a file a process "
        "is running. Example: module='__main__', cls='OrderService', method='process_order'. Read-only; runs "
        "none of the target's code."),
)
