"""console: runs a snippet of Python in the target and answers with what it printed and its value.

Only when the caller may change the target (a person on the CLI, or a server started with
--allow-mutating): the snippet is arbitrary code.

What it prints never reaches the target's stdout/stderr, and the target's sys.stdout is never
touched (other threads keep printing where they print): the snippet gets names of its own. Its
globals' __builtins__ is a copy of builtins whose print() writes to a buffer of ours, whose input()
refuses (the target's stdin is not ours), and whose __import__ hands `import sys` a view of sys
whose stdout and stderr are that buffer (every other attribute is the real sys's). Functions the
snippet defines keep these names. Code of the target's own that the snippet calls writes where it
always writes.

The snippet runs on an agent thread of its own; the command's thread waits for it until the
deadline (or a cancel), then stops it by raising an exception in it (PyThreadState_SetAsyncExc,
delivered at its next bytecode: `while True: pass` stops). A thread blocked inside C code (a long
sleep, a lock) cannot be stopped: it is left to finish, its output dropped; at most MAX_STUCK
such threads exist at once (then new snippets are refused until one ends).
"""
import _thread
import ast
import builtins
import sys
import time
import types

from . import capture, objview, server, timebox
from .registry import AgentError, command

OUTPUT_LIMIT = 64 * 1024    # characters of output kept per snippet
MAX_NAMESPACES = 16         # --namespace keys kept (the oldest is dropped)
MAX_STUCK = 4               # snippets that could not be stopped and still run
STOP_GRACE_S = 1.0          # after the deadline: how long stopping may take
FILENAME = "<console>"

_lock = _thread.allocate_lock()
_stuck = [0]
_NAMESPACES = {}            # key -> globals dict (insertion order = age)


class ConsoleDeadline(BaseException):
    """Raised inside a snippet that ran past its deadline (a BaseException: `except Exception` in
    the snippet does not swallow it)."""


class _Output(object):
    """The snippet's stdout and stderr: a bounded text buffer."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self):
        self.parts = []
        self.size = 0
        self.dropped = 0
        self.closed = False

    def write(self, s):
        if type(s) is not str:
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        room = OUTPUT_LIMIT - self.size
        if room > 0 and not self.closed:
            kept = s[:room]
            self.parts.append(kept)
            self.size += len(kept)
            self.dropped += len(s) - len(kept)
        else:
            self.dropped += len(s)
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def text(self):
        return "".join(self.parts)


class _SysView(object):
    """`sys` as the snippet sees it: its own stdout/stderr, everything else the real module's."""

    def __init__(self, holder):
        object.__setattr__(self, "_holder", holder)

    def __getattr__(self, name):
        if name in ("stdout", "stderr", "__stdout__", "__stderr__"):
            return object.__getattribute__(self, "_holder")[0]
        return getattr(sys, name)

    def __setattr__(self, name, value):
        if name in ("stdout", "stderr"):
            return  # the target's streams are not the snippet's to replace
        setattr(sys, name, value)

    def __dir__(self):
        return dir(sys)

    def __repr__(self):
        return "<module 'sys' (built-in)>"


def _builtins_for(holder):
    """The snippet's builtins: they write to holder[0] (the running snippet's output; a namespace
    kept for later snippets keeps its builtins, functions defined in it included)."""
    view = _SysView(holder)
    real_print, real_import = builtins.print, builtins.__import__
    real_streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)

    def print(*values, sep=" ", end="\n", file=None, flush=False):  # noqa: A001 (the snippet's print)
        if file is None or any(file is s for s in real_streams):
            file = holder[0]
        real_print(*values, sep=sep, end=end, file=file)

    def input(prompt=""):  # noqa: A001
        raise RuntimeError("input() is not available in flight-mcp's console: the target's stdin is not the "
                           "console's")

    def __import__(name, globals=None, locals=None, fromlist=(), level=0):
        mod = real_import(name, globals, locals, fromlist, level)
        return view if (name == "sys" and level == 0) else mod

    def breakpoint(*args, **kwargs):  # noqa: A001
        raise RuntimeError("breakpoint() is not available in flight-mcp's console")

    def help(*what):  # noqa: A001 (pydoc would write to the target's stdout)
        if not what:
            raise RuntimeError("interactive help() is not available in flight-mcp's console: use help(object)")
        import pydoc
        holder[0].write(pydoc.render_doc(what[0], renderer=pydoc.plaintext) + "\n")

    def _exit(code=None):  # site's exit()/quit() would close the target's stdin first
        raise SystemExit(code)

    names = dict(builtins.__dict__)
    names.update(print=print, input=input, __import__=__import__, breakpoint=breakpoint, help=help,
                 exit=_exit, quit=_exit)
    for name in ("copyright", "credits", "license"):  # site's printers write to the target's stdout
        if name in names:
            names[name] = _Printer(holder, names[name])
    return names, view


class _Printer(object):
    """site's copyright/credits/license, writing to the snippet's output."""

    def __init__(self, holder, orig):
        self._holder, self._text = holder, repr(orig)

    def __repr__(self):
        return self._text

    def __call__(self):
        self._holder[0].write(self._text + "\n")


def _fresh():
    holder = [None]
    names, view = _builtins_for(holder)
    return {"__name__": "__console__", "__doc__": None, "__builtins__": names}, holder, view


def _namespace(key):
    """(globals, output holder, sys view) of the snippet: kept under key for the next snippet with
    it, else fresh."""
    if key is None:
        return _fresh()
    with _lock:
        got = _NAMESPACES.pop(key, None)
        if got is None:
            got = _fresh()
            while len(_NAMESPACES) >= MAX_NAMESPACES:
                _NAMESPACES.pop(next(iter(_NAMESPACES)))
        _NAMESPACES[key] = got  # most recently used last
    return got


def _compile(source):
    """(code of the statements, code of the last expression or None)."""
    try:
        tree = ast.parse(source, FILENAME, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        body = compile(tree, FILENAME, "exec", dont_inherit=True)
        value = compile(last, FILENAME, "eval", dont_inherit=True) if last is not None else None
        return body, value
    except SyntaxError as e:
        text = (e.text or "").rstrip("\n")
        where = "line %s" % e.lineno if e.lineno else "the snippet"
        pointer = ""
        if text and type(e.offset) is int and e.offset > 0:
            stripped = text.lstrip()
            pointer = "\n    %s\n    %s^" % (stripped, " " * max(0, e.offset - 1 - (len(text) - len(stripped))))
        raise AgentError("snippet_syntax_error", "%s: %s at %s%s" % (type(e).__name__, e.msg, where, pointer),
                         arg="code")


def _stopper():
    """A function raising ConsoleDeadline in a thread at its next bytecode, or None (no ctypes in
    this interpreter: a snippet then cannot be interrupted). Made before the snippet starts: an
    import while a runaway snippet competes for the GIL would take long."""
    try:
        import ctypes
        set_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
        c_ulong, exc = ctypes.c_ulong, ctypes.py_object(ConsoleDeadline)
    except Exception:
        return None
    return lambda ident: set_exc(c_ulong(ident), exc)


def _stop(box, stopper):
    """Raises ConsoleDeadline in the snippet's thread, unless the snippet is over (checked under
    the lock the thread takes to say so: no exception is sent after that)."""
    with _lock:
        if box["ident"] is None or box["over"] or stopper is None:
            return
        stopper(box["ident"])


def _settle(box, started, done):
    """The snippet's thread, after the snippet: says it is over (no exception is sent after that),
    absorbs one sent just before, and hands the result over."""
    while True:
        try:
            with _lock:
                box["over"] = True
            break
        except ConsoleDeadline:
            continue
    while True:
        try:
            box["duration_s"] = time.monotonic() - started
            box.setdefault("outcome", "stopped")
            with _lock:
                if box["state"] == "abandoned":
                    _stuck[0] -= 1
                box["state"] = "finished"
            done.release()
            return
        except ConsoleDeadline:  # sent before `over` was set, delivered now
            continue


@command("console")
def console(args, ctx):
    if not args["may_change_target"]:
        raise AgentError("read_only", "console runs arbitrary code in the target, and this server is read-only.")
    source = args["code"]
    deadline = time.monotonic() + args["timeout_s"]
    body, last = _compile(source)
    with _lock:
        if _stuck[0] >= MAX_STUCK:
            raise AgentError("console_busy", "%d earlier snippets could not be stopped at their deadline and still "
                             "run (blocked inside C code)." % _stuck[0])
    stopper = _stopper()
    out = _Output()
    ns, holder, view = _namespace(args["namespace"])
    holder[0] = out
    done = _thread.allocate_lock()
    done.acquire()
    box = {"state": "running", "ident": None, "over": False}
    lines = source.splitlines()

    def run():
        box["ident"] = _thread.get_ident()
        started = time.monotonic()
        try:
            try:
                exec(body, ns)
                box["value"] = eval(last, ns) if last is not None else None
                box["outcome"] = "done"
            except ConsoleDeadline:
                box["outcome"] = "stopped"
            except BaseException as e:  # SystemExit too: a snippet never ends the target
                box["outcome"] = "raised"
                box["error"] = e
                box["tb"] = e.__traceback__
        except ConsoleDeadline:  # a second one, sent while the first was being handled
            box.setdefault("outcome", "stopped")
        finally:
            _settle(box, started, done)

    started = time.time()
    try:
        server.start_thread(run)
    except Exception as e:
        raise AgentError("unsupported", "no thread could be started to run the snippet: %s: %s" % (type(e).__name__, e))
    stopped_by = None
    while not done.acquire(True, 0.05):
        if ctx.cancelled or time.monotonic() >= deadline:
            stopped_by = "cancel" if ctx.cancelled else "deadline"
            break
    if stopped_by is not None:
        grace = time.monotonic() + STOP_GRACE_S
        finished = False
        while time.monotonic() < grace:
            _stop(box, stopper)   # again and again: the snippet may catch it once
            if done.acquire(True, 0.05):
                finished = True
                break
        if not finished:
            with _lock:
                if box["state"] == "running":
                    box["state"] = "abandoned"
                    _stuck[0] += 1
                    out.closed = True
                else:
                    done.acquire()
                    finished = True
        if not finished:
            return _answer(out, view, started, "running", stopped_by, None, None, None, lines, args)
    outcome = box["outcome"]
    if outcome == "done" and last is not None and box["value"] is not None:
        ns["_"] = box["value"]
    return _answer(out, view, started, outcome, stopped_by, box.get("value"), box.get("error"), box.get("tb"),
                   lines, args, box.get("duration_s"))


def _answer(out, view, started, outcome, stopped_by, value, error, tb, lines, args, duration=None):
    shown = None
    if outcome == "done" and value is not None:
        shown = objview.view(sys if value is view else value, expand=args["expand"], verbose=args["verbose"],
                             raw=args["raw"])
    err = None
    if outcome == "raised":
        err = capture.exception_fact(error, timebox.Budget(), tb)
        for frame in err.get("frames", ()):
            if frame.get("file") == FILENAME and type(frame.get("line")) is int and 0 < frame["line"] <= len(lines):
                frame["source"] = lines[frame["line"] - 1].strip()
    return {"state": outcome, "stopped_by": stopped_by, "started": started,
            "duration_s": round(duration if duration is not None else time.time() - started, 6),
            "output": out.text(), "output_elided": out.dropped, "value": shown, "error": err,
            "python": sys.version, "platform": sys.platform}
