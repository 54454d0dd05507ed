"""The MCP server: wires every tool of flight_mcp/tools/ into the official SDK, nothing more.

Each tool is registered with a flat signature made from its Params model (agents handle flat
arguments best), returns its text rendering as content and its Result as structuredContent,
and runs its blocking work on a worker thread so progress and cancellation keep flowing.
A warm call costs a few ms, most of them the SDK's own (bench/mcp_call.py shows where they go): a
call is validated once by its Params (_Server.call_tool), stdio pipes are read and written by the
event loop itself (mcp_stdio.py), and the output schemas say `X | None` in the form a client's
validator checks fastest (mcp_schema.py).
"""
from __future__ import annotations

import difflib
import inspect
from contextlib import contextmanager
from typing import Annotated, Any, Iterator

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import UnexpectedToolError
from mcp.server.mcpserver.resources import TextResource
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import AfterValidator, Field, ValidationError

from . import __version__, fleet, mcp_schema
from .errors import FlightError
from .render import escape
from .session import Sessions
from .skills import all_skills
from .tools import all_tools
from .tools.base import Call, Tool, validation_problems

INSTRUCTIONS = """\
flight-mcp looks inside a RUNNING Python process (CPython 3.8+) without restarting it.
Typical flow: list_processes -> pick the pid (for gunicorn/uvicorn/celery pick a worker) ->
stack (what is every thread doing? async_tasks=true for asyncio) -> getglobal without a field to
list a module's names -> watch a function to see real arguments/return values/exceptions ->
trace it to see which sub-call is slow. Module names are as the target imported them: the
script that was run is '__main__'; the `module` tool maps a file path to its module name.
Expressions (filters, expr) see: target (instance or value), args (without self), kwargs,
params (arguments by parameter name), return_obj, cost (ms), instances (vmtool). watch/trace wait for calls until `limit` calls were
captured or `timeout_s` passes; every result says how many calls were seen/matched/captured.
All instrumentation is removed when a call ends. Each tool has a guide with examples as an MCP
resource skill://flight-mcp-<tool> (start with skill://flight-mcp-attach). The server is read-only unless started with
--allow-mutating (reload, vmtool forceGc, expressions with side effects). Read-only means: expressions
run none of the target's own code and cannot run away (a property, __getattr__, a generator or an
oversized operation is refused with what to read instead), values are shown from their
__dict__/__slots__, and a target's own __repr__ runs only with raw=true, time-boxed, off the
application's threads.
"""


def _signature(tool: Tool) -> inspect.Signature:
    params = []
    for name, f in tool.params.model_fields.items():
        meta = Field(default=f.default if not f.is_required() else ..., description=f.description)
        for m in f.metadata:  # keep bounds (ge/le/gt) so the schema states them; our validators run
            if not hasattr(m, "flags") and not isinstance(m, AfterValidator):  # in handler(), worded as ours
                meta.metadata.append(m)
        ann = Annotated[f.annotation, meta]
        default = inspect.Parameter.empty if f.is_required() else f.default
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann))
    params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context))
    return inspect.Signature(params, return_annotation=Annotated[CallToolResult, fleet.output_model(tool)])


def _error(e: FlightError) -> CallToolResult:
    """An error as text (code, what happened, what to do) and as structuredContent {"error": {code,
    message, hint, argument}}, so a client can branch on the code."""
    fact = {k: escape(v) if isinstance(v, str) else v for k, v in e.as_fact().items()}
    text = f"{fact['code']}: {fact['message']}" + (f"\nhint: {fact['hint']}" if fact["hint"] else "")
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content={"error": fact},
                          is_error=True)


async def run_tool(tool: Tool, params, ctx: Context, sessions: Sessions, allow_mutating: bool) -> CallToolResult:
    """One tool call with validated params: its blocking work on a worker thread (progress and
    cancellation keep flowing on the loop), its text as content and its Result as structuredContent."""
    def progress(done: float, total: float | None, message: str) -> None:
        try:
            anyio.from_thread.run(ctx.report_progress, done, total, message)
        except Exception:
            pass  # a client that went away must not break the capture

    call = Call(sessions, allow_mutating=allow_mutating, progress=progress)
    try:
        result = await anyio.to_thread.run_sync(tool.invoke, params, call, abandon_on_cancel=True)
    except FlightError as e:
        return _error(e)
    finally:
        # Cancelled by the client (or done): the worker sees this and cancels the agent command,
        # which removes its instrumentation.
        call.cancel_event.set()
    return CallToolResult(content=[TextContent(type="text", text=tool.text(result, False))],
                          structured_content=result.model_dump(mode="json"))


def make_handler(tool: Tool, sessions: Sessions, allow_mutating: bool):
    """The function the SDK registers: its signature makes the tool's input and output schemas. Calls
    come through _Server.call_tool, which validates the arguments once and runs run_tool itself."""
    async def handler(**kwargs: Any) -> CallToolResult:
        ctx: Context = kwargs.pop("ctx")
        params = parse_arguments(tool, kwargs)
        if isinstance(params, FlightError):
            return _error(params)
        return await run_tool(tool, params, ctx, sessions, allow_mutating)

    handler.__name__ = tool.name
    handler.__signature__ = _signature(tool)
    handler.__annotations__ = {"ctx": Context}
    return handler


def parse_arguments(tool: Tool, arguments: dict[str, Any]):
    """The caller's arguments as the tool's Params, or the FlightError that says what is wrong: an
    unknown argument is refused naming the closest known one (the SDK would drop it silently and
    run with the default), and a wrong type gets the same worded error as the CLI (the SDK's is
    pydantic's raw text with a documentation URL)."""
    known = [n for n in tool.params.model_fields]
    unknown = [k for k in arguments if k not in tool.params.model_fields]
    if unknown:
        said = []
        for k in unknown:
            close = difflib.get_close_matches(k, known, n=1, cutoff=0.5)
            said.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return FlightError("usage", f"{tool.name}: unknown argument{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(said)}; its arguments: {', '.join(known)}", arg=unknown[0])
    try:
        return tool.params.model_validate(arguments)
    except ValidationError as e:
        errors = e.errors()
        missing = [str(err["loc"][0]) for err in errors if err["type"] == "missing" and err["loc"]]
        if missing and len(missing) == len(errors):
            return FlightError("usage", f"{tool.name}: missing required argument{'s' if len(missing) > 1 else ''} "
                               f"{', '.join(map(repr, missing))}", arg=missing[0])
        return FlightError("usage", f"{tool.name}: invalid arguments: " + validation_problems(e, str),
                           arg=".".join(map(str, errors[0]["loc"])) if errors[0]["loc"] else None)


class _Server(MCPServer):
    """The SDK's server, where a call of one of our tools is validated once, by the tool's own Params
    (parse_arguments), and run by run_tool: the SDK's own path would validate the arguments twice more
    (its generic model, then ours) and validate the answer again against the model it was made from."""

    def __init__(self, tools: dict[str, Tool], sessions: Sessions, allow_mutating: bool, **kwargs):
        super().__init__(**kwargs)
        self._flight_tools = tools
        self._sessions = sessions
        self._allow_mutating = allow_mutating

    async def call_tool(self, name: str, arguments: dict[str, Any], context=None):
        tool = self._flight_tools.get(name)
        registered = self._tool_manager.get_tool(name)
        if tool is None or registered is None:
            return await super().call_tool(name, arguments, context)
        # pre_parse_json: what the SDK does first (a client may send a list as a JSON string)
        params = parse_arguments(tool, registered.fn_metadata.pre_parse_json(dict(arguments or {})))
        if isinstance(params, FlightError):
            return _error(params)
        if context is None:  # called from Python, not by a client: the SDK makes the Context
            return await super().call_tool(name, arguments, context)
        try:
            return await run_tool(tool, params, context, self._sessions, self._allow_mutating)
        except MCPError:
            raise
        except Exception as e:  # as the SDK says a tool's crash: no text of it reaches the client
            raise UnexpectedToolError(f"Error executing tool {name}") from e

    async def run_stdio_async(self) -> None:
        """The SDK's stdio serving, with stdin and stdout read and written by the event loop (mcp_stdio)
        when they are pipes, as an MCP client gives them."""
        from . import mcp_stdio
        if not mcp_stdio.usable():
            return await super().run_stdio_async()
        from mcp.server.stdio import stdio_server
        async with mcp_stdio.streams() as (stdin, stdout), stdio_server(stdin, stdout) as (read, write):
            await self._lowlevel_server.run(read, write, self._lowlevel_server.create_initialization_options())


def build(allow_mutating: bool = False) -> tuple[MCPServer, Sessions]:
    sessions = Sessions()
    mode = "mutating tools ENABLED" if allow_mutating else "read-only"
    tools = all_tools()
    server = _Server(tools, sessions, allow_mutating, name="flight-mcp", version=__version__,
                     instructions=INSTRUCTIONS + f"\nThis server: {mode}.")
    for tool in tools.values():
        server.add_tool(
            make_handler(tool, sessions, allow_mutating), name=tool.name, title=tool.title or None,
            description=tool.description,
            annotations=ToolAnnotations(read_only_hint=tool.read_only, destructive_hint=tool.destructive,
                                        idempotent_hint=tool.read_only, open_world_hint=False),
        )
        # the same schema in fewer steps for the client's validator, before it is first published
        # (FuncMetadata's fields are read live)
        metadata = server._tool_manager.get_tool(tool.name).fn_metadata
        metadata.output_schema = mcp_schema.compact(metadata.output_schema)
    # The skills travel with the server, so an agent that has only the server still gets them.
    for name, description, text in all_skills():
        server.add_resource(TextResource(uri=f"skill://{name}", name=name, description=description,
                                         mime_type="text/markdown", text=text))
    return server, sessions


@contextmanager
def serving(allow_mutating: bool = False) -> Iterator[MCPServer]:
    """The server, for a transport to run; when the block ends, however it ends, every session with a
    target is closed (each agent cancels that connection's commands and removes their instrumentation)."""
    server, sessions = build(allow_mutating)
    try:
        yield server
    finally:
        sessions.close()


def serve_stdio(allow_mutating: bool = False) -> None:
    with serving(allow_mutating) as server:
        server.run("stdio")
