"""The arguments several tools take, defined once: one name, one range, one meaning over MCP, and
the CLI spellings of flight_profiler as aliases. A tool sets its own default (`expand: Expand = 1`);
a description never restates it (the schema carries it)."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..expressions import CAPTURE_NAMES, names_known
from .base import Cli

Module = Annotated[str, Cli("--mod", positional=True), Field(
    description="Module name as the target imported it ('__main__' for the script that was run). Never imported "
                "by flight-mcp: it must already be loaded in the target.")]
ClassName = Annotated[str | None, Cli("--cls", positional=True), Field(
    description="Class in `module` (dotted for nested classes: Outer.Inner); omit for the module itself.")]
Method = Annotated[str, Cli("--func", "--method", positional=True), Field(
    description="Function or method name (methods, classmethods, staticmethods, async functions and generators "
                "all work; decorated functions are unwrapped to the real one).")]
Expand = Annotated[int, Cli("-x", "--expand"), Field(
    ge=0, le=6, description="Levels of contents to expand in a value (0 = its one-line text only).")]
Verbose = Annotated[bool, Cli("-v", "--verbose"), Field(
    description="Show every item of long containers (else the first and last 5) and dunder names.")]
Raw = Annotated[bool, Cli("-r", "--raw"), Field(
    description="Show each value as its own repr() on one line: the target's __repr__ runs on an agent thread, at "
                "most 200 ms per object (else shown as timed out). Without it no code of the target runs: objects "
                "are shown from their __dict__/__slots__.")]
# No upper bound: people type `-n 100000000` to mean "until I stop"; what a tool keeps in memory is
# bounded by the tool (a capture keeps the latest KEPT_RECORDS), not by this number.
Limit = Annotated[int, Cli("-n", "--limits", "--limit"), Field(
    ge=1, description="The most items to capture or show.")]
# What an agent needs to know before writing an expression (the refusal message says the rest).
READ_ONLY_RULES = (" Read-only (unless the server runs with --allow-mutating): attributes, subscripts, operators, "
                   "comprehensions, builtins (len, isinstance, sorted, getattr, ...), read-only methods of builtin "
                   "values (dict.get/items, str methods) and of the standard library's locks, events, threads "
                   "and futures (lock.locked(), event.is_set(), queue.qsize(), thread.name, fut.done()); no method "
                   "or property of the application's own classes and no repr() of its objects: read the fields "
                   "they use instead.")
FilterExpr = Annotated[str | None, Cli("-f", "--filter_expr", "--filter"), names_known(*CAPTURE_NAMES), Field(
    description="Python expression; only calls where it is truthy count. Names: target (the instance for methods, "
                "else None), args (WITHOUT self), kwargs, params (every argument by parameter name), return_obj, "
                "cost (ms). Example: \"args[0] >= 1\" or \"params['timeout'] > 5\". A "
                "filter that raises counts the call as not matching." + READ_ONLY_RULES)]
