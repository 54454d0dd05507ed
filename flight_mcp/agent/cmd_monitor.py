"""monitor: per interval (cycle), how often one function is called, how often it raises, and how long
it takes (mean, p50, p95, max), optionally split by the value of an expression (--by).

Built on watch's machinery: the same instrumentation (instrument.add), the same filter gate
(capture.Expression, judged when the call starts unless it reads return_obj/cost) and the same
counters of calls seen and matched (capture.Capture). The probe only counts: on the calling thread
each call costs a clock read at each end, the filter and the --by expression when given, a log-scale
bucket index and a few additions under a lock. No record of a call is kept.

Memory is bounded whatever -n says: a cycle keeps, per distinct --by value, five numbers and a
sparse histogram of at most HISTOGRAM_BUCKETS buckets; at most TRACKED_KEYS distinct values per
cycle (and in the total), later new values count together as "other". Only the latest KEPT_CYCLES
finished cycles are kept for the answer (each one was sent as an event when it finished); the total
covers every cycle.

A --by value is used as a dict key on the application's thread only when hashing and comparing it
runs C code alone (exact str, int, float, bool, None, bytes); anything else is keyed by its safe
one-line text (objview.short_repr, which runs no target code). A call is counted in the cycle in
which it ends. The answer is facts (tools/monitor.py renders them).
"""
import _thread
import math
import time

from . import capture, instrument, objview, timebox
from .registry import command

_perf = time.perf_counter
_log2 = math.log2
_floor = math.floor

BUCKETS_PER_OCTAVE = 16   # bucket width 2**(1/16): a percentile is within about 2.2% of a real cost
MIN_MS = 1e-4             # costs below (100 ns) share the lowest bucket
MIN_BUCKET = _floor(_log2(MIN_MS) * BUCKETS_PER_OCTAVE)
# 100 ns .. 1e7 ms (about 3 hours) in 1/16 octaves: the most buckets one histogram can hold
HISTOGRAM_BUCKETS = _floor(_log2(1e7) * BUCKETS_PER_OCTAVE) - MIN_BUCKET + 1
TRACKED_KEYS = 100        # distinct --by values told apart per cycle (and in the total)
SHOWN_KEYS = 20           # of them, the ones with the most calls are answered; the rest as other
KEPT_CYCLES = 100         # finished cycles kept for the answer (the latest)
KEY_TEXT = 120            # characters of a --by value kept (str/bytes cut, others' text)

OTHER = object()    # key of the values beyond TRACKED_KEYS
FAILED = object()   # key of the calls whose --by expression raised
_LABEL = object()   # (_LABEL, text): a value that is not plain data, keyed by its text


def bucket(cost_ms):
    """The histogram bucket of a cost: floor(log2(cost) * BUCKETS_PER_OCTAVE), bounded below."""
    if cost_ms < MIN_MS:
        return MIN_BUCKET
    return _floor(_log2(cost_ms) * BUCKETS_PER_OCTAVE)


def bucket_value(i):
    """The geometric middle of bucket i, in ms."""
    return 2.0 ** ((i + 0.5) / BUCKETS_PER_OCTAVE)


def percentile(hist, count, q, lowest, highest):
    """The q-quantile (0 < q <= 1) of `count` costs counted in hist ({bucket: calls}): the middle of
    the bucket holding the ceil(q*count)-th smallest, kept within the costs seen [lowest, highest]."""
    need = max(1, int(math.ceil(q * count - 1e-9)))
    acc = 0
    for i in sorted(hist):
        acc += hist[i]
        if acc >= need:
            return min(max(bucket_value(i), lowest), highest)
    return highest


def new_stats():
    """[calls, failures, sum ms, max ms, min ms, histogram]."""
    return [0, 0, 0.0, 0.0, float("inf"), {}]


def merge(into, s):
    into[0] += s[0]
    into[1] += s[1]
    into[2] += s[2]
    if s[3] > into[3]:
        into[3] = s[3]
    if s[4] < into[4]:
        into[4] = s[4]
    h = into[5]
    for i, n in s[5].items():
        h[i] = h.get(i, 0) + n


def stats_facts(s):
    """The facts of one row (tools/monitor.py Stats)."""
    calls, fails = s[0], s[1]
    if not calls:
        return {"calls": 0, "successes": 0, "failures": 0, "avg_ms": None, "p50_ms": None, "p95_ms": None,
                "max_ms": None}
    lo, hi = s[4], s[3]
    return {"calls": calls, "successes": calls - fails, "failures": fails,
            "avg_ms": round(s[2] / calls, 6), "p50_ms": round(percentile(s[5], calls, 0.5, lo, hi), 6),
            "p95_ms": round(percentile(s[5], calls, 0.95, lo, hi), 6), "max_ms": round(hi, 6)}


def key_of(value):
    """A --by value as a dict key whose hashing and comparison run no target code (see the module doc)."""
    t = type(value)
    if t is str or t is bytes:
        return value if len(value) <= KEY_TEXT else value[:KEY_TEXT]
    if t is int or t is float or t is bool or value is None:
        return value
    return (_LABEL, objview.short_repr(value, KEY_TEXT))


def key_text(key):
    """How a key is shown: the value's repr (plain data: C code), or its safe text."""
    if type(key) is tuple and key[0] is _LABEL:
        return key[1]
    return objview.short_repr(key, KEY_TEXT + 10)


def add_to(table, key, s):
    """Merges stats s of key into table (key -> stats), keeping at most TRACKED_KEYS keys."""
    into = table.get(key)
    if into is None:
        if key is not FAILED and key is not OTHER and \
                len(table) - (OTHER in table) - (FAILED in table) >= TRACKED_KEYS:
            key = OTHER
            into = table.get(OTHER)
        if into is None:
            into = table[key] = new_stats()
    merge(into, s)


def table_facts(table, by):
    """{stats, keys, other_keys, keys_overflow} of a table (key -> stats): the whole function, and
    with --by the SHOWN_KEYS values with the most calls, the rest folded as `other`."""
    whole = new_stats()
    for s in table.values():
        merge(whole, s)
    out = {"stats": stats_facts(whole), "keys": [], "other_keys": 0, "keys_overflow": OTHER in table}
    if not by:
        return out
    values = [(k, s) for k, s in table.items() if k is not OTHER and k is not FAILED]
    values.sort(key=lambda ks: -ks[1][0])
    other = None
    if OTHER in table or len(values) > SHOWN_KEYS:
        other = new_stats()
        if OTHER in table:
            merge(other, table[OTHER])
        for k, s in values[SHOWN_KEYS:]:
            merge(other, s)
        out["other_keys"] = len(values) - SHOWN_KEYS if len(values) > SHOWN_KEYS else 0
    for k, s in values[:SHOWN_KEYS]:
        row = stats_facts(s)
        row.update(kind="value", key=key_text(k))
        out["keys"].append(row)
    if other is not None:
        row = stats_facts(other)
        row.update(kind="other", key=None)
        out["keys"].append(row)
    if FAILED in table:
        row = stats_facts(table[FAILED])
        row.update(kind="failed", key=None)
        out["keys"].append(row)
    return out


class MonitorProbe(object):
    """Counts the calls of one function into the current cycle's table (key -> stats)."""

    def __init__(self, target, cap, flt, by):
        self.target = target
        self.cap = cap
        self.filter = flt
        self.by = by
        self.early = flt.code is not None and not flt.late
        self.needs_args = by.code is not None or flt.code is not None
        self.lock = _thread.allocate_lock()
        self.single = new_stats()   # without arguments to read, every call counts in this one row
        self.current = {} if self.needs_args else {None: self.single}
        self.enter = self._make_enter()
        self.leave = self._make_leave()

    def rotate(self):
        """On the command's thread: the finished cycle's table; calls ending from now count in a new one."""
        fresh = new_stats()
        with self.lock:
            done = self.current
            self.single = fresh
            self.current = {} if self.needs_args else {None: fresh}
        return done

    def _make_enter(self):
        cap, perf = self.cap, _perf
        seen = cap.note_seen
        if not self.needs_args:
            def enter(args, kwargs, frame):
                if cap.done:
                    return None
                seen()
                return perf()
            return enter
        if not self.early:
            def enter(args, kwargs, frame):
                if cap.done:
                    return None
                seen()
                return (perf(), args, kwargs)
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
            return (perf(), args, kwargs)
        return enter

    def _make_leave(self):
        cap, perf, probe, ctx = self.cap, _perf, self, self.cap.ctx
        # acquire/release, not `with lock` (its __exit__ call costs about as much as the rest of leave)
        acquire, release = self.lock.acquire, self.lock.release
        log2, floor, lowest, per_octave = _log2, _floor, MIN_MS, BUCKETS_PER_OCTAVE
        late = self.filter.code is not None and not self.early
        check = self.filter.caller(self.target) if late else None
        flt_failed = self.filter.failed
        show = self.by.caller(self.target) if self.by.code is not None else None
        by_failed = self.by.failed
        limit = TRACKED_KEYS

        if not self.needs_args:   # no --by, no filter: one row, updated in place (the hot case, inlined)
            def leave(token, result, exc):
                cost = (perf() - token) * 1000.0
                # ctx.cancelled too: in a forked child (atfork.py) the lock may be held by a thread
                # that did not survive the fork; its commands are cancelled there
                if cap.done or ctx.cancelled:
                    return
                i = floor(log2(cost) * per_octave) if cost >= lowest else MIN_BUCKET
                failed = exc is not None and not issubclass(type(exc), GeneratorExit)
                acquire()
                try:
                    s = probe.single
                    s[0] += 1
                    if failed:
                        s[1] += 1
                    s[2] += cost
                    if cost > s[3]:
                        s[3] = cost
                    if cost < s[4]:
                        s[4] = cost
                    h = s[5]
                    h[i] = h.get(i, 0) + 1
                finally:
                    release()
            return leave

        def leave(token, result, exc):
            cost = (perf() - token[0]) * 1000.0
            if cap.done or ctx.cancelled:
                return
            failed = exc is not None and not issubclass(type(exc), GeneratorExit)
            args, kwargs = token[1], token[2]
            if late:
                try:
                    if not check(args, kwargs, result, cost):
                        return
                except BaseException as e:
                    flt_failed(e)
                    return
            if show is None:
                key = None
            else:
                try:
                    key = key_of(show(args, kwargs, result, cost))
                except BaseException as e:
                    by_failed(e)
                    key = FAILED
            i = floor(log2(cost) * per_octave) if cost >= lowest else MIN_BUCKET
            acquire()
            try:
                table = probe.current
                s = table.get(key)
                if s is None:
                    if len(table) >= limit and key is not FAILED:
                        key = OTHER
                        s = table.get(OTHER)
                    if s is None:
                        s = table[key] = [0, 0, 0.0, 0.0, float("inf"), {}]
                s[0] += 1
                if failed:
                    s[1] += 1
                s[2] += cost
                if cost > s[3]:
                    s[3] = cost
                if cost < s[4]:
                    s[4] = cost
                h = s[5]
                h[i] = h.get(i, 0) + 1
            finally:
                release()
        return leave


@command("monitor")
def monitor(args, ctx):
    allow = args["allow_mutating"]
    flt = capture.Expression(args["filter_expr"], "filter_expr", allow)
    by = capture.Expression(args["by"], "by", allow)
    target = instrument.resolve(args["module"], args["cls"], args["method"], args["nested_method"])
    cycles, cycle_s = args["limit"], args["cycle_s"]
    cap = capture.Capture(ctx, cycles)
    probe = MonitorProbe(target, cap, flt, by)
    unhook = instrument.add(target, probe)

    state = {"dropped": 0, "removed": None}

    def remove():
        cap.done = True
        unhook()
        if state["removed"] is None:
            state["removed"] = time.monotonic()   # duration_s: how long the function was instrumented
    ctx.on_end(remove)   # however the command ends (cancel, closed connection, agent bug)

    total = {}
    kept = []
    started = time.time()
    t0 = time.monotonic()
    deadline = t0 + args["timeout_s"]
    cycle_start, cycle_start_wall = t0, started
    finished = 0
    reason = None
    gaps = capture.GilGaps(ctx)

    def close_cycle(partial):
        table = probe.rotate()
        now_wall = time.time()
        facts = table_facts(table, by.code is not None)
        facts.update(index=finished + 1, start=cycle_start_wall, end=now_wall,
                     duration_s=round(time.monotonic() - cycle_start, 3), partial=partial)
        for key, s in table.items():
            add_to(total, key, s)
        return facts, now_wall

    def keep(facts):
        kept.append(facts)
        if len(kept) > KEPT_CYCLES:
            del kept[0]
            state["dropped"] += 1

    while reason is None:
        now = time.monotonic()
        if ctx.cancelled:
            reason = "cancel"
        elif now >= cycle_start + cycle_s:
            if finished + 1 >= cycles:
                remove()   # the last cycle ends here: no call is counted after it
            facts, wall = close_cycle(False)
            finished += 1
            keep(facts)
            ctx.emit({"cycle": facts, "limit": cycles})
            # the next cycle starts now: a command thread kept waiting (a busy GIL) makes no short cycle
            cycle_start, cycle_start_wall = time.monotonic(), wall
            if finished >= cycles:
                reason = "limit"
        elif now >= deadline:
            reason = "deadline"
        else:   # short sleeps, as a capture's: a GIL held for a while is seen (and said) as it ends
            gaps.sleep(min(cycle_start + cycle_s, deadline, now + capture.PROGRESS_EVERY_S) - now)
            gaps.beat()
    gaps.check()
    remove()
    if reason != "limit":   # the cycle the deadline or a cancel cut short
        facts, _ = close_cycle(True)
        if facts["stats"]["calls"] or facts["duration_s"] >= 0.05:
            keep(facts)
    budget = timebox.Budget()
    summary = target.describe()
    whole = table_facts(total, by.code is not None)
    # matched: the calls counted in the cycles (a call ending as the command ends is in neither)
    summary.update(started=started, duration_s=round(state["removed"] - t0, 3), seen=cap.seen,
                   matched=whole["stats"]["calls"], captured=finished, limit=cycles, stopped=reason,
                   cycle_s=cycle_s, by=args["by"], cycles=kept, cycles_dropped=state["dropped"], total=whole,
                   gil_gaps=gaps.gaps, gil_gaps_not_kept=gaps.not_kept,
                   expression_failures=[e for e in (flt.report(budget), by.report(budget)) if e])
    return summary
