"""What every tool is made of, and the one place flags are spelled.

A tool module defines a Params model (its fields carry their CLI spelling with `Cli(...)`), a
Result model, `run(params, call) -> Result` and `render(result, color) -> str`, and exports them
as `TOOL = Tool(...)`. The MCP input schema, the `--cmd` parser and the skill docs' flag tables
all derive from the Params model; the text, the JSON and the CLI output all derive from Result.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from ..errors import FlightError

DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Cli:
    """CLI spellings of a field (`Cli("-i", "--interval")`), or a positional slot (`Cli(positional=True)`)."""
    flags: tuple[str, ...] = ()
    positional: bool = False

    def __init__(self, *flags: str, positional: bool = False):
        object.__setattr__(self, "flags", flags)
        object.__setattr__(self, "positional", positional)


class Params(BaseModel):
    """Base of every tool's parameters: which process, and how long to wait for it."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    pid: int = Field(description="Process id of the target Python process (list_processes shows them).")


class TimedParams(Params):
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0, le=3600,
                             description="Deadline in seconds for the whole call (attach included).")


def cli_of(model: type[BaseModel], name: str) -> Cli | None:
    for meta in model.model_fields[name].metadata:
        if isinstance(meta, Cli):
            return meta
    return None


class Call:
    """What a running tool may use: the target's agent, progress reports, the cancel flag, the gate."""

    def __init__(self, sessions, *, allow_mutating: bool = False,
                 progress: Callable[[float, float | None, str], None] | None = None):
        self.sessions = sessions
        self.allow_mutating = allow_mutating
        self._progress = progress
        self.cancel_event = threading.Event()

    def client(self, pid: int):
        return self.sessions.get(pid)

    def request(self, pid: int, cmd: str, args: dict, timeout: float = DEFAULT_TIMEOUT_S,
                on_event: Callable[[dict], None] | None = None) -> dict:
        args = dict(args, allow_mutating=self.allow_mutating)  # the agent applies the read-only gate
        return self.client(pid).request(cmd, args, timeout=timeout, on_event=on_event,
                                        cancelled=self.cancel_event.is_set)

    def progress(self, done: float, total: float | None, message: str) -> None:
        if self._progress is not None:
            self._progress(done, total, message)

    def require_mutating(self, what: str) -> None:
        if not self.allow_mutating:
            raise FlightError("read_only", f"{what} changes the target, and this server is read-only. "
                              "Restart it with --allow-mutating (CLI: flight-mcp --allow-mutating PID --cmd ...) "
                              "if changing the target is intended.")


@dataclass
class Tool:
    name: str
    params: type[Params]
    result: type[BaseModel]
    run: Callable[[Any, Call], BaseModel]
    render: Callable[[Any, bool], str]
    description: str
    read_only: bool = True
    destructive: bool = False
    title: str = ""
    # the seed's command word, when it differs from the MCP tool name
    aliases: tuple[str, ...] = field(default_factory=tuple)
