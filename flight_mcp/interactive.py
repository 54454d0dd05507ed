"""`flight-mcp PID` without --cmd: an interactive session, as flight_profiler's `flight_profiler PID`.

It attaches once (the `attach` tool's own text is the banner), then reads one command of the --cmd
language per line and runs it through cli.run_command with the session's one Sessions object: the
same parser, tools and renderers as --cmd, and the agent stays attached between commands. Ctrl-C
while a command runs ends it the way --cmd does (run_command's SIGINT handler sets the call's cancel
event: the agent removes the instrumentation and the command shows what it captured); Ctrl-C at
the prompt clears the line; Ctrl-D, `exit` or `quit` leaves (closing the connection ends whatever
this session still had running in the target).

On a terminal: readline line editing, a persistent history (History, under the user's state
directory), Tab completion (Completer: commands, flags, and module/class/method names read from the
live target by the agent's `complete` command, cached per session). When stdin is not a terminal,
each line is a command and nothing but the commands' output goes to stdout (`echo stack | flight-mcp
PID`). Either way the exit status is 1 when a command failed.

Besides the tools' commands: `help [CMD]`, `history [-n N] [-c]`, `exit`/`quit`/`stop`, and `CMD -h`.
"""
from __future__ import annotations

import os
import shlex
import stat
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from . import statedir
from .errors import FlightError
from .render import escape, paint

HISTORY_SHOWN = 20        # `history` without -n, as flight_profiler
LEAVE = ("exit", "quit", "stop")   # flight_profiler's three
SESSION_HELP = """\
SESSION
  help [CMD], CMD -h     every command, or one command's usage, options and examples
  history [-n N] [-c]    the last N commands typed (20), or clear them; kept in {path}
  exit, quit, stop       leave, as Ctrl-D does (what this session still runs in the target is removed)
  Ctrl-C                 stops the running command (its instrumentation removed at once), or clears the line
  Tab                    completes commands, flags, and the target's module, class and method names"""
HISTORY_USAGE = "history [-n N] [-c]: the last N commands typed (default 20); -c forgets them all"


# ---------------------------------------------------------------- history

def history_path(env=None) -> Path:
    """$XDG_STATE_HOME/flight-mcp/history, else ~/.local/state/flight-mcp/history (the XDG default)."""
    return Path(statedir.root(env)) / "history"


class History:
    """The commands typed, one a line, in a file only its user can read or write (the directory 0700,
    the file 0600; a directory or file of another user, a symlinked directory or file is refused, and
    the history then lasts only for the session). Appended line by line, so a session that dies keeps
    what it had; at most KEEP lines are loaded, and the file is cut back to KEEP when it doubles."""
    KEEP = 1000

    def __init__(self, path: Path | None):
        self.path = path
        self.lines: list[str] = []
        self.problem: str | None = None    # why nothing is kept on disk
        self._in_file = 0
        if path is not None and os.path.lexists(path):  # reading creates nothing: the first add does
            try:
                with self._open() as f:
                    data = f.read().decode("utf-8", "replace").splitlines()
                self._in_file = len(data)
                self.lines = [line for line in data if line.strip()][-self.KEEP:]
            except OSError as e:
                self._give_up(e)

    def _open(self, truncate: bool = False):
        statedir.private(str(self.path.parent))
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
                raise OSError(f"{self.path} is not a file of this user")
            if st.st_mode & 0o077:
                os.fchmod(fd, 0o600)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb+")

    def _give_up(self, e: OSError) -> None:
        self.problem = f"history not kept on disk: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
        self.path = None

    def add(self, line: str) -> bool:
        """Records a typed line (not an empty one, nor the same as the one before); True if recorded."""
        line = line.strip()
        if not line or "\n" in line or (self.lines and self.lines[-1] == line):
            return False
        self.lines.append(line)
        del self.lines[:-self.KEEP]
        if self.path is not None:
            try:
                if self._in_file >= 2 * self.KEEP:
                    self._rewrite()
                else:
                    with self._open() as f:
                        f.write(line.encode("utf-8", "replace") + b"\n")
                    self._in_file += 1
            except OSError as e:
                self._give_up(e)
        return True

    def _rewrite(self) -> None:
        with self._open(truncate=True) as f:
            f.write("".join(line + "\n" for line in self.lines).encode("utf-8", "replace"))
        self._in_file = len(self.lines)

    def clear(self) -> None:
        self.lines = []
        if self.path is not None:
            try:
                self._rewrite()
            except OSError as e:
                self._give_up(e)

    def last(self, n: int, current: str | None = None) -> list[tuple[int, str]]:
        """The last n entries as (number from 1, line); current: the line being run when it is not
        recorded (a --cmd), shown last as a shell's `history` shows itself."""
        lines = self.lines + ([current] if current else [])
        first = max(len(lines) - n, 0)
        return [(i + 1, lines[i]) for i in range(first, len(lines))]


def history_command(history: History, args: list[str], current: str | None = None) -> str:
    """`history [-n N] [-c]`: the last N entries numbered, or (-c) none left."""
    n, clear, i = HISTORY_SHOWN, False, 0
    while i < len(args):
        word = args[i]
        key, eq, value = word.partition("=")
        if key in ("-c", "--clear") and not eq:
            clear = True
        elif key in ("-n", "--limits", "--limit"):
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            if not value.isdigit() or int(value) < 1:
                raise FlightError("usage", f"history: {key} needs a positive number of commands, got "
                                  f"{value or 'nothing'!r}. Usage: {HISTORY_USAGE}")
            n = int(value)
        else:
            raise FlightError("usage", f"history: unexpected {word!r}. Usage: {HISTORY_USAGE}")
        i += 1
    if clear:
        history.clear()
        return ""
    entries = history.last(n, current)
    width = len(str(entries[-1][0])) if entries else 1
    return "\n".join(f"  {str(k).rjust(width)}  {escape(line)}" for k, line in entries)


def history_once(words: list[str]) -> int:
    """`--cmd "history ..."`: the session's history, read from its file (nothing written but -c)."""
    history = History(history_path())
    if history.problem:
        print(history.problem, file=sys.stderr)
    text = history_command(history, words[1:], current=shlex.join(words))
    if text:
        print(text)
    return 0


# ---------------------------------------------------------------- completion

class TargetNames:
    """Names read from the live target for completion (the agent's `complete` command), cached per
    session: modules (module=None), a module's names, a class's names. Bounded: at most MOST entries
    kept, each list bounded by the agent. A name the target does not have answers no names and is
    remembered like an answer; other errors (a slow target) and fetch's None (nothing attached: Tab
    never injects) answer no names this time only."""
    MOST = 64
    TIMEOUT_S = 2.0
    ABSENT = {"module_not_found", "class_not_found", "not_a_class"}

    def __init__(self, fetch: Callable[[str | None, str | None], list[str] | None]):
        self.fetch = fetch
        self.cache: OrderedDict[tuple, list[str]] = OrderedDict()

    def __call__(self, module: str | None = None, cls: str | None = None) -> list[str]:
        key = (module, cls)
        if key not in self.cache:
            try:
                names = self.fetch(module, cls)
            except FlightError as e:
                names = [] if e.code in self.ABSENT else None
            if names is None:
                return []
            self.cache[key] = names
            while len(self.cache) > self.MOST:
                self.cache.popitem(last=False)
        self.cache.move_to_end(key)
        return self.cache[key]

    @classmethod
    def of_session(cls, sessions, pid: int) -> "TargetNames":
        from .session import Deadline

        def fetch(module, klass):
            if pid not in sessions.attached():  # after `detach`: the next command attaches, not Tab
                return None
            answer = sessions.request(pid, "complete", {"module": module, "cls": klass}, Deadline(cls.TIMEOUT_S))
            return [n for n in answer["names"] if isinstance(n, str)]
        return cls(fetch)


class Completer:
    """What Tab offers for the word being typed, from the line before it: a command name; a flag of
    that command; the target's modules, a module's names or a class's names in the command's
    `module [class] method` slots (or after --mod/--cls/--method); command names after `help`.
    Each candidate ends with a space, but a module name that goes on (`flight_mcp` when
    `flight_mcp.tools` is imported), so that `.` can follow."""

    def __init__(self, tools: dict, names: Callable[..., list[str]] | None = None):
        self.tools = tools
        self.names = names

    def commands(self) -> list[str]:
        words = set(self.tools) | {a for t in self.tools.values() for a in t.aliases}
        return sorted(words | {"help", "history", *LEAVE})

    def tool(self, word: str):
        return self.tools.get(word) or next((t for t in self.tools.values() if word in t.aliases), None)

    def candidates(self, before: str, text: str) -> list[str]:
        try:
            words = shlex.split(before)
        except ValueError:  # inside an open quote: an expression, nothing to offer
            return []
        if not words:
            return [w + " " for w in self.commands() if w.startswith(text)]
        if words[0] == "help":
            return [w + " " for w in self.commands() if w.startswith(text)] if len(words) == 1 else []
        if words[0] == "history":
            return [f + " " for f in ("-c", "-n") if f.startswith(text)]
        tool = self.tool(words[0])
        if tool is None:
            return []
        from .cmdline import _is_bool, _is_number, flags_of, positional_of
        model = tool.params
        table = flags_of(model)
        given: dict[str, str] = {}
        positional: list[str] = []
        pending = None  # the field whose value is being typed
        for word in words[1:]:
            if pending is not None:
                given[pending], pending = word, None
            elif word.startswith("-") and not _is_number(word):
                key, eq, value = word.partition("=")
                field = table.get(key)
                if field is not None and not _is_bool(model.model_fields[field].annotation):
                    if eq:
                        given[field] = value
                    else:
                        pending = field
            else:
                positional.append(word)
        if pending is None and text.startswith("-"):
            return [f + " " for f in sorted(table) if f.startswith(text)]
        slots = positional_of(model)
        if self.names is None or not slots or slots[0] != "module":
            return []
        # the `module [class] name` path typed so far: flags first, then positional words
        path = [given[f] for f in ("module", "cls") if f in given] + positional
        if pending is not None:
            depth = {"module": 0, "cls": 1, "method": 2 if len(path) >= 2 else 1}.get(pending)
            if depth is None:
                return []
        else:
            depth = len(path)
        if depth == 0:
            return self._modules(text)
        if depth > 2:
            return []
        return [n + " " for n in self.names(*path[:depth]) if n.startswith(text)
                and (text.startswith("_") or not n.startswith("__"))]

    def _modules(self, text: str) -> list[str]:
        """Module names one dotted part at a time: `flight_` offers `flight_mcp`, not its 40 submodules."""
        out: dict[str, str] = {}
        for name in self.names():
            if name.startswith(text):
                dot = name.find(".", len(text) + 1)
                if dot > 0:  # a package whose submodules are imported: no space, `.` may follow
                    out[name[:dot]] = name[:dot]
                else:
                    out.setdefault(name, name + " ")
        return sorted(out.values())


# ---------------------------------------------------------------- the session

class Session:
    def __init__(self, pid: int, *, color: bool, allow_mutating: bool, tty: bool):
        from .session import Sessions
        from .tools import all_tools
        self.pid = pid
        self.color = color
        self.allow_mutating = allow_mutating
        self.tty = tty
        self.sessions = Sessions()
        self.tools = all_tools()
        self.history = History(history_path())  # piped lines are not recorded (see execute)
        self.failed = False
        self.readline = None
        self._ahead: str | None = None   # the first piped line, read before attaching

    # -- the loop
    def run(self) -> int:
        if not self.tty:  # nothing piped in: nothing to attach for
            self._ahead = self._first_command()
        try:
            if not self._attach():
                return 1
            if self.tty:
                self._setup_readline()
            while True:
                line = self._read()
                if line is None:
                    break
                if not self.execute(line):
                    break
            return 1 if self.failed else 0
        finally:
            self.sessions.close()  # the agent ends what this connection still runs

    def _attach(self) -> bool:
        from .tools.attach import ATTACH
        from .tools.base import Call, TimedParams
        try:
            result = ATTACH.invoke(TimedParams(pid=self.pid), Call(self.sessions, on_cli=True))
        except FlightError as e:
            self._error(e)
            return False
        # the banner: on the terminal; with piped commands, stdout keeps their output only
        out = sys.stdout if self.tty else sys.stderr
        print(ATTACH.text(result, self.color), file=out)
        if self.tty:
            print(paint("help lists the commands, Tab completes, Ctrl-C stops a command, Ctrl-D or exit leaves.",
                        "dim", self.color), file=out)
        if self.history.problem:
            print(self.history.problem, file=sys.stderr)
        out.flush()
        return True

    def _first_command(self) -> str:
        for line in sys.stdin:
            if line.strip():
                return line.rstrip("\r\n")
        raise FlightError("usage", f'give a command: flight-mcp {self.pid} --cmd "stack", or pipe commands in '
                          f'(echo stack | flight-mcp {self.pid}), or run flight-mcp {self.pid} in a terminal for '
                          "an interactive session")

    def _read(self) -> str | None:
        if not self.tty:
            if self._ahead is not None:
                line, self._ahead = self._ahead, None
                return line
            line = sys.stdin.readline()
            return line.rstrip("\r\n") if line else None
        prompt = f"flight-mcp {self.pid}> "
        if self.color:  # readline counts the prompt's width without what is between \001 and \002
            prompt = f"\001\033[1m\002flight-mcp {self.pid}>\001\033[0m\002 "
        while True:
            try:
                return input(prompt)
            except KeyboardInterrupt:  # clears the line
                print()
            except EOFError:
                print()
                return None

    def execute(self, line: str) -> bool:
        """Runs one line; False when the session ends (exit, or the target is gone)."""
        if self.tty:
            self._remember(line)
        try:
            from .cmdline import split
            words = split(line)
            if not words:
                return True
            if words[0] in LEAVE and len(words) == 1:
                return False
            self._run(words)
        except FlightError as e:
            self.failed = True
            self._error(e)
            if e.code == "no_such_process":
                return False
        except KeyboardInterrupt:  # outside the tool's own Ctrl-C handling (parsing, printing)
            print()
        return True

    def _run(self, words: list[str]) -> None:
        from .cli import run_command
        from .help import help_text
        name = words[0]
        if name == "help" or (len(words) == 2 and words[1] in ("-h", "--help")):
            about = words[1:] if name == "help" else [name]
            if about[:1] == ["history"]:
                print(HISTORY_USAGE)
            elif about[:1] and about[0] in LEAVE:
                print(f"{about[0]}: leaves the session (as Ctrl-D does)")
            else:
                print(help_text(["help", *about], self.tools, self.color))
                if not about:
                    title = paint("SESSION", "bold", self.color)
                    print("\n" + SESSION_HELP.format(path=self.history.path or history_path()).replace("SESSION", title, 1))
        elif name == "history":
            text = history_command(self.history, words[1:])
            if not self.history.lines and self.readline is not None:  # -c
                self.readline.clear_history()
            if text:
                print(text)
        elif name == "console" and self._console(words):
            pass
        else:
            run_command(self.pid, words, color=self.color, as_json=False, allow_mutating=self.allow_mutating,
                        sessions=self.sessions)
        sys.stdout.flush()

    def _console(self, words: list[str]) -> bool:
        """`console` without code: the interactive console, its lines in readline's history while it runs."""
        from .console_repl import interactive
        rl = self.readline
        if rl is not None:
            rl.set_completer(None)
            rl.set_auto_history(True)
        try:
            rc = interactive(self.pid, words, color=self.color, allow_mutating=self.allow_mutating)
        finally:
            if rl is not None:
                self._setup_readline()
        if rc:
            self.failed = True
        return rc is not None

    def _remember(self, line: str) -> None:
        if self.history.add(line) and self.readline is not None:
            self.readline.add_history(line.strip())
        if self.history.problem:
            print(self.history.problem, file=sys.stderr)
            self.history.problem = None

    def _error(self, e: FlightError) -> None:
        code = "" if e.code == "usage" else f" [{e.code}]"
        print(paint(f"error: {escape(e.message)}{code}", "red", self.color and sys.stderr.isatty()), file=sys.stderr)
        if e.hint and e.code != "usage":
            print(f"hint: {escape(e.hint)}", file=sys.stderr)
        sys.stderr.flush()

    def _setup_readline(self) -> None:
        try:
            import readline
        except ImportError:  # Python built without it: plain input(), no history keys nor Tab
            return
        self.readline = readline
        readline.set_auto_history(False)   # History decides what is recorded
        readline.clear_history()
        for line in self.history.lines:
            readline.add_history(line)
        completer = Completer(self.tools, TargetNames.of_session(self.sessions, self.pid))
        matches: list[str] = []

        def complete(text: str, state: int) -> str | None:
            if state == 0:
                try:
                    matches[:] = completer.candidates(readline.get_line_buffer()[:readline.get_begidx()], text)
                except Exception:  # Tab must never end the session
                    matches[:] = []
            return matches[state] if state < len(matches) else None

        readline.set_completer(complete)
        readline.set_completer_delims(" \t\n")
        if "libedit" in (readline.__doc__ or ""):
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")


def session(pid: int, *, color: bool, allow_mutating: bool) -> int:
    """`flight-mcp PID`: the interactive session (one command per line when stdin is not a terminal)."""
    return Session(pid, color=color, allow_mutating=allow_mutating, tty=sys.stdin.isatty()).run()
