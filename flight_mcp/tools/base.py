"""What every tool is made of, and the one place flags are spelled.

A tool module defines a Params model (its fields carry their CLI spelling with `Cli(...)`), a
Result model, `run(params, call) -> Result` and `render(result, color) -> str`, and exports them
as `TOOL = Tool(...)`. The MCP input schema, the `--cmd` parser and the skill docs' flag tables
all derive from the Params model; the text, the JSON and the CLI output all derive from Result.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import fleet
from ..errors import FlightError, speak
from ..models import GilWait
from ..render import escape, escaped
from ..session import gil
from ..session.deadline import Deadline
from . import gil_wait

DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Cli:
    """CLI spellings of a field (`Cli("-i", "--interval")`), or a positional slot (`Cli(positional=True)`)."""
    flags: tuple[str, ...] = ()
    positional: bool = False

    def __init__(self, *flags: str, positional: bool = False):
        object.__setattr__(self, "flags", flags)
        object.__setattr__(self, "positional", positional)


@dataclass(frozen=True)
class CliSplit:
    """A CLI-only rewrite, declared on a field next to its `Cli`: a value given with one of `flags`
    fills the fields `into` instead, split at whitespace, else at ':' or the last '.'
    (flight_profiler's vmtool `-c "module Class"`, `-c module.Class`). One part fills only the first
    of them; the next positional word then fills the next slot (`-c module Class` unquoted). The
    field's other flags set it as they are. Nothing of it reaches the MCP schema: over MCP the
    fields are given one by one."""
    flags: tuple[str, ...]
    into: tuple[str, ...]

    def split(self, value: str) -> dict[str, str]:
        value = value.strip()
        parts = value.split()
        if len(parts) == 1:
            parts = value.split(":", 1) if ":" in value else value.rsplit(".", 1)
        return dict(zip(self.into, (p for p in parts if p)))


class Params(BaseModel):
    """Base of every tool's parameters: which process, and how long to wait for it.

    The agent's request is the Params' own dump (agent_args): the agent keeps no defaults and no
    range checks of its own, cross-field rules are model validators here."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)  # built when first used
    # fields the host uses itself, not sent to the agent
    host_only: ClassVar[frozenset[str]] = frozenset({"pid", "timeout_s"})

    pid: int = Field(description="Process id of the target Python process (list_processes shows them).")

    def agent_args(self) -> dict:
        return self.model_dump(exclude=set(self.host_only))


class TimedParams(Params):
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0, le=3600,
                             description="Deadline in seconds for the whole call (attach included).")


def cli_of(model: type[BaseModel], name: str) -> Cli | None:
    field = model.model_fields.get(name)
    for meta in field.metadata if field is not None else ():
        if isinstance(meta, Cli):
            return meta
    return None


def cli_name(model: type[BaseModel], name: str) -> str:
    """How the command line spells argument `name` of model: its flags, its positional slot in
    capitals, or the name itself for one the CLI does not take."""
    if name == "timeout_s":
        return "--timeout"
    cli = cli_of(model, name)
    if cli is None:
        return name
    if cli.positional:
        return name.upper()
    return "/".join(cli.flags) or name


class Call:
    """What a running tool may use: the target's agent, progress reports, the cancel flag, the gate.
    on_cli: a person typed the command (the CLI), rather than an agent calling over MCP."""

    def __init__(self, sessions, *, allow_mutating: bool = False,
                 progress: Callable[[float, float | None, str], None] | None = None, on_cli: bool = False):
        self.sessions = sessions
        self.allow_mutating = allow_mutating
        self.on_cli = on_cli
        self._progress = progress
        self.cancel_event = threading.Event()
        # where a capture's records go as they arrive (the CLI prints them); streamed: the (time, tid)
        # of each record shown so (progress events are best-effort: the answer shows the others)
        self.stream: Callable[[str], None] | None = None
        self.stream_color = False
        self.streamed: set[tuple] = set()

    def request(self, params: Params, cmd: str, args: dict | None = None,
                on_event: Callable[[dict], None] | None = None, *, budget_arg: str | None = None,
                margin: float = 0.0, timeout: float | None = None) -> dict:
        """Runs cmd with params.agent_args() (or args) within timeout (params.timeout_s), attach included:
        the request gets what the attach left. budget_arg names an argument of the agent's set to
        that rest (a capture's own deadline); margin is extra time for its answer to arrive after
        that deadline."""
        timeout = timeout if timeout is not None else getattr(params, "timeout_s", DEFAULT_TIMEOUT_S)
        return self.sessions.request(params.pid, cmd, self.agent_args(params, args), Deadline(timeout), budget_arg=budget_arg, margin=margin,
                                     on_event=on_event, cancelled=self.cancel_event.is_set)

    @property
    def may_change_target(self) -> bool:
        """Whether a command whose whole purpose is to change the target (reload, vmtool forceGc, tt
        replay, console) may run: a person typed it on the CLI, or the server allows mutation. Over
        MCP an agent needs --allow-mutating. Expressions are another matter: they stay read-only
        unless allow_mutating, on the CLI too (a filter is not meant to change anything)."""
        return self.allow_mutating or self.on_cli

    def agent_args(self, params: Params, args: dict | None = None) -> dict:
        """The agent's request: params.agent_args() (or args), and what it may change in the target
        (the agent applies both gates: expressions, and commands that change the target)."""
        return dict(params.agent_args() if args is None else args, allow_mutating=self.allow_mutating,
                    may_change_target=self.may_change_target)

    def progress(self, done: float, total: float | None, message: str) -> None:
        if self._progress is not None:
            self._progress(done, total, escape(message))  # the message describes target data

    def require_mutating(self, what: str) -> None:
        if not self.may_change_target:
            raise FlightError("read_only", f"{what} changes the target, and this server is read-only. "
                              "Restart it with --allow-mutating (CLI: flight-mcp --allow-mutating PID --cmd ...) "
                              "if changing the target is intended.")

    def require_host_write(self, what: str) -> None:
        """Writing a file on the host as the server's user: what a person asks on the CLI, but over
        MCP an agent could overwrite any file the server may write, so it needs --allow-mutating."""
        if not self.on_cli and not self.allow_mutating:
            raise FlightError("read_only", f"{what} writes a file on the machine running flight-mcp, as its user, "
                              "and this server is read-only. Leave it out to get the text in the answer, or "
                              "restart the server with --allow-mutating if writing files is intended.")


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

    def __post_init__(self):
        self.result = gil_wait.with_gil_wait(self.result)  # every answer may say it waited for the GIL
        if self.name in fleet.TOOLS:   # pids / workers_of: the same call on several processes (fleet.py)
            self.params = fleet.with_fleet(self.params)

    def invoke(self, params: Params, call: Call) -> BaseModel:
        """run(), where an answer that does not fit the Result model (an agent of another version,
        a fact we did not expect) becomes an error with its code, never a traceback. The Result
        says how long the call's requests waited for the GIL, when one waited long (session/gil.py)."""
        if fleet.is_fleet(params):
            return fleet.run(self, params, call)
        token = gil.collect()
        try:
            result = self.run(params, call)
            waits = gil.collected(token)
            token = None
            return gil_wait.attach(self.result, result, gil.summary(waits))
        except FlightError as e:  # in the caller's language: the argument names it typed
            waits, token = gil.collected(token), None
            if waits:  # an error that came late says why too (both outputs escape the message)
                e = FlightError(e.code, e.message + "\n" + gil_wait.line(GilWait(**gil.summary(waits))), hint=e.hint,
                                arg=e.arg, **e.extra)
            raise e.spoken(lambda n: cli_name(self.params, n) if call.on_cli else n) from None
        except (ValidationError, KeyError, TypeError, AttributeError) as e:  # a missing or mistyped fact
            what = _first_errors(e) if isinstance(e, ValidationError) else f"{type(e).__name__}: {escape(str(e))}"
            raise FlightError("bad_agent_reply", f"the agent's answer to {self.name} does not fit what this "
                              f"flight-mcp expects ({what}). The target is unaffected. An agent left by another "
                              "flight-mcp version answers differently: detach it and retry; otherwise report "
                              "this.") from None
        finally:
            if token is not None:
                gil.collected(token)

    def text(self, result: BaseModel, color: bool) -> str:
        """The text rendering, with every string from the target escaped (see render.py)."""
        if isinstance(result, fleet.FleetResult):
            return fleet.text(self, result, color)
        text = self.render(escaped(result), color)
        wait = getattr(result, "gil_wait", None)
        return gil_wait.line(escaped(wait)) + "\n" + text if wait is not None else text  # first: it changes the reading


def validation_problems(e: ValidationError, name_of: Callable[[str], str]) -> str:
    """A validation error of the caller's arguments, each argument spelled by name_of (a model
    validator's message names arguments as {arg:NAME})."""
    out = []
    for err in e.errors():
        msg = speak(err["msg"].removeprefix("Value error, "), name_of)
        where = ".".join(name_of(str(x)) if i == 0 else str(x) for i, x in enumerate(err["loc"]))
        out.append(f"{where}: {msg}" if where else msg)
    return "; ".join(out)


def _first_errors(e: ValidationError, most: int = 3) -> str:
    errors = e.errors()
    said = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}, got {escape(repr(x.get('input')))[:80]}"
                     for x in errors[:most])
    return said + (f"; {len(errors) - most} more" if len(errors) > most else "")
