"""`flight-mcp PID --cmd console` with no code: an interactive console on the target, as
flight_profiler's `console` (and Python's code.InteractiveConsole) does.

The lines are read here, on the host, and grouped into statements with code.InteractiveConsole's
own logic (codeop: a block goes on until an empty line); each complete statement runs in the
target through the console tool (so each is gated, bounded by its deadline and logged like any
other), in one namespace kept for this console. Output, value and traceback are printed here.
Ctrl-C while a statement runs stops it in the target; end of input (Ctrl-D, or a closed pipe) or
exit() ends the console with status 0.
"""
from __future__ import annotations

import code
import os
import signal
import sys
import uuid

from .errors import FlightError

PROMPTS = (">>> ", "... ")
_EXIT = {"exit", "exit()", "quit", "quit()"}
# Errors of one statement: the console goes on. Any other error (the target gone, ...) ends it.
_STATEMENT_ERRORS = {"snippet_syntax_error", "console_busy", "bad_agent_reply"}


def _positional_or_code(words: list[str], params) -> bool:
    """Whether a console command line gives code (positionally or with -c/--code)."""
    from .cmdline import _is_bool, flags_of
    table = flags_of(params)
    i = 0
    while i < len(words):
        w = words[i]
        key = w.partition("=")[0]
        if w.startswith("-") and key in table:
            if table[key] == "code":
                return True
            if "=" not in w and not _is_bool(params.model_fields[table[key]].annotation):
                i += 1
        elif not w.startswith("-"):
            return True
        i += 1
    return False


def interactive(pid: int, words: list[str], *, color: bool, allow_mutating: bool) -> int | None:
    """Runs the interactive console when `words` (the split --cmd, starting with `console`) give no
    code; None when they do (the one-shot console runs as any command)."""
    from . import cmdline
    from .tools.console import TOOL

    if _positional_or_code(words[1:], TOOL.params):
        return None
    _, params = cmdline.parse([*words, "--code", ""], {TOOL.name: TOOL}, pid)
    return _Console(params, color=color, allow_mutating=allow_mutating).run()


class _Console(code.InteractiveConsole):
    def __init__(self, params, *, color: bool, allow_mutating: bool):
        super().__init__(filename="<console>")
        from .session import Sessions
        self.params = params.model_copy(update={"namespace": f"console-{os.getpid()}-{uuid.uuid4().hex[:8]}"})
        self.color = color
        self.allow_mutating = allow_mutating
        self.sessions = Sessions()
        self.failed: FlightError | None = None

    def run(self) -> int:
        try:
            first = self._run("")  # attaches, and says which Python the target runs
            if first is None:
                return 1
            print(f"Python {first.python} on {first.platform}\n"
                  f"Each input runs inside process {self.params.pid}; its output is shown here (Ctrl-D or exit() "
                  f"ends this console).\n(RemoteInteractiveConsole)", flush=True)
            self.interact(banner="", exitmsg="")
            if self.failed is not None:
                return 1
            return 0
        finally:
            self.sessions.close()

    def raw_input(self, prompt: str = "") -> str:
        if self.failed is not None:
            raise EOFError
        sys.stdout.flush()
        line = input(prompt)
        if line.strip() in _EXIT and not self.buffer:
            raise EOFError
        return line

    def write(self, data: str) -> None:  # code.InteractiveConsole's messages (KeyboardInterrupt)
        sys.stdout.write(data)
        sys.stdout.flush()

    def runsource(self, source: str, filename: str = "<console>", symbol: str = "single") -> bool:
        try:
            compiled = self.compile(source, filename, symbol)
        except (OverflowError, SyntaxError, ValueError):
            compiled = True   # complete, but wrong for this Python: the target's compiler says why
        if compiled is None:
            return True       # a block goes on
        self._run(source)
        return False

    def _run(self, source: str):
        from .tools.base import Call
        from .tools.console import TOOL

        call = Call(self.sessions, allow_mutating=self.allow_mutating, on_cli=True)
        previous = signal.signal(signal.SIGINT, lambda *_: call.cancel_event.set())
        try:
            result = TOOL.invoke(self.params.model_copy(update={"code": source}), call)
        except FlightError as e:
            from .render import escape
            print(f"error: {escape(e.message)} [{e.code}]", file=sys.stderr if e.code not in _STATEMENT_ERRORS
                  else sys.stdout, flush=True)
            if e.code not in _STATEMENT_ERRORS:
                self.failed = e
            return None
        finally:
            signal.signal(signal.SIGINT, previous)
        text = TOOL.text(result, self.color)  # strings from the target escaped
        if text:
            print(text, flush=True)
        return result
