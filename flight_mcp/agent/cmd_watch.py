"""watch: what real calls of one function receive, return or raise, through a user expression.

The expression and the filter are compiled once per command and evaluated on the calling thread
when a call ends (so they see return_obj and cost). Then the calling thread only takes what cannot
wait, and runs none of the target's code doing it: the value's view (objview reads the state the
objects have right then, through C-level reads; the object may change after the call), references
to the exception and its traceback, and the Thread object. Everything that can run the target's
code or take long (the value's own repr for -r, the exception's message, the traceback's text with
source lines, the thread's name) is formed afterwards on the command's thread, each call into the
target with its time budget (timebox.py). A failing expression never reaches the application; it
is reported once with the number of calls it failed on.
"""
import _thread
import linecache
import os
import sys
import time

from . import capture, instrument, objstate, objview, timebox
from .registry import command

_get_ident = _thread.get_ident
_perf = time.perf_counter
_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
TRACEBACK_LINES = 60
_PLAIN_ARGS = (str, int, float, bool, type(None))


def _traceback(exc_type_name, message, tb):
    """The traceback's text, like traceback.format_exception, without the agent's own frames (hooks
    sit between the caller and the function on Python <= 3.11). Source lines come from the files
    (linecache without module globals: no loader of the target is asked)."""
    lines = ["Traceback (most recent call last):"]
    while tb is not None:
        code = tb.tb_frame.f_code
        if not code.co_filename.startswith(_AGENT_DIR):
            lineno = tb.tb_lineno
            lines.append('  File "%s", line %s, in %s' % (code.co_filename, "?" if lineno is None else lineno,
                                                          code.co_name))
            source = linecache.getline(code.co_filename, lineno).strip() if type(lineno) is int else ""
            if source:
                lines.append("    " + source)
        tb = tb.tb_next
    lines.extend(("%s: %s" % (exc_type_name, message) if message else exc_type_name).split("\n"))
    if len(lines) > TRACEBACK_LINES:
        lines = lines[:5] + ["  ... %d lines ..." % (len(lines) - TRACEBACK_LINES + 5)] + lines[-(TRACEBACK_LINES - 6):]
    return "\n".join(lines)


def _exception_name(exc):
    """`ValueError`: the class's own __name__, from type's field (not a metaclass property)."""
    return objstate.short_name(type(exc))


def _message(exc, budget):
    """str(exc), cut to one line of 300 characters. A built-in exception holding plain data is
    read directly; anything else may run the target's __str__: on its own thread, with its budget."""
    t = type(exc)
    args = objstate.exception_args(exc)
    if not objstate.is_heap(t) and all(any(type(a) is p for p in _PLAIN_ARGS) for a in args):
        text = str(exc)
    else:
        text, error = budget.call(str, exc, objstate.short_name(t))
        if error is not None:
            return error.replace("<repr", "<str")
    return objview.short_repr(text, 300)[1:-1]


def finish(record, view_opts, budget):
    """Completes a record on the command's thread from what the calling thread kept (idempotent)."""
    pending = record.pop("_pending", None)
    if pending is None:
        return record
    if "value" in pending:
        record["view"] = objview.view(pending["value"], budget=budget, **view_opts)
    if "expr_error" in pending:
        e = pending["expr_error"]
        record["expr_error"] = "%s: %s" % (_exception_name(e), _message(e, budget))
    if "exc" in pending:
        exc, tb = pending["exc"]
        name, message = _exception_name(exc), _message(exc, budget)
        record["exception"] = "%s: %s" % (name, message)
        try:
            record["traceback"] = _traceback(name, message, tb)
        except Exception:
            record["traceback"] = record["exception"]
    record["thread"], record["daemon"] = capture.thread_facts(record["tid"], pending.get("thread"))
    return record


class WatchProbe(object):
    needs_args = True

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
        threading = sys.modules.get("threading")
        active = getattr(threading, "_active", None) if threading is not None else None
        self.threads = active.get if type(active) is dict else (lambda tid: None)

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
                return (args, kwargs, perf(), now())
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
            return (args, kwargs, perf(), now())
        return enter

    def leave(self, token, result, exc):
        cost = (_perf() - token[2]) * 1000.0
        if issubclass(type(exc), GeneratorExit):  # (isinstance would consult a __class__ property)
            exc = None
        if self.exception_only and exc is None:
            return
        args, kwargs = token[0], token[1]
        if self.filter.code is not None and not self.early:
            try:
                if not self.check(args, kwargs, result, cost):
                    return
            except BaseException as e:
                self.filter.failed(e)
                return
        cap = self.cap
        if cap.done:
            return
        cap.note_matched()
        tid = _get_ident()
        pending = {"thread": self.threads(tid)}   # the Thread object: its name is read later
        record = {"time": capture.wall_time_text(token[3]), "cost_ms": round(cost, 6), "is_exp": exc is not None,
                  "tid": tid, "_pending": pending}
        try:
            value = self.show(args, kwargs, result, cost)
            if self.view_opts["raw"]:
                pending["value"] = value  # its own repr runs later, on the command's thread
            else:
                record["view"] = objview.view(value, **self.view_opts)  # runs no target code
        except BaseException as e:
            pending["expr_error"] = e  # reported (expr.failed) on the command's thread: str(e) is target code
        if exc is not None:
            pending["exc"] = (exc, exc.__traceback__)  # the chain from here down stays as it is now
        cap.add(record)


@command("watch")
def watch(args, ctx):
    limit = capture.int_arg(args, "limits", "-n/--limits", 10, minimum=1)
    expand = capture.int_arg(args, "expand", "-x/--expand", 1, minimum=-1)
    timeout_s = capture.float_arg(args, "duration_s", "timeout", 30.0, minimum=0)
    allow = args.get("allow_mutating", False)
    source = args.get("expr") or "args,kwargs"
    watch_expr = capture.Expression(source, "--expr", allow)
    flt = capture.Expression(args.get("filter_expr"), "-f/--filter", allow)
    target = instrument.resolve(args["module"], args.get("cls"), args["method"], args.get("nested_method"))
    cap = capture.Capture(ctx, limit)
    view_opts = {"expand": expand if expand >= 0 else 0, "verbose": bool(args.get("verbose")),
                 "raw": bool(args.get("raw"))}
    probe = WatchProbe(target, cap, watch_expr, flt, bool(args.get("exception")), view_opts)

    budget = timebox.Budget()

    def done(rec):
        failed = "_pending" in rec and "expr_error" in rec["_pending"]
        finish(rec, view_opts, budget)
        if failed:
            watch_expr.failed(_Failure.of(rec["expr_error"]))
        return rec

    def describe(rec):  # on the command's thread, once per record, as it arrives
        rec = done(rec)
        return "%s %.3fms%s" % (target.label, rec["cost_ms"], " raised " + rec["exception"] if rec["is_exp"] else "")

    summary = capture.run(ctx, target, probe, cap, timeout_s, describe)
    summary["expr"] = source
    summary["records"] = [done(rec) for rec in list(cap.records)]
    summary["errors"] = [e for e in (watch_expr.report(), flt.report()) if e]
    return summary


class _Failure(Exception):
    """An --expr failure as the text finish() formed (on the command's thread, with the budget), for
    Expression.failed(), which would otherwise call str() on the target's exception itself."""

    @classmethod
    def of(cls, text):
        name, _, message = text.partition(": ")
        return type(name, (cls,), {})(message)
