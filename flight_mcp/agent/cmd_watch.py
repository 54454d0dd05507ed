"""watch: what real calls of one function receive, return or raise, through a user expression.

The expression and the filter are compiled once per command and evaluated on the calling thread
when a call ends (so they see return_obj and cost). Then the calling thread only takes what cannot
wait, and runs none of the target's code doing it: the value's view (objview reads the state the
objects have right then, through C-level reads; the object may change after the call), references
to the exception and its traceback, and the Thread object. Everything that can run the target's
code or take long (the value's own repr for raw, the exception's message, the traceback's frames
with source lines, the thread's name) is formed afterwards on the command's thread, each call into the
target with its time budget (timebox.py). A failing expression never reaches the application; it
is reported once with the number of calls it failed on. The answer is facts (capture.py).
"""
import _thread
import sys
import time

from . import capture, instrument, objview, qualnames, srclines, timebox
from .registry import command

_get_ident = _thread.get_ident
_perf = time.perf_counter
_getframe = sys._getframe
_AGENT_DIR = capture._AGENT_DIR


def _caller(frame):
    """The frame that called the watched function: the watched frame's caller when the
    instrumentation hands it over (sys.monitoring), else the first frame above the agent's own
    (the hooks run before the call's frame is linked, or wrap the function). Kept in the token
    until the call ends: the caller's frame lives that long anyway. Found here, at the start, not
    when the call ends: a token holding the agent's own hook frame instead would make a cycle (that
    frame's locals hold the token) that keeps the call's arguments alive until a GC pass."""
    f = frame.f_back if frame is not None else _getframe(2)
    while f is not None and f.f_code.co_filename.startswith(_AGENT_DIR):
        f = f.f_back
    return f


_CALLER_NAMES = {}   # code -> Class.method, bounded: a watch sees few callers


def caller_fact(code, line):
    name = _CALLER_NAMES.get(code)
    if name is None:
        if len(_CALLER_NAMES) > 256:
            _CALLER_NAMES.clear()
        name = _CALLER_NAMES[code] = qualnames.qualname(code)
    return {"name": name, "file": code.co_filename, "line": line}


def finish(record, view_opts, budget, lines=None):
    """Completes a record on the command's thread from what the calling thread kept (idempotent):
    the value's view (for raw), the expression's failure and the exception as facts, the thread."""
    pending = record.pop("_pending", None)
    if pending is None:
        return record
    if "value" in pending:
        record["view"] = objview.view(pending["value"], budget=budget, **view_opts)
    if "expr_error" in pending:
        record["expr_error"] = capture.exception_fact(pending["expr_error"], budget)
    if "exc" in pending:
        exc, tb = pending["exc"]
        record["exception"] = capture.exception_fact(exc, budget, tb, lines)
    record["line"] = end_line(pending)
    record["thread"], record["daemon"] = capture.thread_facts(record["tid"], pending.get("thread"))
    caller = pending.get("caller")
    record["caller"] = caller_fact(*caller) if caller is not None else None
    return record


def end_line(pending):
    """The line the call returned at (the instruction it returned at) or raised at (its
    traceback's entry for the function), from what the probe kept; None when unknown."""
    code = pending.get("code")
    if "exc" in pending:
        return capture.raise_line(pending["exc"][1], code)
    return capture.line_at(code, pending.get("offset"))


class WatchProbe(object):
    needs_args = True
    leave_offset = True   # instrument passes the offset a call returned at

    def __init__(self, target, cap, watch_expr, flt, exception_only, view_opts):
        self.target = target
        self.cap = cap
        self.expr = watch_expr
        self.filter = flt
        self.exception_only = exception_only
        self.view_opts = view_opts
        self.early = flt.code is not None and not flt.late and not exception_only
        self.check = flt.caller(target) if flt.code is not None else None
        self.show = watch_expr.caller(target)
        self.enter = self._make_enter()
        self.threads = capture.thread_lookup()

    def _make_enter(self):
        """enter(args, kwargs, frame) -> token or None, a closure over what it needs: it runs on every
        call of the watched function, matching or not (a never-true filter's whole cost is here)."""
        cap, perf, now = self.cap, _perf, time.time
        seen = cap.note_seen
        if not self.early:
            def enter(args, kwargs, frame):
                if cap.done:
                    return None
                seen()
                return (args, kwargs, perf(), now(), _caller(frame))
            return enter
        gate, failed = self.filter.gate(self.target), self.filter.failed

        def enter(args, kwargs, frame):
            if cap.done:
                return None
            seen()
            try:
                if not gate(args, kwargs):
                    return None
            except BaseException as e:
                failed(e)
                return None
            return (args, kwargs, perf(), now(), _caller(frame))
        return enter

    def matched(self, token, result, exc):
        """(cost ms, exc) of a call that ends and counts (the filter judged at its end when it reads
        return_obj or cost), else None; GeneratorExit is no exception of the call's."""
        cost = (_perf() - token[2]) * 1000.0
        if issubclass(type(exc), GeneratorExit):  # (isinstance would consult a __class__ property)
            exc = None
        if self.exception_only and exc is None:
            return None
        if self.filter.code is not None and not self.early:
            try:
                if not self.check(token[0], token[1], result, cost):
                    return None
            except BaseException as e:
                self.filter.failed(e)
                return None
        if self.cap.done:
            return None
        self.cap.note_matched()
        return cost, exc

    def leave(self, token, result, exc, offset=-1):
        ended = self.matched(token, result, exc)
        if ended is None:
            return
        cost, exc = ended
        args, kwargs, cap = token[0], token[1], self.cap
        tid = _get_ident()
        # the Thread object (its name is read later), where the call ended (its line is found later)
        pending = {"thread": self.threads(tid), "code": self.target.code, "offset": offset}
        caller = token[4]
        if caller is not None:   # where it was called from, while the caller still stands at that call
            pending["caller"] = (caller.f_code, caller.f_lineno)
        record = {"time": token[3], "cost_ms": round(cost, 6), "is_exp": exc is not None,
                  "tid": tid, "_pending": pending}
        try:
            value = self.show(args, kwargs, result, cost)
            if self.view_opts["raw"]:
                pending["value"] = value  # its own repr runs later, on the command's thread
            else:
                record["view"] = objview.view(value, **self.view_opts)  # runs no target code
        except BaseException as e:
            pending["expr_error"] = e  # its facts (watch_expr.noted) on the command's thread: str(e) is target code
        if exc is not None:
            pending["exc"] = (exc, exc.__traceback__)  # the chain from here down stays as it is now
        cap.add(record)


@command("watch")
def watch(args, ctx):
    allow = args["allow_mutating"]
    watch_expr = capture.Expression(args["expr"], "expr", allow)
    flt = capture.Expression(args["filter_expr"], "filter_expr", allow)
    target = instrument.resolve(args["module"], args["cls"], args["method"], args["nested_method"])
    cap = capture.Capture(ctx, args["limit"])
    view_opts = {"expand": args["expand"], "verbose": args["verbose"], "raw": args["raw"]}
    probe = WatchProbe(target, cap, watch_expr, flt, args["exception"], view_opts)

    budget = timebox.Budget()
    lines = srclines.Lines()   # the source lines of every captured exception's frames

    def done(rec):
        pending = rec.get("_pending")
        failure = pending.get("expr_error") if pending is not None else None
        finish(rec, view_opts, budget, lines)
        if failure is not None:
            watch_expr.noted(failure, rec["expr_error"])
        return rec

    def progress(rec):  # on the command's thread, once per record, as it arrives
        rec = done(rec)
        return {"target": target.label, "cost_ms": rec["cost_ms"],
                "exception": rec["exception"]["type"] if rec["is_exp"] else None, "record": rec}

    summary = capture.run(ctx, target, probe, cap, args["timeout_s"], progress, flt)
    summary["expr"] = watch_expr.source
    summary["records"] = [done(rec) for rec in list(cap.records)]
    summary["expression_failures"] = [e for e in (watch_expr.report(budget), flt.report(budget)) if e]
    return summary
