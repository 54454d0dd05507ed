"""console: run a snippet of Python inside the target; what it printed and its value (mutating, gated).

Every execution is recorded before it runs and when it ends (code, who, when, outcome) in a log
of the server's user: $XDG_STATE_HOME/flight-mcp/console.log (~/.local/state/... by default),
created 0600 in a 0700 directory, never through a symlink; over MCP also on the server's stderr.
A snippet whose record cannot be written does not run.
"""
from __future__ import annotations

import datetime
import json
import os
import stat
import sys
import uuid
from typing import Annotated, Literal

from pydantic import Field

from .. import statedir
from ..errors import FlightError
from ..models import ExceptionFact, Fact, ValueView
from ..render import paint, traceback_lines, view_lines
from .base import Call, Cli, TimedParams, Tool
from .fields import Expand, Raw, Verbose

# After the deadline the agent takes up to a second to stop the snippet, then answers.
STOP_MARGIN_S = 5.0
LOG_CODE_CHARS = 20000


class ConsoleParams(TimedParams):
    code: Annotated[str, Cli("-c", "--code", positional=True)] = Field(
        description="Python statements to run in the target; the value of a final expression is returned. "
                    "Example: \"import gc; len(gc.get_objects())\".")
    namespace: Annotated[str | None, Cli("--namespace")] = Field(
        None, max_length=200, description="Keep the names the snippet defines under this key for later snippets "
                                          "given the same key (16 keys are kept, the oldest dropped; all gone on "
                                          "detach). Without it each snippet starts with fresh names.")
    expand: Expand = 0
    verbose: Verbose = False
    raw: Raw = False


class ConsoleResult(Fact):
    state: Literal["done", "raised", "stopped", "running"] = Field(
        description="done; raised (error holds the exception); stopped (ran past the deadline or was cancelled, and "
                    "was interrupted); running (could not be interrupted: blocked in C code; it goes on in the "
                    "background, its further output dropped).")
    stopped_by: Literal["deadline", "cancel"] | None = None
    started: float = Field(description="When it started (epoch seconds).")
    duration_s: float
    output: str = Field(description="What the snippet printed (print, sys.stdout, sys.stderr).")
    output_elided: int = Field(description="Characters printed beyond the 64 KiB kept.")
    value: ValueView | None = Field(None, description="The final expression's value (None: no final expression, "
                                                      "or it was None).")
    error: ExceptionFact | None = None
    python: str = Field(description="The target's Python version (sys.version).")
    platform: str


def log_path() -> str:
    return os.path.join(statedir.root(), "console.log")


def _open_log() -> int:
    """The log's fd for appending: a regular file owned by us, opened without following a link, in
    a directory that is ours (created 0700 when absent), the file created 0600."""
    d = statedir.private(statedir.root())
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(os.path.join(d, "console.log"), flags, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise OSError("console.log is not a regular file of this user")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _who(call: Call) -> dict:
    try:
        import pwd
        user = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        user = str(os.getuid())
    # On the CLI this process is the client; over MCP (stdio) the client is the server's parent.
    return {"user": user, "uid": os.getuid(), "via": "cli" if call.on_cli else "mcp",
            "client_pid": os.getpid() if call.on_cli else os.getppid(), "server_pid": os.getpid()}


def record(entry: dict, call: Call) -> None:
    """Appends one record (a JSON line) to the log, and over MCP to the server's stderr."""
    line = json.dumps(entry, ensure_ascii=True) + "\n"
    try:
        fd = _open_log()
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise FlightError("write_failed", f"console records every snippet in {log_path()} before running it, and "
                          f"that failed ({e}); the snippet did not run. Make the directory writable (or set "
                          "XDG_STATE_HOME to one that is).") from None
    if not call.on_cli:
        sys.stderr.write("flight-mcp console: " + line)
        sys.stderr.flush()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def run(p: ConsoleParams, call: Call) -> ConsoleResult:
    run_id = uuid.uuid4().hex[:12]
    base = {"id": run_id, **_who(call), "target_pid": p.pid}
    if not call.may_change_target:
        record({"time": _now(), "event": "refused", **base, "code": p.code[:LOG_CODE_CHARS]}, call)
    call.require_mutating("console")
    record({"time": _now(), "event": "run", **base, "code": p.code[:LOG_CODE_CHARS],
            "code_chars": len(p.code)}, call)
    try:
        result = ConsoleResult(**call.request(p, "console", p.agent_args(), budget_arg="timeout_s",
                                              margin=STOP_MARGIN_S))
    except FlightError as e:
        record({"time": _now(), "event": "error", **base, "error": e.code, "message": e.message[:2000]}, call)
        raise
    except BaseException as e:
        record({"time": _now(), "event": "error", **base, "error": type(e).__name__}, call)
        raise
    record({"time": _now(), "event": "end", **base, "state": result.state, "duration_s": result.duration_s,
            "output_chars": len(result.output) + result.output_elided,
            "value": result.value.repr[:500] if result.value is not None else None,
            "error": f"{result.error.type}: {result.error.message}" if result.error is not None else None}, call)
    return result


def result_lines(r: ConsoleResult, color: bool) -> list[str]:
    """What a Python REPL would print: the output, the traceback, the value's repr (+ expansion)."""
    lines = []
    if r.output:
        lines.extend(r.output.rstrip("\n").split("\n"))
    if r.output_elided:
        lines.append(paint(f"... {r.output_elided} more characters of output dropped (64 KiB are kept)", "yellow", color))
    if r.error is not None:
        tb = traceback_lines(r.error)
        lines.extend(tb[:-1])
        lines.append(paint(tb[-1], "red", color))
    if r.value is not None:
        lines.extend(view_lines(r.value))
    if r.state == "stopped":
        why = "the deadline (timeout_s) passed" if r.stopped_by == "deadline" else "it was cancelled"
        lines.append(paint(f"stopped after {r.duration_s:.3f}s: {why}; the snippet was interrupted (ConsoleDeadline "
                           "raised in it) and the target goes on", "yellow", color))
    elif r.state == "running":
        lines.append(paint(f"NOT stopped: the snippet is blocked inside C code (a sleep, a lock, I/O) past the "
                           f"deadline and cannot be interrupted there; it goes on in the background and ends when "
                           f"that call returns (its output is dropped)", "red", color))
    return lines


def render(r: ConsoleResult, color: bool) -> str:
    return "\n".join(result_lines(r, color))


TOOL = Tool(
    name="console", params=ConsoleParams, result=ConsoleResult, run=run, render=render,
    title="Run Python inside the target",
    read_only=False, destructive=True,
    description=(
        "Run a snippet of Python inside the live process and get what it printed and the value of its final "
        "expression (a safe view), or its exception with traceback. For what no read-only tool answers; prefer "
        "getglobal/vmtool/watch for reading state. The snippet sees the process's modules through import; its "
        "prints are captured, never written to the process's stdout; it is stopped at the deadline (code blocked "
        "in C cannot be interrupted: the answer says so). Each run is logged (code, who, when, outcome). "
        "Example: code=\"import threading; [t.name for t in threading.enumerate()]\". Arbitrary code changes "
        "the target: only when the server runs with --allow-mutating."),
)
