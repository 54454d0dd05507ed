"""trace: the call tree under each invocation of one function, with the time of every sub-call.

The tree is recorded only on the thread running the traced call and only while it runs: the probe
sets a profile function on that thread when the call starts (restoring the previous one when it
ends or suspends), so other threads and the rest of the time pay nothing.
"""
import _thread
import os
import sys
import time

from . import capture, instrument
from .registry import AgentError, command

_get_ident = _thread.get_ident
_perf = time.perf_counter
_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
MAX_NODES = 100000      # recorded per invocation; deeper/later calls are counted, not kept
MAX_SHOWN = 500         # nodes sent back per invocation (a tree is read by a person or a model)

_kinds = {}
_pass = {"codes": None, "n": -1}
USER, PASS, HIDE = 0, 1, 2


def _kind(code):
    """USER: shown. PASS: the hook path (trampolines, hooks) is skipped but what it calls is shown.
    HIDE: the agent's own work (probes, the expressions they evaluate) is left out entirely."""
    k = _kinds.get(code)
    if k is None:
        if _pass["n"] != len(instrument.TRAMPOLINE_CODES):
            _pass["codes"] = instrument.pass_through_codes()
            _pass["n"] = len(instrument.TRAMPOLINE_CODES)
        if code in _pass["codes"]:
            k = PASS
        elif code.co_filename.startswith(_AGENT_DIR):
            k = HIDE
        else:
            k = USER
        if len(_kinds) < 50000:
            _kinds[code] = k
    return k


class Recording(object):
    """One invocation's tree. A node is [label, start, children, cost]; label is a code object, a
    builtin callable, or a marker string ("[await]")."""

    def __init__(self, code, frame, gap_label):
        self.root = [code, _perf(), [], None]
        self.stack = [self.root]
        self.root_code = code
        self.root_frame = frame      # None with the trampoline: bound at the first call of code
        self.hidden = 0              # depth inside agent frames
        self.nodes = 1
        self.dropped = 0
        self.gap_label = gap_label
        self.gap = None
        self.wall = time.time()
        self.tid = _get_ident()
        self.prev = None
        self.chain = None
        self.stopped = False

    def activate(self):
        self.prev = prev = sys.getprofile()
        self.chain = prev if isinstance(getattr(prev, "__self__", None), Recording) else None
        sys.setprofile(self.prof)

    def prof(self, frame, event, arg):
        if self.stopped:   # the command ended while this call still runs: stop recording it
            if sys.getprofile() == self.prof:
                sys.setprofile(self.prev)
            return
        if self.chain is not None:   # another trace of this thread records too (two clients)
            if self.chain.__self__.stopped:
                self.chain = None
            else:
                self.chain(frame, event, arg)
        if event == "call":
            if frame is self.root_frame:
                return
            code = frame.f_code
            k = _kind(code)
            if k == HIDE:
                self.hidden += 1
                return
            if self.hidden or k == PASS:
                return
            if self.root_frame is None and code is self.root_code and len(self.stack) == 1:
                self.root_frame = frame
                return
            self._push(code)
        elif event == "return":
            if frame is self.root_frame:
                return
            k = _kind(frame.f_code)
            if k == HIDE:
                if self.hidden:
                    self.hidden -= 1
                return
            if not self.hidden and k == USER:
                self._pop()
        elif not self.hidden and _kind(frame.f_code) == USER:
            if event == "c_call":
                self._push(arg)
            else:  # c_return, c_exception
                self._pop()

    def _push(self, label):
        parent = self.stack[-1]
        if parent is None or self.nodes >= MAX_NODES:
            self.stack.append(None)
            self.dropped += 1
            return
        node = [label, _perf(), [], None]
        parent[2].append(node)
        self.stack.append(node)
        self.nodes += 1

    def _pop(self):
        if len(self.stack) > 1:
            node = self.stack.pop()
            if node is not None:
                node[3] = _perf() - node[1]

    def suspend(self):
        del self.stack[1:]   # frames that suspend with the root already sent their returns
        self.gap = [self.gap_label, _perf(), [], None]
        self.root[2].append(self.gap)

    def resume(self):
        if self.gap is not None:
            self.gap[3] = _perf() - self.gap[1]
            self.gap = None

    def finish(self):
        end = _perf()
        for node in self.stack:
            if node is not None and node[3] is None:
                node[3] = end - node[1]
        self.root[3] = end - self.root[1]
        self.stack = None


class TraceProbe(object):
    def __init__(self, target, cap, flt, entrance_ms):
        self.target = target
        self.cap = cap
        self.filter = flt
        self.needs_args = flt.code is not None
        self.check = flt.caller(target) if flt.code is not None else None
        self.entrance_s = entrance_ms / 1000.0
        self.running = {}   # thread ident -> Recording running on it (recursion joins its tree)
        self.gap_label = "[await]" if target.kind == "coroutine" else "[yield]"

    def _check(self, args, kwargs, result=None, cost=None):
        try:
            return bool(self.check(args, kwargs, result, cost))
        except BaseException as e:
            self.filter.failed(e)
            return False

    def enter(self, args, kwargs, frame):
        cap = self.cap
        if cap.done:
            return None
        tid = _get_ident()
        if tid in self.running:
            return None
        cap.seen += 1
        if self.filter.code is not None and not self.filter.late and not self._check(args, kwargs):
            return None
        rec = Recording(self.target.code, frame, self.gap_label)
        if self.filter.late:
            rec.args = (args, kwargs)
        self.running[tid] = rec
        rec.activate()
        return rec

    def leave(self, rec, result, exc):
        if self.running.get(rec.tid) is rec:
            sys.setprofile(rec.prev)
            del self.running[rec.tid]
        rec.finish()
        cap = self.cap
        if self.filter.late and not self._check(rec.args[0], rec.args[1], result, rec.root[3] * 1000.0):
            return
        cap.matched += 1
        if rec.root[3] < self.entrance_s:
            cap.skipped += 1
            return
        rec.thread = capture.thread_facts(rec.tid)
        rec.exc = None if exc is None or isinstance(exc, GeneratorExit) else "%s: %s" % (type(exc).__name__, exc)
        cap.add(rec)

    def stop(self):
        """The command ended: recordings of calls still running remove themselves at their thread's
        next event (a profile function can only be changed from its own thread)."""
        for rec in list(self.running.values()):
            rec.stopped = True

    def suspend(self, rec):
        if self.running.get(rec.tid) is rec:
            sys.setprofile(rec.prev)
            del self.running[rec.tid]
        rec.suspend()

    def resume(self, rec):
        rec.resume()
        tid = _get_ident()
        if tid in self.running:
            return   # another traced call runs on this thread; this one goes on unrecorded
        rec.tid = tid
        self.running[tid] = rec
        rec.activate()


def _label(label):
    if isinstance(label, str):
        return {"name": label, "qualname": label, "file": "", "line": 0}
    if hasattr(label, "co_name"):
        return {"name": label.co_name, "qualname": getattr(label, "co_qualname", label.co_name),
                "file": label.co_filename, "line": label.co_firstlineno}
    name = getattr(label, "__name__", None) or type(label).__name__
    owner = getattr(label, "__self__", None)
    qual = getattr(label, "__qualname__", name)
    if owner is not None and not isinstance(owner, type(sys)) and "." not in qual:
        qual = "%s.%s" % (type(owner).__name__, name)
    return {"name": name, "qualname": qual, "file": "<built-in>", "line": 0}


def tree_json(rec, depth, interval_ms):
    """The recorded tree as JSON nodes, cut by -d (levels, root = 1) or else by -i (hide sub-calls
    cheaper than interval_ms), and bounded to MAX_SHOWN nodes."""
    budget = [MAX_SHOWN]
    elided = [0]
    hidden = [0]

    def convert(node, level):
        out = _label(node[0])
        out["cost_ms"] = round((node[3] or 0.0) * 1000.0, 3)
        kids = []
        for child in node[2]:
            if depth > 0 and level >= depth:
                hidden[0] += 1
                continue
            if depth <= 0 and (child[3] or 0.0) * 1000.0 < interval_ms:
                hidden[0] += 1
                continue
            if budget[0] <= 0:
                elided[0] += 1
                continue
            budget[0] -= 1
            kids.append(convert(child, level + 1))
        out["children"] = kids
        return out

    root = convert(rec.root, 1)
    return root, hidden[0], elided[0]


@command("trace")
def trace(args, ctx):
    limit = capture.int_arg(args, "limits", "-n/--limits", 10, minimum=1)
    depth = capture.int_arg(args, "depth", "-d/--depth", -1)
    if depth == 0 or depth < -1:
        raise AgentError("bad_argument", "-d/--depth must be >= 1 (1 = the traced function alone, 2 = with its "
                         "direct sub-calls, ...), or omitted for the full tree; got %d" % depth)
    interval = capture.float_arg(args, "interval", "-i/--interval", 0.1, minimum=0)
    entrance = capture.float_arg(args, "entrance_time", "-et/--entrance_time", 0.0, minimum=0)
    timeout_s = capture.float_arg(args, "duration_s", "timeout", 30.0, minimum=0)
    flt = capture.Expression(args.get("filter_expr"), "-f/--filter_expr", args.get("allow_mutating", False))
    target = instrument.resolve(args["module"], args.get("cls"), args["method"], args.get("nested_method"))
    cap = capture.Capture(ctx, limit)
    probe = TraceProbe(target, cap, flt, entrance)

    def describe(rec):
        return "%s %.3fms on %s" % (target.label, rec.root[3] * 1000.0, rec.thread[0])

    summary = capture.run(ctx, target, probe, cap, timeout_s, describe)
    invocations = []
    for rec in cap.records:
        root, hidden, elided = tree_json(rec, depth, interval)
        invocations.append({"time": capture.wall_time_text(rec.wall), "thread": rec.thread[0], "tid": rec.tid,
                            "daemon": rec.thread[1], "cost_ms": root["cost_ms"], "root": root,
                            "hidden_nodes": hidden, "elided_nodes": elided, "dropped_nodes": rec.dropped,
                            "exception": rec.exc})
    summary["invocations"] = invocations
    summary["errors"] = [e for e in (flt.report(),) if e]
    summary["depth"], summary["interval_ms"], summary["entrance_ms"] = depth, interval, entrance
    return summary
