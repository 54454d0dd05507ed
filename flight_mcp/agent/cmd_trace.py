"""trace: the call tree under each invocation of one function, with the time of every sub-call.

The command: a probe that starts a recording (recording.py) on the thread of each call of the
function, keeps the calls that pass the filter and the entrance time, and answers with each
invocation's tree as node facts.
"""
import _thread
import sys
import time

from . import capture, instrument, recording, timebox
from .registry import command

_get_ident = _thread.get_ident

class Invocation(object):
    """One traced call: its recording and the facts of the call around it."""
    __slots__ = ("rec", "tid", "wall", "args", "cost", "thread", "names", "exc", "tb")

    def __init__(self, rec, tid):
        self.rec, self.tid, self.wall = rec, tid, time.time()
        self.args = self.cost = self.thread = self.names = self.exc = self.tb = None

    def thread_facts(self):
        """(name, daemon), read once, on the command's thread."""
        if self.names is None:
            self.names = capture.thread_facts(self.tid, self.thread)
        return self.names


class TraceProbe(object):
    def __init__(self, target, cap, flt, entrance_ms, recorder):
        self.target = target
        self.cap = cap
        self.filter = flt
        self.needs_args = flt.code is not None
        self.check = flt.caller(target) if flt.code is not None else None
        self.entrance_s = entrance_ms / 1000.0
        self.recorder = recorder
        self.busy = 0       # calls left unrecorded: their thread had another profiler
        self.ended = False
        self.running = {}   # thread ident -> Invocation running on it (recursion joins its tree)
        self.gap_label = "[await]" if target.kind == "coroutine" else "[yield]"
        self.threads = capture.thread_lookup()

    def _check(self, args, kwargs, result=None, cost=None):
        try:
            return bool(self.check(args, kwargs, result, cost))
        except BaseException as e:
            self.filter.failed(e)
            return False

    def _activate(self, inv, prev):
        self.running[inv.tid] = inv
        inv.rec.activate(prev)

    def _profiler_busy(self, prev):
        """Another profiler the recorder could not hand back after the call (on a thread where the
        recording takes its events from a profile function): its calls are left unrecorded, counted."""
        if self.recorder.profile_function and self.recorder.foreign(prev):
            self.busy += 1
            return True
        return False

    def enter(self, args, kwargs, frame):
        cap = self.cap
        if cap.done or self.ended:
            return None
        tid = _get_ident()
        if tid in self.running:
            return None
        cap.note_seen()
        if self.filter.code is not None and not self.filter.late and not self._check(args, kwargs):
            return None
        prev = sys.getprofile()
        if self._profiler_busy(prev):
            return None
        inv = Invocation(self.recorder.start(self.target.code, frame, self.gap_label), tid)
        if self.filter.late:
            inv.args = (args, kwargs)
        self._activate(inv, prev)
        return inv

    def _release(self, inv):
        if self.running.get(inv.tid) is inv:
            inv.rec.deactivate()
            del self.running[inv.tid]

    def leave(self, inv, result, exc):
        self._release(inv)
        inv.cost = inv.rec.finish()
        cap = self.cap
        if self.filter.late and not self._check(inv.args[0], inv.args[1], result, inv.cost * 1000.0):
            return
        cap.note_matched()
        if inv.cost < self.entrance_s:
            cap.note_skipped()
            return
        inv.thread = self.threads(inv.tid)   # the Thread object: its name is read later
        # (issubclass: isinstance would consult a __class__ property.) Its text is read later.
        inv.exc = None if exc is None or issubclass(type(exc), GeneratorExit) else exc
        if inv.exc is not None:
            inv.tb = exc.__traceback__   # as the call left it: the first entry of its code is the call's
        cap.add(inv)

    def stop(self):
        """The command ended: recordings of calls still running remove themselves at their thread's
        next event (a profile function can only be changed from its own thread)."""
        self.ended = True   # a suspended call that resumes now goes on unrecorded
        for inv in list(self.running.values()):
            inv.rec.stop()
        self.recorder.close()

    def suspend(self, inv):
        self._release(inv)
        inv.rec.suspend()

    def resume(self, inv):
        inv.rec.resume()
        tid = _get_ident()
        prev = sys.getprofile()
        if self.ended or tid in self.running or self._profiler_busy(prev):
            return   # another traced call (or profiler) runs on this thread; this one goes on unrecorded
        inv.tid = tid
        self._activate(inv, prev)


def invocation_facts(inv, depth, interval, budget, code):
    """One captured invocation as capture_common's Invocation facts (on the command's thread)."""
    if inv.exc is not None:
        inv.rec.resolve(inv.exc)   # the types of the sub-calls it raised through
    root, hidden, elided = recording.tree_facts(inv.rec, depth, interval)
    if inv.exc is not None:
        root.update(raised=True, exception=recording.exception_type_name(type(inv.exc)),
                    raised_at=capture.raise_line(inv.tb, code))
    name, daemon = inv.thread_facts()
    return {"time": inv.wall, "thread": name, "tid": inv.tid, "daemon": daemon,
            "cost_ms": root["cost_ms"], "root": root, "hidden_nodes": hidden, "elided_nodes": elided,
            "dropped_nodes": inv.rec.dropped,
            "exception": capture.exception_fact(inv.exc, budget) if inv.exc is not None else None}


@command("trace")
def trace(args, ctx):
    depth, interval = args["depth"], args["interval"]
    flt = capture.Expression(args["filter_expr"], "filter_expr", args["allow_mutating"])
    target = instrument.resolve(args["module"], args["cls"], args["method"], args["nested_method"])
    cap = capture.Capture(ctx, args["limit"])
    recorder = recording.Recorder(interval, depth)
    probe = TraceProbe(target, cap, flt, args["entrance_time"], recorder)

    budget = timebox.Budget()

    def progress(inv):
        return {"target": target.label, "cost_ms": round(inv.cost * 1000.0, 3), "thread": inv.thread_facts()[0],
                "record": invocation_facts(inv, depth, interval, budget, target.code)}

    try:
        summary = capture.run(ctx, target, probe, cap, args["timeout_s"], progress, flt)
    finally:
        probe.stop()   # also when instrumenting failed: the recorder holds a sys.monitoring tool id
    summary["invocations"] = [invocation_facts(inv, depth, interval, budget, target.code) for inv in cap.records]
    summary["expression_failures"] = [e for e in (flt.report(budget),) if e]
    summary.update(depth=depth, interval=interval, entrance_time=args["entrance_time"], recorder=recorder.name,
                   recorder_fallback=recorder.fallback, profiler_busy=probe.busy)
    return summary
