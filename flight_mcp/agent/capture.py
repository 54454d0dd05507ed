"""What trace and watch share: counting calls, the limit, expression failures, exceptions as
facts, the command loop.

Probes run on the application's threads, so everything they do here is short: counters, a list
append and a lock release that wakes the command thread. The command thread does the rest
(progress events, building the answer, anything that may run the target's code).

The answer is facts named as the host's Result fields (tools/capture_common.py): epoch times,
exceptions as {type, message, frames, frames_elided}, expression failures as {arg, expr,
failures, error, refused}; the host writes every sentence.
"""
import _thread
import itertools
import os
import sys
import time

# The expression engine and the instrumentation (ast, tokenize, re, ...: ~20 ms of imports in a bare
# target) are imported by the functions that use them, on the command's thread: stack and the `info`
# of every attach read threads' names here and need none of them.
from . import objstate

PROGRESS_EVERY_S = 0.2
_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
TRACEBACK_FRAMES = 60   # kept of a long traceback: the first 5 and the last 55
_PLAIN_ARGS = (str, int, float, bool, type(None))


def thread_lookup():
    """ident -> the target's Thread object or None: a bound dict lookup, what a probe can afford on
    the application's thread (thread_facts reads the name later, on the command's thread)."""
    threading = sys.modules.get("threading")
    active = getattr(threading, "_active", None) if threading is not None else None
    return active.get if type(active) is dict else (lambda ident: None)


def looks_main(frame):
    """Without threading, the main thread is the one whose outermost frame runs __main__'s code."""
    main = sys.modules.get("__main__")
    while frame.f_back is not None:
        frame = frame.f_back
    return main is not None and frame.f_globals is getattr(main, "__dict__", None)


_main_ident = [None]   # found by looks_main once: the main thread lives as long as the process


def is_main_without_threading(ident):
    """Whether ident is the main thread of a target that never imported threading."""
    if _main_ident[0] is None and "threading" not in sys.modules:
        frame = sys._current_frames().get(ident)
        if frame is not None and looks_main(frame):
            _main_ident[0] = ident
    return ident == _main_ident[0] and "threading" not in sys.modules


def thread_facts(ident, thread=None):
    """(name, daemon) of a thread (its Thread object from threading, if the target imported it),
    read from the object's own fields, never its properties: a Thread subclass may override them.
    A target that never imported threading still has a MainThread (not a daemon), as the seed's
    titles say."""
    if thread is None:
        thread = thread_lookup()(ident)
    d = objstate.Reader().instance_dict(thread) if thread is not None else None
    if d is None:
        if is_main_without_threading(ident):
            return "MainThread", False
        return "Thread-%d" % ident, None
    name, daemon = objstate.dict_get(d, "_name"), objstate.dict_get(d, "_daemonic")
    return (name if type(name) is str else "Thread-%d" % ident), (daemon if type(daemon) is bool else None)


def exception_name(exc):
    """`ValueError`: the class's own __name__, from type's field (not a metaclass property)."""
    return objstate.short_name(type(exc))


def exception_message(exc, budget):
    """str(exc), cut to one line of 300 characters. A built-in exception holding plain data is
    read directly; anything else may run the target's __str__: on its own thread, with its budget."""
    from . import objview, typefacts
    t = type(exc)
    if issubclass(t, typefacts.Refused):   # ours: what was refused and what to do instead, said whole
        return str(exc)
    args = objstate.exception_args(exc)
    if not objstate.is_heap(t) and all(any(type(a) is p for p in _PLAIN_ARGS) for a in args):
        text = str(exc)
    else:
        text, error = budget.call(str, exc, objstate.short_name(t))
        if error is not None:
            return error.replace("<repr", "<str")
    return objview.short_repr(text, 300)[1:-1]


def traceback_frames(tb, lines=None):
    """(frames, frames_elided) of a traceback, outermost first, without the agent's own frames
    (hooks sit between the caller and the function on Python <= 3.11). Source lines come from the
    files through `lines`, the command's srclines.Lines (each file read once per command)."""
    if lines is None:
        from .srclines import Lines
        lines = Lines()
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        if not code.co_filename.startswith(_AGENT_DIR):
            lineno = tb.tb_lineno
            source = lines.get(code.co_filename, lineno)
            frames.append({"file": code.co_filename, "line": lineno if type(lineno) is int else None,
                           "name": code.co_name, "source": source})
        tb = tb.tb_next
    elided = max(len(frames) - TRACEBACK_FRAMES, 0)
    if elided:
        frames = frames[:5] + frames[5 + elided:]
    return frames, elided


_WITH_SETUP = frozenset(["SETUP_WITH", "BEFORE_WITH", "SETUP_ASYNC_WITH", "BEFORE_ASYNC_WITH"])


def line_at(code, offset):
    """The source line of the instruction at byte offset in code (where a call returned), or None."""
    if type(offset) is not int or offset < 0:
        return None
    if hasattr(code, "co_lines"):   # 3.10+
        lines = [(start, end, line) for start, end, line in code.co_lines()]
        for start, end, line in lines:
            if start <= offset < end:
                return _before_with_exit(code, offset, line, lines)
        return None
    tab = code.co_lnotab   # 3.8/3.9: (address increment, signed line increment) pairs
    line, addr = code.co_firstlineno, 0
    for i in range(0, len(tab) - 1, 2):
        addr += tab[i]
        if addr > offset:
            break
        line += tab[i + 1] - 256 if tab[i + 1] >= 128 else tab[i + 1]
    return line


def _before_with_exit(code, offset, line, lines):
    """3.10+ give the code that leaves a `with` block (its __exit__ call and the return after it)
    the line of the `with` statement: a `return` inside the block would read as returning at the
    `with`. Then the line is the last one the block ran before that code (nested blocks' exits
    skipped too)."""
    import dis

    def line_of(at):
        for start, end, ln in lines:
            if start <= at < end:
                return ln
        return None
    setups = [(i.offset, line_of(i.offset)) for i in dis.get_instructions(code)
              if i.opname in _WITH_SETUP and i.offset < offset]
    own = [at for at, ln in setups if ln == line]
    if not own:
        return line
    with_lines = set(ln for _, ln in setups)
    for start, end, ln in reversed(lines):   # back from the return, within the block
        if start >= offset:
            continue
        if end <= max(own):
            break
        if ln is not None and ln not in with_lines:
            return ln
    return line


def raise_line(tb, code):
    """The line at which the exception left the call of code: its traceback's entry for that code
    (taken when the call ended, so the first one is that call's), else its first entry outside
    the agent."""
    first = None
    steps = 0
    while tb is not None and steps < 1000:
        frame_code = tb.tb_frame.f_code
        if frame_code is code:
            return tb.tb_lineno
        if first is None and not frame_code.co_filename.startswith(_AGENT_DIR):
            first = tb.tb_lineno
        tb = tb.tb_next
        steps += 1
    return first


def exception_fact(exc, budget, tb=None, lines=None):
    """The exception as models.ExceptionFact: type, message (the target's __str__ within budget),
    and with tb its traceback's frames (source lines through `lines`, the command's srclines.Lines).
    On the command's thread."""
    fact = {"type": exception_name(exc), "message": exception_message(exc, budget)}
    if tb is not None:
        try:
            fact["frames"], fact["frames_elided"] = traceback_frames(tb, lines)
        except Exception:
            pass   # the exception without its frames
    return fact


_CONTEXT = ("target", "args", "kwargs", "return_obj", "cost", "params")


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


def _trust_kwargs():
    """Before any expression sees a _Kwargs (Expression makes them)."""
    from . import guards
    guards.TRUSTED_MAPPINGS.add(_Kwargs)   # its __missing__ is ours: read-only kwargs['user'] may run it


HOPELESS_AFTER = 10   # calls a filter may fail on, matching none, before the command gives up


class Expression(object):
    """A user expression compiled once, evaluated per call with the one expression context:
    target (instance for methods), args (without it), kwargs, return_obj, cost (ms), params (every
    argument by its parameter name).
    arg: the tool argument it came from ("filter_expr", "expr"), named in errors as codes.arg(arg).
    A filter (filter_expr) is a condition: in read-only mode even its truth test runs no target code.
    A failure is remembered once (the first), with how often it happened."""

    def __init__(self, source, arg, allow_mutating):
        from . import codes, expr
        _trust_kwargs()
        self.source = source
        self.arg = arg
        self.flag = codes.arg(arg)
        self.allow_mutating = allow_mutating
        self.use = "condition" if arg == "filter_expr" else "value"
        self.code = expr.compile_expr(source, self.flag, allow_mutating, self.use) if source else None
        self.fn = self._function() if self.code is not None else None
        self.uses = _names_used(self.code) & set(_CONTEXT) if self.code is not None else set()
        self.late = bool(self.uses & {"return_obj", "cost"})   # judged only when the call ends
        self._failures = Tally()
        self.first = None        # the first failure's exception
        self.first_fact = None   # and its facts, when they were formed as it happened (noted)

    def _function(self, names=_CONTEXT):
        """The checked expression as `lambda target, args, kwargs, return_obj, cost: EXPR` (or over
        `names`): calling it costs a fraction of eval() with a fresh scope, and a filter runs on
        every call of a hot function. Its globals are the scope expr.evaluate() provides besides the
        names (builtins and the read-only guards); comprehensions see the names through the closure."""
        import ast
        from . import safety
        tree = None if self.allow_mutating else safety.check(self.source, self.flag, self.use)
        if not isinstance(tree, ast.AST):
            tree = ast.parse(self.source, mode="eval")
        body = tree.body if isinstance(tree, ast.Expression) else tree
        # `params` (last) defaults to None: the callers that know no parameter names leave it out
        defaults = [ast.Constant(value=None)] if names[-1:] == ("params",) else []
        params = ast.arguments(posonlyargs=[], args=[ast.arg(arg=n, annotation=None) for n in names],
                               vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=defaults)
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
        if target.has_self or self.uses & {"target", "kwargs", "params"}:
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

        if "params" in self.uses:
            # params: every argument by its parameter name (the instance left out, as from args)
            skip = 1 if target.has_self else 0
            names = posnames[skip:]
            with_kwargs = "kwargs" in self.uses

            def call(args, kwargs, return_obj=None, cost=None):
                rest = args[skip:]
                params = dict(zip(names, rest))
                if kwargs:
                    params.update(kwargs)
                return fn(args[0] if skip and args else None, rest,
                          as_kwargs(kwargs, args) if with_kwargs else kwargs, return_obj, cost, params)
            return call
        if target.has_self:
            if "kwargs" in self.uses:
                def call(args, kwargs, return_obj=None, cost=None):
                    return fn(args[0] if args else None, args[1:], as_kwargs(kwargs, args), return_obj, cost, None)
            else:
                def call(args, kwargs, return_obj=None, cost=None):
                    return fn(args[0] if args else None, args[1:], kwargs, return_obj, cost, None)
        elif "kwargs" in self.uses:
            def call(args, kwargs, return_obj=None, cost=None):
                return fn(None, args, as_kwargs(kwargs, args), return_obj, cost, None)
        else:
            def call(args, kwargs, return_obj=None, cost=None):
                return fn(None, args, kwargs, return_obj, cost, None)
        return call

    def hopeless(self, cap):
        """A filter that raised on the first HOPELESS_AFTER calls (most calls, and none matched)
        will not match later either: the command ends with its error instead of waiting out the
        deadline."""
        failures = self._failures.value
        return failures >= HOPELESS_AFTER and cap.matched == 0 and 2 * failures >= cap.seen

    def failed(self, exc):
        """On the calling thread: counts, keeps the first exception (its text is read later)."""
        self._failures.bump()
        if self.first is None:
            self.first = exc

    def noted(self, exc, fact):
        """On the command's thread: a failure already made into its facts (exception_fact)."""
        self._failures.bump()
        if self.first is None:
            self.first, self.first_fact = exc, fact

    def report(self, budget):
        """The failures as facts (capture_common.ExpressionFailure on the host), or None."""
        from . import typefacts
        failures = self._failures.value
        if not failures:
            return None
        error = self.first_fact or exception_fact(self.first, budget)
        return {"arg": self.arg, "expr": self.source, "failures": failures,
                "error": {"type": error["type"], "message": error["message"]},
                "refused": issubclass(type(self.first), typefacts.Refused)}


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


# The most records a command keeps for its answer. `limit` has no upper bound (people type
# -n 100000000 to mean "until I stop"): every capture is still counted and reported as progress as
# it arrives, but only the latest KEPT_RECORDS stay in memory for the answer; records that arrive
# faster than the command's thread reports them are counted, not kept, past twice that.
KEPT_RECORDS = 1000


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
        self.captured = 0     # every record added, kept or not
        self.not_kept = 0     # captured but left out of the answer (see KEPT_RECORDS)
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
            self.captured += 1
            if len(self.records) < 2 * KEPT_RECORDS:
                self.records.append(record)
            else:
                self.not_kept += 1
            if self.captured >= self.limit:
                self.done = True
        self.ctx.wakeup()
        return True

    def forget_reported(self, reported):
        """Drops the oldest of the first `reported` records (already sent as progress) beyond
        KEPT_RECORDS; returns how many were dropped."""
        with self._lock:
            drop = min(reported, len(self.records) - KEPT_RECORDS)
            if drop <= 0:
                return 0
            del self.records[:drop]
            self.not_kept += drop
            return drop


def signature(target):
    """`(order_id, amount=100.0, *, retry=False)`: the parameters of target (its instance left out),
    read from its code and its function's defaults (signatures.py: the one reader of parameters)."""
    from . import signatures
    return signatures.of_code(target.code, target.func, target.has_self)


def _report(ctx, cap, progress, sent, reported):
    """Reports the records added since the last report, each as one progress event (the CLI shows
    them as they arrive); returns the new (sent, reported)."""
    while sent < len(cap.records):
        record = cap.records[sent]
        sent += 1
        reported += 1
        event = progress(record)
        event.update(captured=reported, limit=cap.limit)
        ctx.emit(event)
    return sent - cap.forget_reported(sent), reported


class GilGaps(object):
    """Times the command's own thread could not run for the request's slow_s or longer (capture.run's
    loop, never a probe): it was due to run (its sleep ended, or a capture woke it) and did not,
    because another thread held the GIL (one long C call), so no Python code, the instrumented
    function's included, ran meanwhile. Measured over the whole round, not the sleep alone: a stall
    that begins while the thread reports (it dropped the GIL to another thread at a switch) keeps it
    off the CPU as surely; the thread's own CPU time is what it spent working.
    Each gap is a fact {at: epoch it was due, ms}, sent at once as a progress event and kept (the first
    KEPT) for the answer. Without slow_s (a host that does not measure) nothing is measured."""
    KEPT = 20

    def __init__(self, ctx):
        self.ctx = ctx
        self.slow_s = getattr(ctx, "slow_s", None)
        self.gaps = []
        self.not_kept = 0
        self._due = None   # (monotonic time the thread was due to run, its CPU time before the sleep)

    def sleep(self, asked):
        """Checks the round that ends here, then ctx.sleep(asked), noting when the thread was due to run
        again: the end of the sleep, or the wakeup that cut it short (a wake-up before the sleep
        began: at once)."""
        self.check()
        cpu, before = time.thread_time(), time.monotonic()
        due = before + asked
        if self.ctx.sleep(asked) and self.ctx.woken_at is not None:
            due = max(before, min(due, self.ctx.woken_at))
        self._due = (due, cpu)

    def check(self):
        """At the end of a round (the sleep and the work after it; once more when the loop ends): the
        time since the thread was due to run that it spent neither running nor sleeping; a gap when
        that reaches slow_s."""
        if self.slow_s is None or self._due is None:
            return None
        due, cpu = self._due
        self._due = None
        late = (time.monotonic() - due) - (time.thread_time() - cpu)
        if late < self.slow_s:
            return None
        gap = {"at": round(time.time() - late, 3), "ms": round(late * 1000, 1)}
        if len(self.gaps) < self.KEPT:
            self.gaps.append(gap)
        else:
            self.not_kept += 1
        self.ctx.emit({"gil_gap": gap})
        return gap

    def beat(self):
        """Nothing else was sent this round: tell the host the command thread runs."""
        if self.slow_s is not None:
            self.ctx.beat()


def run(ctx, target, probe, cap, timeout_s, progress, flt=None):
    """Instruments until the limit, the deadline or a cancel; returns the facts every result carries
    (capture_common.Summary's fields). progress(record) -> the facts of that capture for its
    progress event (capture_common.Progress, besides captured and limit). flt: the filter, whose
    failing on every call ends the command (stopped "filter_failed")."""
    from . import instrument
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
    sent = 0       # records of cap.records already reported as progress
    reported = 0   # captures reported in all
    reason = None
    gaps = GilGaps(ctx)
    while reason is None:
        if cap.done:
            reason = "limit"
        elif ctx.cancelled:
            reason = "cancel"
        elif flt is not None and flt.code is not None and flt.hopeless(cap):
            reason = "filter_failed"
        elif time.monotonic() >= deadline:
            reason = "deadline"
        else:
            gaps.sleep(min(deadline - time.monotonic(), PROGRESS_EVERY_S))
        was = reported
        sent, reported = _report(ctx, cap, progress, sent, reported)
        if reported == was and reason is None:
            gaps.beat()
    gaps.check()   # the last round: a stall may have held the thread until the capture that ended it
    remove()
    _report(ctx, cap, progress, sent, reported)   # what ended after the last report, before the removal
    summary = target.describe()
    summary.update(signature=signature(target), started=started, duration_s=round(time.monotonic() - t0, 3), seen=cap.seen,
                   matched=cap.matched, skipped=cap.skipped, captured=cap.captured, not_kept=cap.not_kept,
                   limit=cap.limit, stopped=reason, gil_gaps=gaps.gaps, gil_gaps_not_kept=gaps.not_kept)
    return summary
