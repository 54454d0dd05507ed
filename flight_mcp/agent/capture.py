"""What trace and watch share: counting calls, the limit, expression failures, the command loop.

Probes run on the application's threads, so everything they do here is short: counters, a list
append and a lock release that wakes the command thread. The command thread does the rest
(progress events, building the answer).
"""
import _thread
import ast
import itertools
import sys
import time

from . import expr, guards, instrument, objstate, safety
from .registry import AgentError

PROGRESS_EVERY_S = 0.2


def _number_arg(args, name, flag, default, minimum, convert, what):
    value = args.get(name, default)
    if value is None:
        return default
    try:
        value = convert(value)
    except (TypeError, ValueError):
        raise AgentError("bad_argument", "%s must be %s, got %r" % (flag, what, value))
    if minimum is not None and value < minimum:
        raise AgentError("bad_argument", "%s must be >= %s, got %s" % (flag, minimum, value))
    return value


def int_arg(args, name, flag, default, minimum=None):
    return _number_arg(args, name, flag, default, minimum, int, "a whole number")


def float_arg(args, name, flag, default, minimum=None):
    return _number_arg(args, name, flag, default, minimum, float, "a number")


def thread_facts(ident, thread=None):
    """(name, daemon) of a thread (its Thread object from threading, if the target imported it),
    read from the object's own fields, never its properties: a Thread subclass may override them,
    and trace asks this on the application's thread."""
    if thread is None:
        threading = sys.modules.get("threading")
        active = getattr(threading, "_active", None) if threading is not None else None
        thread = active.get(ident) if type(active) is dict else None
    d = objstate.Reader().instance_dict(thread) if thread is not None else None
    if d is None:
        return "Thread-%d" % ident, None
    name, daemon = objstate.dict_get(d, "_name"), objstate.dict_get(d, "_daemonic")
    return (name if type(name) is str else "Thread-%d" % ident), (daemon if type(daemon) is bool else None)


def wall_time_text(t):
    """The seed's timestamp: 2026-04-19 11:35:38:953 (local time, milliseconds after a colon)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + ":%03d" % int((t % 1) * 1000)


_CONTEXT = ("target", "args", "kwargs", "return_obj", "cost")


def _names_used(code):
    """Every name the expression's code (comprehensions included) loads."""
    found = set(code.co_names)
    for c in code.co_consts:
        if hasattr(c, "co_names"):
            found |= _names_used(c)
            found.update(c.co_freevars)
    return found


class _Kwargs(dict):
    """kwargs as passed by keyword, which also answers kwargs['name'] for a named parameter that was
    passed positionally (Python >= 3.12 only sees bound parameters, not how they were passed, so
    this keeps flight_profiler's `kwargs['user']` filters working on every version)."""
    __slots__ = ("_params",)

    def __missing__(self, key):
        params = self._params
        if params is not None and key in params:
            return params[key]
        raise KeyError(key)


_Kwargs.__name__ = _Kwargs.__qualname__ = "dict"
_Kwargs.__module__ = "builtins"
guards.TRUSTED_MAPPINGS.add(_Kwargs)   # its __missing__ is ours: read-only kwargs['user'] may run it


class Expression(object):
    """A user expression compiled once, evaluated per call with the one expression context:
    target (instance for methods), args (without it), kwargs, return_obj, cost (ms).
    A failure is remembered once, with how often it happened.
    A filter (-f...) is a condition: in read-only mode even its truth test runs no target code."""

    def __init__(self, source, flag, allow_mutating):
        self.source = source
        self.flag = flag
        self.allow_mutating = allow_mutating
        self.use = "condition" if flag.startswith("-f") else "value"
        self.code = expr.compile_expr(source, flag, allow_mutating, self.use) if source else None
        self.fn = self._function() if self.code is not None else None
        self.uses = _names_used(self.code) & set(_CONTEXT) if self.code is not None else set()
        self.late = bool(self.uses & {"return_obj", "cost"})   # judged only when the call ends
        self.failures = 0
        self.first_failure = None

    def _function(self, names=_CONTEXT):
        """The checked expression as `lambda target, args, kwargs, return_obj, cost: EXPR` (or over
        `names`): calling it costs a fraction of eval() with a fresh scope, and a filter runs on
        every call of a hot function. Its globals are the scope expr.evaluate() provides besides the
        names (builtins and the read-only guards); comprehensions see the names through the closure."""
        tree = None if self.allow_mutating else safety.check(self.source, self.flag, self.use)
        if not isinstance(tree, ast.AST):
            tree = ast.parse(self.source, mode="eval")
        body = tree.body if isinstance(tree, ast.Expression) else tree
        params = ast.arguments(posonlyargs=[], args=[ast.arg(arg=n, annotation=None) for n in names],
                               vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])
        lam = ast.Expression(body=ast.Lambda(args=params, body=body))
        ast.fix_missing_locations(lam)
        scope = {"__builtins__": __builtins__}
        scope.update(getattr(safety, "RUNTIME", None) or {})
        return eval(compile(lam, "<%s>" % self.flag, "eval"), scope)

    def gate(self, target):
        """For a filter judged when the call starts, `(args, kwargs) -> value` for calls of target
        (args as probes get them, instance first): on a plain function whose filter reads neither
        target nor kwargs, the expression itself compiled over (args, kwargs), with no call between
        the probe and the expression; else the general caller."""
        if target.has_self or self.uses & {"target", "kwargs"}:
            return self.caller(target)
        return self._function(("args", "kwargs"))

    def caller(self, target):
        """call(args, kwargs, return_obj=None, cost=None) for calls of target, where args are all
        positional values (instance included): specialised once, since a filter runs per call."""
        fn = self.fn
        posnames = target.posnames

        def as_kwargs(kwargs, args):
            kw = _Kwargs(kwargs or ())
            kw._params = dict(zip(posnames, args)) if posnames else None
            return kw

        if target.has_self:
            if "kwargs" in self.uses:
                def call(args, kwargs, return_obj=None, cost=None):
                    return fn(args[0] if args else None, args[1:], as_kwargs(kwargs, args), return_obj, cost)
            else:
                def call(args, kwargs, return_obj=None, cost=None):
                    return fn(args[0] if args else None, args[1:], kwargs, return_obj, cost)
        elif "kwargs" in self.uses:
            def call(args, kwargs, return_obj=None, cost=None):
                return fn(None, args, as_kwargs(kwargs, args), return_obj, cost)
        else:
            def call(args, kwargs, return_obj=None, cost=None):
                return fn(None, args, kwargs, return_obj, cost)
        return call

    def failed(self, exc):
        self.failures += 1
        if self.first_failure is None:
            self.first_failure = expr.describe_failure(self.flag, self.source, exc)

    def report(self):
        if not self.failures:
            return None
        return {"flag": self.flag, "expr": self.source, "failures": self.failures,
                "message": self.first_failure + (" (%d calls)" % self.failures if self.failures > 1 else "") +
                (". Those calls are shown without a value" if self.flag == "--expr" else
                 ". Those calls were treated as not matching") + "; the application was not affected."}


class Tally(object):
    """A counter that many application threads bump at once: count() is one C call (atomic under
    the GIL), where `n += 1` on an attribute loses increments between its read and its write.
    Probes call `bump` (a bound C method: no Python frame, about the cost of `n += 1`)."""
    __slots__ = ("_count", "bump")

    def __init__(self):
        self._count = itertools.count()
        self.bump = self._count.__next__

    @property
    def value(self):
        # count's only public view of its state is its repr, `count(N)` (no call advances it)
        return int(repr(self._count)[6:-1])


class Capture(object):
    """Counters and captured records of one command; add() enforces the limit across threads.
    Probes count with note_seen(), note_matched(), note_skipped()."""

    def __init__(self, ctx, limit):
        self.ctx = ctx
        self.limit = limit
        self._seen, self._matched, self._skipped = Tally(), Tally(), Tally()
        self.note_seen = self._seen.bump
        self.note_matched = self._matched.bump
        self.note_skipped = self._skipped.bump   # matched but dropped by a threshold (trace -et)
        self.records = []
        self.done = False
        self._lock = _thread.allocate_lock()

    @property
    def seen(self):
        return self._seen.value

    @property
    def matched(self):
        return self._matched.value

    @property
    def skipped(self):
        return self._skipped.value

    def add(self, record):
        # Checked before the lock too: in a forked child the lock may be held by a thread that
        # did not survive the fork, and its commands are cancelled (atfork.py).
        if self.done or self.ctx.cancelled:
            return False
        with self._lock:
            if self.done:
                return False
            self.records.append(record)
            if len(self.records) >= self.limit:
                self.done = True
        self.ctx.wakeup()
        return True


def run(ctx, target, probe, cap, timeout_s, describe):
    """Instruments until the limit, the deadline or a cancel; returns the facts every result carries.
    describe(record) -> one line for the progress notification of that capture."""
    unhook = instrument.add(target, probe)

    def remove():
        cap.done = True  # calls still running when the command ends are not recorded
        unhook()
        stop = getattr(probe, "stop", None)  # calls still running when the command ends
        if stop is not None:
            stop()
    ctx.on_end(remove)  # however the command ends (cancel, closed connection, agent bug)
    started = time.time()
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    sent = 0
    reason = None
    while reason is None:
        if cap.done:
            reason = "limit"
        elif ctx.cancelled:
            reason = "cancel"
        elif time.monotonic() >= deadline:
            reason = "deadline"
        else:
            ctx.sleep(min(deadline - time.monotonic(), PROGRESS_EVERY_S))
        while sent < len(cap.records):
            record = cap.records[sent]
            sent += 1
            ctx.emit({"captured": sent, "limit": cap.limit, "message": describe(record)})
    remove()
    return {"target": target.describe(), "started": wall_time_text(started),
            "duration_s": round(time.monotonic() - t0, 3), "seen": cap.seen, "matched": cap.matched,
            "skipped": cap.skipped, "captured": len(cap.records), "limit": cap.limit, "stopped": reason}
