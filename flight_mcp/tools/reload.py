"""reload: hot-fix one function of a live process from its edited source file (needs --allow-mutating)."""
from __future__ import annotations

import difflib
from typing import Annotated, ClassVar

from pydantic import Field

from ..models import Fact
from ..render import paint
from .base import Call, Cli, TimedParams, Tool
from .fields import ClassName, Method, Module


class ReloadParams(TimedParams):
    module: Module
    cls: ClassName = None
    method: Method
    host_only: ClassVar[frozenset[str]] = TimedParams.host_only | {"verbose"}  # the agent always sends sources

    # not fields.Verbose: here it shows sources, not more of a value
    verbose: Annotated[bool, Cli("-v", "--verbose")] = Field(
        False, description="Also show the full new source of the function (and the old one when known).")


class ReloadResult(Fact):
    module: str
    qualname: str
    kind: str = Field(description="function, method, classmethod, staticmethod, bound method; 'decorated ...' "
                                  "when the def sits behind functools.wraps decorators.")
    file: str
    old_span: list[int] = Field(description="[first, last] line of the code that was running (its file lines "
                                            "at the time it was compiled).")
    new_span: list[int] = Field(description="[first, last] line of the def in the file now (decorators included).")
    changed: bool = Field(description="False when the file's def compiles to the code already running.")
    code_changed: bool
    defaults_changed: bool
    diff: str | None = Field(None, description="Unified diff old -> new source of the def; None when the old "
                                               "source is not known (see old_source_known).")
    old_source_known: bool = Field(description="Whether a copy of the running source could be proven (the last "
                                               "reload's, linecache's, or the file's own when the def is unchanged).")
    instrumentation_kept: int = Field(0, description="Active trace/watch instrumentations moved to the new code.")
    new_source: str | None = Field(None, description="verbose: the def's source in the file now.")
    old_source: str | None = Field(None, description="verbose: the source of the code that was running, when known.")


def run(p: ReloadParams, call: Call) -> ReloadResult:
    call.require_mutating("reload")
    return finish(call.request(p, "reload", p.agent_args()), p.verbose)


DIFF_LINES_LIMIT = 400


def finish(answer: dict, verbose: bool) -> ReloadResult:
    """The agent's facts (both sources of the def) as the Result: the diff made here, the sources
    kept only with verbose."""
    r = ReloadResult(**answer)
    if r.old_source is not None:
        lines = list(difflib.unified_diff(
            r.old_source.splitlines(), r.new_source.splitlines(),
            f"{r.file}:{r.old_span[0]}-{r.old_span[1]} (running before)",
            f"{r.file}:{r.new_span[0]}-{r.new_span[1]} (file, now running)", lineterm=""))
        diff = "\n".join(lines[:DIFF_LINES_LIMIT])
        if len(lines) > DIFF_LINES_LIMIT:
            diff += f"\n... {len(lines) - DIFF_LINES_LIMIT} more diff lines"
        r.diff = diff
    if not verbose:
        r.new_source = r.old_source = None
    return r


def render(r: ReloadResult, color: bool) -> str:
    name = f"{r.module}.{r.qualname}"
    lines = []
    if r.changed:
        lines.append(paint("Reload is done successfully.", "green", color))
    else:
        lines.append("Method source has not changed: the running code already matches the file (nothing swapped).")
    lines.append(f"Located file path: {r.file}")
    lines.append(f"Function: {name} ({r.kind}), lines {r.new_span[0]}-{r.new_span[1]} "
                 f"(running code was lines {r.old_span[0]}-{r.old_span[1]})")
    if r.defaults_changed:
        lines.append("Default argument values were updated too.")
    if r.instrumentation_kept:
        lines.append(f"{r.instrumentation_kept} active trace/watch instrumentation(s) now run on the new code.")
    if r.changed:
        if r.diff:
            lines.append("Changes:")
            lines.extend(_paint_diff(r.diff, color))
        elif not r.old_source_known:
            lines.append("Changes: the previous source is not known (the file was edited before the target kept a "
                         "copy); the next reload of this function will show a diff. Use verbose (-v) to see the new source.")
    if r.new_source is not None:
        lines.append("Extracted method source:")
        lines.append(r.new_source.rstrip("\n"))
    return "\n".join(lines) + "\n"


def _paint_diff(diff: str, color: bool) -> list[str]:
    out = []
    for line in diff.splitlines():
        c = None
        if line.startswith("+") and not line.startswith("+++"):
            c = "green"
        elif line.startswith("-") and not line.startswith("---"):
            c = "red"
        out.append(paint(line, c, color))
    return out


TOOL = Tool(
    name="reload", params=ReloadParams, result=ReloadResult, run=run, render=render,
    title="Hot-reload a function from its file",
    read_only=False, destructive=True,
    description=(
        "Hot-fix a live Python process: re-read ONE function or method (plain, classmethod, staticmethod, or "
        "a def behind functools.wraps decorators) from its source file, compile just that def, and swap the "
        "new code into the existing function object, so every reference (aliases, bound methods, `from x "
        "import f`, decorator wrappers) runs it from the next call. Default values are updated; decorators "
        "and the rest of the module are NOT re-run. Edit the file first, then reload. Returns the file, the "
        "old and new line spans and a unified diff. Refused, with the running code untouched: syntax error, "
        "def no longer in the file, deleted file, lambda, builtin, changed closure variables (e.g. a method "
        "that starts using super()), function <-> generator/coroutine change. An active trace/watch on the "
        "function keeps working on the new code. Changes the target: only when the server runs with "
        "--allow-mutating."),
)
