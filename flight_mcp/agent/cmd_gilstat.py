"""gilstat: per thread, the share of an interval spent holding the GIL and waiting for it, and the
long holds and waits, each hold with the stack that held it.

The sampler is a native thread of the C extension _flight_mcp_gilstat (gilstat.c): it reads the
GIL's state and each thread's current system call, never taking the GIL, so it neither pauses nor
slows the application's Python code. This command's thread starts it, serves its requests for a
long hold's stack (read as soon as this thread gets the GIL, which is when the holder let it go),
and stops it however the command ends (interval over, deadline, cancel, `gilstat off`, an error).
Nothing keeps running after the answer; the sampler's memory is freed by then.

Facts only: thread rows and events as the host's GilstatResult fields.
"""
import _thread
import os
import sys
import time

from . import native, srclines
from .codes import arg
from .cmd_stack import _frames, _thread_table
from .registry import AgentError, command
from .server import AGENT_THREADS, ENDED_TIDS

EXTENSION = "_flight_mcp_gilstat"
MAX_EVENTS = 1000      # events the sampler keeps (then only counts)
EVENTS_SENT = 40       # the longest, in the answer
MAX_STACKS = 20        # long holds whose stack is read
TRACKED_THREADS = 4096  # threads the sampler follows (its tables: ~0.5 MB while it runs)
REPLY_MARGIN_S = 0.5   # the answer must reach the host before its deadline
POLL_S = 0.1


def _extension():
    mod, why = native.extension(EXTENSION)
    if mod is None:
        raise AgentError("gilstat_unavailable", why)
    why = mod.check(sys.version_info[1], int(round(sys.getswitchinterval() * 1e6)))
    if why is not None:
        raise AgentError("gilstat_unavailable", why)
    return mod


def _comm(tid):
    try:
        with open("/proc/self/task/%d/comm" % tid, "rb") as f:
            return f.read(64).decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def _tids():
    """ident -> OS thread id of every live Python thread (the GIL held: none can end meanwhile). The
    ident is the thread's pthread_t; its CPU clock id encodes the OS id as ~tid << 3 | 6 (glibc and
    musl), which 3.8-3.10's thread states do not record."""
    out = {}
    get = getattr(time, "pthread_getcpuclockid", None)
    for ident in sys._current_frames():
        try:
            clock = get(ident)
        except (TypeError, OSError, OverflowError):
            continue
        if clock & 7 == 6:
            out[ident] = ~(clock >> 3) & 0xFFFFFFFF
    return out


def _agent_tids(tids):
    """The OS thread ids of the agent's live threads, from _tids()."""
    return [tid for ident, tid in tids.items() if ident in AGENT_THREADS]


def _discard(mod, gen):
    mod.stop(gen)  # this command's measurement only: another may have started since
    try:
        mod.result(gen)  # frees the sampler's tables when no one took them
    except RuntimeError:
        pass


@command("gilstat")
def gilstat(args, ctx):
    action = args["action"]
    if action == "off":
        mod, why = native.extension(EXTENSION)
        return {"action": "off", "stopped_running": bool(mod is not None and mod.stop())}
    mod = _extension()
    interval = float(args["interval"])
    budget = float(args["timeout_s"]) - REPLY_MARGIN_S
    duration = min(interval, budget)
    if duration <= 0:
        raise AgentError("bad_argument", "no time is left to measure before the deadline; give %s more "
                         "than %s" % (arg("timeout_s"), arg("interval")), arg="timeout_s")
    period_ns = int(1e9 / args["rate"])
    hold_ns = int(args["hold_threshold_ms"] * 1e6)
    take_ns = int(args["take_threshold_ms"] * 1e6)
    tids = _tids()
    ours = _agent_tids(tids)
    ours.append(_thread.get_native_id())
    wall0, mono0 = time.time(), time.monotonic()
    try:
        gen = mod.start(int(duration * 1e9), period_ns, hold_ns, take_ns, TRACKED_THREADS, MAX_EVENTS, MAX_STACKS,
                  ours)
    except RuntimeError:
        raise AgentError("gilstat_busy", "another gilstat is measuring this process")
    ctx.on_end(lambda: _discard(mod, gen))
    states = {}   # thread state address -> (ident, native id or None), kept for threads that end
    stacks = {}   # event index -> (frames, monotonic time read)
    lines = srclines.Lines()   # their source lines, each file read once per measurement
    while True:
        if ctx.cancelled:
            mod.stop(gen)
        got = mod.wait(POLL_S)
        for addr, ident, nid in mod.threads():
            states[addr] = (ident, nid if nid >= 0 else None)
        if got == "done":
            break
        if type(got) is tuple:
            event, addr = got
            ident = states.get(addr, (None, None))[0]
            frame = sys._current_frames().get(ident) if ident is not None and ident not in AGENT_THREADS else None
            if frame is not None:
                stacks[event] = (_frames(frame, lines), time.monotonic())
            frame = None
    mod.stop(gen)
    raw = mod.result(gen)
    tids.update(_tids())
    ours.extend(ENDED_TIDS)   # agent threads that waited for the GIL and ended meanwhile
    ours.extend(_agent_tids(tids))   # and those started meanwhile
    return _answer(args, raw, states, stacks, tids, set(ours), wall0, mono0, interval, duration, ctx.cancelled)


def _answer(args, raw, states, stacks, tids, ours, wall0, mono0, interval, duration, cancelled):
    table = _thread_table()  # ident -> (name, daemon, native_id, is_main)
    ident_of_tid = {}
    for ident, nid in states.values():
        if nid is not None:
            ident_of_tid[nid] = ident
    for ident, (name, daemon, nid, is_main) in table.items():
        if nid is not None:
            ident_of_tid.setdefault(nid, ident)
    for ident, nid in tids.items():
        ident_of_tid.setdefault(nid, ident)
    native_of_ident = dict((ident, nid) for nid, ident in ident_of_tid.items())
    samples = max(raw["samples"], 1)
    scans = max(raw["wait_scans"], 1)  # waits are read every sample, or less often with many threads
    rows = {}

    def row(ident, tid):
        key = ident if ident is not None else ("tid", tid)
        r = rows.get(key)
        if r is None:
            name, daemon, _, is_main = table.get(ident, (None, None, None, False))
            nid = tid if tid is not None else native_of_ident.get(ident)
            if name is None and nid is not None:
                name = _comm(nid)
            r = rows[key] = {"ident": ident, "native_id": nid, "name": name, "daemon": daemon, "main": is_main,
                             "hold_share": 0.0, "wait_share": 0.0, "long_holds": 0, "long_waits": 0,
                             "max_hold_ms": 0.0, "max_wait_ms": 0.0}
        return r

    agent_samples = 0
    for addr, n, runs, max_ns in raw["holders"]:
        ident = states.get(addr, (None, None))[0]
        if ident in AGENT_THREADS:
            agent_samples += n
            continue
        r = row(ident, None)
        if ident is None:
            r["ended"] = True
        r["hold_share"] += n / float(samples)
        r["long_holds"] += runs
        r["max_hold_ms"] = max(r["max_hold_ms"], max_ns / 1e6)
    for tid, n, runs, max_ns in raw["waiters"]:
        ident = ident_of_tid.get(tid)
        if ident in AGENT_THREADS or tid in ours:
            continue
        if ident is None and n == 0:
            continue  # a thread we cannot name that never waited: not one of the application's Python threads
        r = row(ident, tid)
        r["wait_share"] += n / float(scans)
        r["long_waits"] += runs
        r["max_wait_ms"] = max(r["max_wait_ms"], max_ns / 1e6)
    for ident in table:
        if ident not in AGENT_THREADS:
            row(ident, None)
    threads = sorted(rows.values(), key=lambda r: (-(r["hold_share"] + r["wait_share"]), r["name"] or ""))
    kept = threads[:args["max_threads"]]

    events = []
    for index, (kind, key, start_ns, dur_ns, ongoing) in enumerate(raw["events"]):
        if kind == 0:
            ident = states.get(key, (None, None))[0]
            nid = native_of_ident.get(ident)
        else:
            nid = key
            ident = ident_of_tid.get(nid)
        if ident in AGENT_THREADS or (kind == 1 and nid in ours):
            continue
        name = table.get(ident, (None,))[0] or (_comm(nid) if nid is not None else None)
        start = start_ns / 1e9
        e = {"kind": "hold" if kind == 0 else "wait", "ident": ident, "native_id": nid, "name": name,
             "start": wall0 + (start - mono0), "duration_ms": dur_ns / 1e6, "ongoing": bool(ongoing)}
        if index in stacks:
            frames, read_at = stacks[index]
            e["frames"] = frames
            e["stack_after_ms"] = max(0.0, (read_at - start) * 1e3)
        events.append(e)
    events.sort(key=lambda e: (e["kind"] != "hold", -e["duration_ms"]))  # holds first: they are the cause
    measured = (raw["ended_ns"] - raw["started_ns"]) / 1e9
    if raw["stopped"]:
        stopped_by = "cancel" if cancelled else "off"
    elif duration < interval:
        stopped_by = "deadline"
    else:
        stopped_by = "interval"
    return {
        "action": "on", "mechanism": "gil_state_sampler", "pid": os.getpid(),
        "start": wall0 + (raw["started_ns"] / 1e9 - mono0), "duration_s": measured,
        "interval": interval, "stopped_by": stopped_by,
        "samples": raw["samples"], "resolution_ms": measured * 1e3 / samples,
        "wait_resolution_ms": measured * 1e3 / scans,
        "rate": args["rate"], "held_share": raw["locked_samples"] / float(samples),
        "agent_hold_share": agent_samples / float(samples), "switches": raw["switches"],
        "waits_measured": bool(raw["proc_ok"]),
        "hold_threshold_ms": args["hold_threshold_ms"], "take_threshold_ms": args["take_threshold_ms"],
        "threads": kept, "threads_elided": len(threads) - len(kept), "untracked_samples": raw["untracked"],
        "events": events[:EVENTS_SENT], "events_elided": max(0, len(events) - EVENTS_SENT),
        "long_holds": sum(r["long_holds"] for r in threads), "long_waits": sum(r["long_waits"] for r in threads),
    }
