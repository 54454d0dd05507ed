"""watch: what real calls of one function receive, return or raise, through a user expression.

The expression and the filter are compiled once per command and evaluated on the calling thread
when a call ends (so they see return_obj and cost), then the value is turned into a bounded view
right away: the object may change after the call. A failing expression never reaches the
application; it is reported once with the number of calls it failed on.
"""
import _thread
import os
import time
import traceback

from . import capture, instrument, objview
from .registry import command

_get_ident = _thread.get_ident
_perf = time.perf_counter
_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
TRACEBACK_LINES = 60


def _traceback(exc):
    """The exception's traceback without the agent's own frames (hooks sit between the caller
    and the function on Python <= 3.11)."""
    tb = exc.__traceback__
    frames = [f for f in traceback.extract_tb(tb) if not f.filename.startswith(_AGENT_DIR)]
    lines = ["Traceback (most recent call last):\n"]
    lines.extend(traceback.format_list(frames))
    lines.extend(traceback.format_exception_only(type(exc), exc))
    text = "".join(lines).rstrip("\n").split("\n")
    if len(text) > TRACEBACK_LINES:
        text = text[:5] + ["  ... %d lines ..." % (len(text) - TRACEBACK_LINES + 5)] + text[-(TRACEBACK_LINES - 6):]
    return "\n".join(text)


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
        if isinstance(exc, GeneratorExit):
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
        record = {"time": capture.wall_time_text(token[3]), "cost_ms": round(cost, 6), "is_exp": exc is not None}
        try:
            value = self.show(args, kwargs, result, cost)
            record["view"] = objview.view(value, **self.view_opts)
        except BaseException as e:
            self.expr.failed(e)
            record["expr_error"] = "%s: %s" % (type(e).__name__, objview.short_repr(str(e), 300)[1:-1])
        if exc is not None:
            record["exception"] = "%s: %s" % (type(exc).__name__, objview.short_repr(str(exc), 300)[1:-1])
            try:
                record["traceback"] = _traceback(exc)
            except BaseException:
                record["traceback"] = record["exception"]
        tid = _get_ident()
        name, daemon = capture.thread_facts(tid)
        record.update(thread=name, tid=tid, daemon=daemon)
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

    def describe(rec):
        return "%s %.3fms%s" % (target.label, rec["cost_ms"], " raised " + rec["exception"] if rec["is_exp"] else "")

    summary = capture.run(ctx, target, probe, cap, timeout_s, describe)
    summary["expr"] = source
    summary["records"] = list(cap.records)
    summary["errors"] = [e for e in (watch_expr.report(), flt.report()) if e]
    return summary
