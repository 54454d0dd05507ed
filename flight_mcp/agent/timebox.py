"""Calls into the target's own code (a user __repr__ or __str__), each on an agent thread of its
own with a time budget, so a call that blocks or runs long costs the answer at most its budget.

The calling thread waits for the call up to the budget and then gives up on it; the thread that
runs it cannot be stopped and stays until the call returns (a __repr__ waiting for a lock may never
return). So at most MAX_STUCK such threads may be left behind in the whole process: while that many
are still blocked, no further call is started (the value says so) until one of them returns.
Every answer also has a total budget, so a listing of 300 slow values still comes in seconds.
"""
import _thread
import time

from . import objstate, server

PER_CALL_S = 0.2        # one value's budget
PER_ANSWER_S = 2.0      # all calls of one answer together
MAX_STUCK = 4           # threads still running a call their caller gave up on (process-wide)

_lock = _thread.allocate_lock()
_stuck = [0]


def stuck():
    return _stuck[0]


class Budget(object):
    """The time budget of one answer. call(fn, value, label) -> (text, error): text is fn(value)
    when it returned a str in time; else None and error, e.g. `<repr of Account: timed out after
    200 ms>`."""

    def __init__(self, per_call_s=PER_CALL_S, total_s=PER_ANSWER_S, what="repr"):
        self.per_call_s = per_call_s
        self.left_s = total_s
        self.what = what

    def call(self, fn, value, label):
        if self.left_s <= 0:
            return None, "<%s of %s: not run, this answer's %s s for calls into the target are spent>" % (
                self.what, label, _num(PER_ANSWER_S))
        wait = min(self.per_call_s, self.left_s)
        started = time.monotonic()
        try:
            kind, got = _run(fn, value, wait)
        finally:
            self.left_s -= time.monotonic() - started
        if kind == "ok":
            if type(got) is str:
                return got, None
            return None, "<%s of %s failed: returned %s, not str>" % (self.what, label, type(got).__name__)
        if kind == "raised":
            if issubclass(type(got), RecursionError):
                return None, "<%s failed: RecursionError (a __%s__ that recurses)>" % (self.what, self.what)
            return None, "<%s failed: %s: %s>" % (self.what, type(got).__name__, _message(got))
        if kind == "busy":
            return None, ("<%s of %s: not run, %d earlier calls into the target are still blocked>"
                          % (self.what, label, got))
        if kind == "no_thread":
            return None, "<%s of %s: not run, no thread could be started: %s>" % (self.what, label, got)
        return None, "<%s of %s: timed out after %d ms>" % (self.what, label, round(wait * 1000))


def _num(x):
    return ("%g" % x)


def _message(exc):
    """The first line of an exception raised by the target's code: its message only when that is
    plain data (str() of anything else would run more of the target's code here)."""
    args = objstate.exception_args(exc) if issubclass(type(exc), BaseException) else ()
    if type(args) is tuple and len(args) == 1 and type(args[0]) is str:
        return (args[0].splitlines() or [""])[0][:200]
    if type(args) is tuple and not args:
        return ""
    return "(message not shown: it is not plain text)"


def _run(fn, value, wait):
    """("ok", result) | ("raised", exc) | ("timeout", None) | ("busy", n) | ("no_thread", why)."""
    with _lock:
        if _stuck[0] >= MAX_STUCK:
            return "busy", _stuck[0]
    done = _thread.allocate_lock()
    done.acquire()
    box = {"state": "running"}

    def run():
        try:
            box["result"] = ("ok", fn(value))
        except BaseException as e:
            box["result"] = ("raised", e)
        with _lock:
            if box["state"] == "abandoned":
                _stuck[0] -= 1
            box["state"] = "finished"
        done.release()

    try:
        server.start_thread(run)
    except Exception as e:  # RuntimeError: can't start new thread (a process at its limit)
        return "no_thread", "%s: %s" % (type(e).__name__, e)
    if not done.acquire(True, wait):
        with _lock:
            if box["state"] == "running":
                box["state"] = "abandoned"
                _stuck[0] += 1
                return "timeout", None
        done.acquire()  # it finished between the wait and the lock: take its result
    return box["result"]
