"""tt (time tunnel): calls of one function recorded into a table that outlives the command, so
later commands list them, show one expanded, delete them, or call the function again with the
arguments of one (replay).

Recording is watch's machinery (capture.Capture/run, capture.Expression, instrument): the probe
is watch's, whose leave() here keeps references instead of a view. On the application's thread a
call costs what a watch's costs plus one dict: references to the arguments, the return value, the
exception and its traceback (the chain as it is now), the Thread object. On the command's thread,
within 0.2 s, the exception becomes facts (type, message within its time budget, frames), the
thread's name is read, and the record enters the table: from then on it holds references to the
arguments, keyword arguments and return value only (no exception, traceback or frame), which is
what replay needs. Values are viewed when shown (objview, no target code unless raw, and raw on
this thread with its budget): a mutable argument shows its state at that moment.

The table holds at most KEPT records (the oldest is dropped past it) and one recording stops
after KEPT; delete/delete_all free records at once, detach empties the table (on_detach()).
"""
import _thread
import sys
import time

from . import capture, cmd_watch, instrument, objview, server, srclines, timebox
from .registry import AgentError, command

KEPT = 1000          # records the table holds; past it the oldest is dropped
FIRST_INDEX = 1000   # flight_profiler numbers time fragments from 1000
_get_ident = _thread.get_ident
_perf = time.perf_counter


class Table(object):
    """index -> record, in index order; bounded by KEPT."""

    def __init__(self):
        self.records = {}
        self.next_index = FIRST_INDEX
        self.dropped = 0
        self._lock = _thread.allocate_lock()

    def add(self, record):
        dropped = []   # let go of after the lock: freeing a value may run its class's __del__
        with self._lock:
            index = self.next_index
            self.next_index += 1
            record["index"] = index
            self.records[index] = record
            while len(self.records) > KEPT:
                dropped.append(self.records.pop(next(iter(self.records))))
                self.dropped += 1
        return index

    def get(self, index):
        record = self.records.get(index)
        if record is None:
            raise AgentError("record_not_found", "no record with index %d%s." % (index, self._range()),
                             arg="index")
        return record

    def delete(self, index):
        with self._lock:
            record = self.records.pop(index, None)
        if record is None:
            raise AgentError("record_not_found", "no record with index %d%s." % (index, self._range()),
                             arg="delete")

    def clear(self):
        with self._lock:
            old, self.records = self.records, {}
            self.next_index = FIRST_INDEX
            self.dropped = 0
        return len(old)   # (freed here, after the lock)

    def _range(self):
        keys = list(self.records)
        return (" (the table holds %d records, %d to %d)" % (len(keys), keys[0], keys[-1]) if keys
                else " (the table is empty)")


TABLE = Table()


def on_detach():
    """Detach: the table lets go of every recorded value (the package is unloaded after)."""
    TABLE.clear()


class TtProbe(cmd_watch.WatchProbe):
    """watch's probe (its enter: the filter judged at the call's start when it can be), whose
    leave keeps references for the table rather than an expression's view."""

    def __init__(self, target, cap, flt):
        self.target = target
        self.cap = cap
        self.filter = flt
        self.exception_only = False
        self.early = flt.code is not None and not flt.late
        self.check = flt.caller(target) if flt.code is not None else None
        self.enter = self._make_enter()
        self.threads = capture.thread_lookup()

    def leave(self, token, result, exc, offset=-1):
        ended = self.matched(token, result, exc)
        if ended is None:
            return
        cost, exc = ended
        args, kwargs, cap = token[0], token[1], self.cap
        tid = _get_ident()
        cap.add({"time": token[3], "cost_ms": round(cost, 6), "tid": tid, "_thread": self.threads(tid),
                 "_args": args, "_kwargs": kwargs, "_result": result if exc is None else None,
                 "_exc": (exc, exc.__traceback__) if exc is not None else None, "_offset": offset})


def _where(target, args):
    return {"module": args["module"], "cls": args["cls"], "method": args["method"],
            "nested_method": args["nested_method"], "target": target.label,
            "_has_self": target.has_self, "_posnames": target.posnames}


def _row(rec):
    """The facts of one record in a listing (tools/tt.py Row)."""
    return {"index": rec["index"], "time": rec["time"], "cost_ms": rec["cost_ms"], "is_exp": rec["is_exp"],
            "thread": rec["thread"], "tid": rec["tid"], "daemon": rec["daemon"], "module": rec["module"],
            "cls": rec["cls"], "method": rec["method"], "nested_method": rec["nested_method"],
            "target": rec["target"], "replay_of": rec["replay_of"], "line": rec["line"]}


def _record(ctx, args):
    flt = capture.Expression(args["filter_expr"], "filter_expr", args["allow_mutating"])
    target = instrument.resolve(args["module"], args["cls"], args["method"], args["nested_method"])
    cap = capture.Capture(ctx, min(args["limit"], KEPT))
    probe = TtProbe(target, cap, flt)
    budget = timebox.Budget()
    lines = srclines.Lines()   # the source lines of every recorded exception's frames
    where = _where(target, args)

    def keep(rec):  # on the command's thread; once per record
        if "index" in rec:
            return rec
        rec["thread"], rec["daemon"] = capture.thread_facts(rec["tid"], rec.pop("_thread"))
        exc = rec.pop("_exc")
        offset = rec.pop("_offset")
        rec["is_exp"] = exc is not None
        rec["line"] = capture.raise_line(exc[1], target.code) if exc is not None else capture.line_at(target.code, offset)
        rec["exception"] = capture.exception_fact(exc[0], budget, exc[1], lines) if exc is not None else None
        rec["replay_of"] = None
        rec.update(where)
        TABLE.add(rec)
        return rec

    def progress(rec):
        rec = keep(rec)
        return {"target": target.label, "cost_ms": rec["cost_ms"],
                "exception": rec["exception"]["type"] if rec["is_exp"] else None}

    summary = capture.run(ctx, target, probe, cap, args["timeout_s"], progress)
    summary["records"] = [_row(keep(rec)) for rec in list(cap.records)]
    # The capture sits in a cycle with the command's context (its clean-ups): without this the
    # values would live on after a delete until the target's garbage collector ran.
    del cap.records[:]
    summary["expression_failures"] = [e for e in (flt.report(budget),) if e]
    return {"action": "record", "recording": summary, "table_size": len(TABLE.records), "kept": KEPT,
            "dropped": TABLE.dropped}


class _Stored(object):
    """What capture.Expression.caller needs of a target, from a record."""

    def __init__(self, rec):
        self.has_self = rec["_has_self"]
        self.posnames = rec["_posnames"]


def _list(args):
    flt = capture.Expression(args["filter_expr"], "filter_expr", args["allow_mutating"])
    wanted = args["method_filter"]
    budget = timebox.Budget()
    rows = []
    for rec in list(TABLE.records.values()):
        if wanted is not None and wanted not in (rec["target"], "%s.%s.%s" % (rec["module"], rec["cls"], rec["method"])):
            continue
        if flt.code is not None:
            try:
                if not flt.caller(_Stored(rec))(rec["_args"], rec["_kwargs"], rec["_result"], rec["cost_ms"]):
                    continue
            except BaseException as e:
                flt.failed(e)
                continue
        rows.append(_row(rec))
    return {"records": rows, "table_size": len(TABLE.records), "kept": KEPT, "dropped": TABLE.dropped,
            "expression_failures": [e for e in (flt.report(budget),) if e]}


def _show(rec, args, budget):
    """One record expanded (tools/tt.py Shown): the row, the instance, each argument by its
    parameter's name, the keyword arguments, the return value or the exception."""
    opts = {"expand": args["expand"], "verbose": args["verbose"], "raw": args["raw"], "budget": budget}
    values = rec["_args"]
    shown = _row(rec)
    shown["instance"] = None
    if rec["_has_self"] and values:
        shown["instance"] = objview.view(values[0], **opts)
        values = values[1:]
        names = rec["_posnames"][1:]
    else:
        names = rec["_posnames"]
    shown["args"] = [{"name": names[i] if i < len(names) else None, "view": objview.view(v, **opts)}
                     for i, v in enumerate(values)]
    shown["kwargs"] = [{"name": k if type(k) is str else None, "view": objview.view(v, **opts)}
                       for k, v in list(rec["_kwargs"].items())] if type(rec["_kwargs"]) is dict else []
    shown["return_obj"] = None if rec["is_exp"] else objview.view(rec["_result"], **opts)
    shown["exception"] = rec["exception"]
    return shown


class _Replay(object):
    """One call of the function on an agent thread: the application's threads are not used, and a
    call that does not end by the deadline keeps running there (its record is added when it ends)."""

    def __init__(self, target, original):
        self.target = target
        self.original = original
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.record = None

    def run(self):
        rec = self.original
        func, args, kwargs = self.target.func, rec["_args"], rec["_kwargs"]
        started, t0 = time.time(), _perf()
        result = exc = None
        try:
            result = func(*args, **kwargs)
            if self.target.kind == "coroutine":
                result = self._drive(result)
        except BaseException as e:
            exc = (e, e.__traceback__)
        cost = (_perf() - t0) * 1000.0
        new = {"time": started, "cost_ms": round(cost, 6), "tid": _get_ident(), "thread": "flight-mcp-replay",
               "daemon": True, "_args": args, "_kwargs": kwargs, "_result": result, "is_exp": exc is not None,
               "replay_of": rec["index"]}
        for key in ("module", "cls", "method", "nested_method", "target", "_has_self", "_posnames"):
            new[key] = rec[key]
        new["exception"] = capture.exception_fact(exc[0], timebox.Budget(), exc[1]) if exc is not None else None
        new["line"] = capture.raise_line(exc[1], self.target.code) if exc is not None else None
        TABLE.add(new)
        self.record = new
        self.done.release()

    @staticmethod
    def _drive(coro):
        asyncio = sys.modules.get("asyncio")
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.close()


def _replay(ctx, rec, args):
    if not args["may_change_target"]:
        raise AgentError("read_only", "replay calls the function again in the target (%s), and this server is "
                         "read-only." % rec["target"], arg="play")
    if rec["nested_method"]:
        raise AgentError("unsupported", "%s is a nested function: it exists only inside a call of %s (with that "
                         "call's closure), so it cannot be called on its own. Replay a record of %s itself."
                         % (rec["target"], rec["method"], rec["method"]), arg="index")
    target = instrument.resolve(rec["module"], rec["cls"], rec["method"], None)
    if target.kind == "coroutine" and "asyncio" not in sys.modules:
        raise AgentError("unsupported", "%s is a coroutine function and the target has not imported asyncio to "
                         "run it." % rec["target"], arg="index")
    if target.kind == "async generator":
        raise AgentError("unsupported", "%s is an async generator function; replay cannot drive it."
                         % rec["target"], arg="index")
    replay = _Replay(target, rec)
    deadline = time.monotonic() + args["timeout_s"]
    server.start_thread(replay.run)
    while not replay.done.acquire(True, 0.1):
        if ctx.cancelled or time.monotonic() >= deadline:
            return None
    return replay.record


@command("tt")
def tt(args, ctx):
    if args["time_tunnel"]:
        return _record(ctx, args)
    if args["list_records"]:
        answer = _list(args)
        answer["action"] = "list"
        return answer
    if args["delete_all"]:
        return {"action": "delete_all", "deleted": TABLE.clear(), "table_size": 0, "kept": KEPT}
    if args["delete"] is not None:
        TABLE.delete(args["delete"])
        return {"action": "delete", "index": args["delete"], "table_size": len(TABLE.records), "kept": KEPT}
    rec = TABLE.get(args["index"])
    budget = timebox.Budget()
    if not args["play"]:
        return {"action": "show", "record": _show(rec, args, budget), "table_size": len(TABLE.records),
                "kept": KEPT}
    new = _replay(ctx, rec, args)
    if new is None:
        return {"action": "replay", "record": None, "replay_of": rec["index"], "running": True,
                "timeout_s": args["timeout_s"], "table_size": len(TABLE.records), "kept": KEPT}
    return {"action": "replay", "record": _show(new, args, budget), "replay_of": rec["index"], "running": False,
            "timeout_s": args["timeout_s"], "table_size": len(TABLE.records), "kept": KEPT}

