"""profile: where a live process spends its CPU over a few seconds, sampled from outside.

flight_profiler's `perf [-r RATE] [-d SECONDS] [-f FILE]`. py-spy samples the process without
pausing it and without loading anything into it (flight_mcp/profiling.py runs it and reads what
it wrote); this module turns the samples into the answer: the functions that take the CPU (self
and total share), per thread, which threads idle and which hold the GIL, and, when asked, a
flame graph file and the collapsed stacks.
"""
from __future__ import annotations

import os
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from .. import profiling
from ..agent import codes
from ..attach import procs
from ..errors import FlightError
from ..models import Fact
from ..render import paint
from .base import Call, Cli, Params, Tool
from .fields import Limit

# What an answer keeps, whatever the limit asks: functions overall, per thread, threads, idle places.
MOST_FUNCTIONS = 200
MOST_THREAD_FUNCTIONS = 10
MOST_THREADS = 64
MOST_IDLE_PLACES = 3
# The collapsed stacks in an answer: the most frequent first, at most this many lines and characters.
COLLAPSED_LINES = 400
COLLAPSED_CHARS = 60_000
# After the duration, what the call may take by default (py-spy's start, writing, reading).
SLACK_S = 10.0


class ProfileParams(Params):
    host_only: ClassVar[frozenset[str]] = Params.host_only | {
        "rate", "duration", "filepath", "collapsed", "idle", "limit"}

    rate: Annotated[int, Cli("-r", "--rate")] = Field(100, ge=1, le=1000, description="Samples per second.")
    duration: Annotated[int, Cli("-d", "--duration")] = Field(
        5, ge=1, le=3600, description="Seconds to sample (CLI: Ctrl-C stops early and reports what was sampled).")
    filepath: Annotated[str | None, Cli("-f", "--filepath")] = Field(
        None, description="Write a flame graph (SVG) of the samples to this file, on the machine running flight-mcp, "
                          "as its user. Over MCP only when the server runs with --allow-mutating.")
    collapsed: Annotated[bool, Cli("-c", "--collapsed")] = Field(
        False, description="Also return the collapsed stacks ('thread;frame;frame count' lines, the most frequent "
                           "first, bounded), the input of any flame graph tool.")
    idle: Annotated[bool, Cli("-i", "--idle")] = Field(
        False, description="Include idle samples (threads waiting or sleeping) in the flame graph and the collapsed "
                           "stacks. The tables always count idle samples apart.")
    limit: Limit = 10
    timeout_s: float | None = Field(
        None, gt=0, le=7200, description="Deadline in seconds for the whole call; when left out, the duration "
                                         "plus 10 s. A shorter one stops sampling there and reports what was "
                                         "sampled.")


class FunctionShare(Fact):
    name: str = Field(description="Function name (Class.method on Python 3.11+, as py-spy reads it).")
    file: str = Field(description="Source file, shortened to its package part.")
    line: int | None = Field(None, description="Its line seen in the most samples.")
    self_samples: int = Field(description="Samples with this function running (on top of the stack).")
    total_samples: int = Field(description="Samples with this function anywhere in the stack.")
    self_share: float = Field(description="self_samples / the scope's samples (0..1).")
    total_share: float = Field(description="total_samples / the scope's samples (0..1).")


class IdlePlace(Fact):
    name: str
    file: str
    line: int | None = None
    samples: int = Field(description="Idle samples with this function on top of the stack (estimated).")


class ThreadProfile(Fact):
    name: str | None = Field(None, description="The thread's name as py-spy reads it (threading's name).")
    native_id: int | None = Field(None, description="OS thread id (threading.get_native_id()), when known.")
    main: bool = False
    samples: int = Field(description="Samples of this thread, idle ones included (from the --idle sampler).")
    active_samples: int = Field(description="Samples where it was running (from the active sampler).")
    idle_samples: int = Field(description="samples - active_samples: waiting or sleeping (estimated).")
    gil_samples: int = Field(description="Samples where it held the GIL (from the --gil sampler).")
    cpu_seconds: float | None = Field(None, description="CPU time it used while sampled (the kernel's accounting).")
    functions: list[FunctionShare] = Field(description="Its top functions by self share of its active samples.")
    idle_in: list[IdlePlace] = Field(default_factory=list, description="Where it waited, most idle first.")


class ProfileResult(Fact):
    pid: int
    rate: int = Field(description="Samples per second asked of each sampler.")
    duration: int = Field(description="Seconds asked.")
    seconds: float = Field(description="Wall time the sampling took, py-spy's start included.")
    stopped: Literal["cancelled", "deadline"] | None = Field(
        None, description="Why sampling ended before the duration, when it did.")
    intervals: int = Field(description="Sampling instants (the main thread's samples in the --idle sampler).")
    samples: int = Field(description="Thread samples, idle ones included: about intervals x threads.")
    active_samples: int = Field(description="Thread samples where a thread was running: the CPU profile.")
    idle_samples: int = Field(description="Thread samples where a thread waited or slept (estimated).")
    gil_samples: int = Field(description="Sampling instants where some thread held the GIL.")
    functions: list[FunctionShare] = Field(description="Top functions over every thread's active samples.")
    functions_seen: int = Field(description="Distinct functions in the active samples.")
    gil_functions: list[FunctionShare] = Field(
        description="Top functions while holding the GIL (shares of gil_samples): who keeps other threads waiting.")
    threads: list[ThreadProfile] = Field(description="Main thread first, then the most active.")
    threads_left_out: int = 0
    flamegraph_file: str | None = Field(None, description="Where the flame graph SVG was written.")
    flamegraph_samples: int | None = None
    collapsed: list[str] | None = Field(None, description="Collapsed stacks 'frames count', most frequent first.")
    collapsed_left_out: int = Field(0, description="Collapsed stack lines left out of `collapsed` (bounded).")
    notes: list[str] = Field(default_factory=list)


def run(p: ProfileParams, call: Call) -> ProfileResult:
    path = None
    if p.filepath:
        call.require_host_write(f"profile with {codes.arg('filepath')}")
        path = os.path.abspath(os.path.expanduser(p.filepath))
        _check_writable(path)
    procs.require_python(p.pid)  # no such process, not Python, too old: said before sampling
    stopped_before = procs.stopped_error(p.pid)
    version = procs.python_version(p.pid)
    timeout = p.timeout_s if p.timeout_s is not None else p.duration + SLACK_S
    rec = profiling.record(p.pid, rate=p.rate, duration=p.duration, deadline_s=timeout,
                           cancelled=call.cancel_event.is_set,
                           progress=lambda done, msg: call.progress(done, p.duration, msg),
                           # py-spy --nonblocking knows no thread's OS state before 3.11: sample it ourselves
                           sample_states=version is not None and version < (3, 11))
    result, running = summarize(p, rec)
    if stopped_before is not None:
        result.notes.insert(0, f"{stopped_before.message.split(':')[0]}: every sample of it is idle.")
    if path:
        stacks = rec.runs["all"].stacks if p.idle else running
        what = "every thread sample, idle ones included" if p.idle else "active samples"
        svg = profiling.flamegraph_svg(stacks, f"pid {p.pid}: {profiling.samples(stacks)} {what}, {p.rate} Hz "
                                               f"over {rec.seconds:.1f} s (flight-mcp profile, py-spy)")
        try:
            with open(path, "w") as f:
                f.write(svg)
        except OSError as e:
            raise FlightError("write_failed", f"could not write the flame graph to {path} "
                              f"({codes.arg('filepath')}): {e.strerror}.", arg="filepath")
        result.flamegraph_file, result.flamegraph_samples = path, profiling.samples(stacks)
    return result


def _check_writable(path: str) -> None:
    """Said before sampling for seconds, not after."""
    folder = os.path.dirname(path) or "."
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK) or (
            os.path.exists(path) and not os.access(path, os.W_OK)):
        why = "is a directory" if os.path.isdir(path) else (
            "its directory does not exist" if not os.path.isdir(folder) else "it is not writable by flight-mcp")
        raise FlightError("write_failed", f"cannot write the flame graph to {path} ({codes.arg('filepath')}): "
                          f"{why}.", arg="filepath")


def _shares(counts: list[profiling.FunctionCount], scope: int, most: int) -> list[FunctionShare]:
    return [FunctionShare(name=c.name, file=c.file, line=c.line, self_samples=c.self_samples,
                          total_samples=c.total_samples, self_share=round(c.self_samples / scope, 4) if scope else 0.0,
                          total_share=round(c.total_samples / scope, 4) if scope else 0.0)
            for c in counts[:most]]


def _idle_places(idle: list[profiling.Stack], active: list[profiling.Stack], floor: int) -> list[IdlePlace]:
    """Where a thread waited: per function on top of the stack, the --idle sampler's samples beyond the
    active sampler's (counted per function, not per line, so the two samplers' noise mostly cancels)."""
    all_c = {(c.name, c.file): c for c in profiling.functions(idle)}
    act = {(c.name, c.file): c.self_samples for c in profiling.functions(active)}
    places = [IdlePlace(name=c.name, file=c.file, line=c.line, samples=c.self_samples - act.get(k, 0))
              for k, c in all_c.items() if c.self_samples - act.get(k, 0) > floor]
    places.sort(key=lambda x: -x.samples)
    return places[:MOST_IDLE_PLACES]


def summarize(p: ProfileParams, rec: profiling.Recording) -> tuple[ProfileResult, list[profiling.Stack]]:
    """The answer from the three samplers' stacks (see profiling.py for what each holds), and the
    running samples it counts (the flame graph's)."""
    active, every, gil = (rec.runs[k].stacks for k in ("active", "all", "gil"))
    a_by, e_by, g_by = profiling.by_thread(active), profiling.by_thread(every), profiling.by_thread(gil)
    named = {}
    for s in every + active + gil:
        if s.thread is not None:
            named.setdefault(profiling.thread_key(s.thread), s.thread)
    threads = []
    main_samples = 0
    running: list[profiling.Stack] = []  # every thread's running samples: the CPU profile
    for key, t in named.items():
        t_active, t_every, t_gil = a_by.get(key, []), e_by.get(key, []), g_by.get(key, [])
        n_all = max(profiling.samples(t_every), profiling.samples(t_active))
        cpu = rec.cpu.get(t.native_id) if t.native_id is not None else None
        share = rec.runnable.get(t.native_id) if t.native_id is not None else None
        if not rec.os_state and share is not None:
            # py-spy marked every sample running: how often the thread ran is our own state sampler's
            t_active = profiling.running_share(t_every or t_active, t_gil, round(share * n_all))
        running += t_active
        n_active = profiling.samples(t_active)
        main = t.native_id == p.pid
        if main:
            main_samples = n_all
        threads.append(ThreadProfile(
            name=t.name, native_id=t.native_id, main=main, samples=n_all, active_samples=n_active,
            idle_samples=n_all - n_active, gil_samples=profiling.samples(t_gil),
            cpu_seconds=round(cpu, 3) if cpu is not None else None,
            functions=_shares(profiling.functions(t_active), n_active, min(p.limit, MOST_THREAD_FUNCTIONS)),
            idle_in=_idle_places(t_every, t_active, max(2, n_all // 20))))
    active = running + [s for s in active if s.thread is None]
    threads.sort(key=lambda t: (not t.main, -t.active_samples, -t.samples, t.native_id or 0))
    n_active, n_gil = profiling.samples(active), profiling.samples(gil)
    intervals = main_samples or max((t.samples for t in threads), default=0)
    counts = profiling.functions(active)
    result = ProfileResult(
        pid=p.pid, rate=p.rate, duration=p.duration, seconds=round(rec.seconds, 2), stopped=rec.stopped,
        intervals=intervals, samples=sum(t.samples for t in threads), active_samples=n_active,
        idle_samples=sum(t.idle_samples for t in threads), gil_samples=n_gil,
        functions=_shares(counts, n_active, min(p.limit, MOST_FUNCTIONS)), functions_seen=len(counts),
        gil_functions=_shares(profiling.functions(gil), n_gil, min(p.limit, MOST_FUNCTIONS)),
        threads=threads[:MOST_THREADS], threads_left_out=max(0, len(threads) - MOST_THREADS))
    if p.collapsed:
        stacks = sorted(every if p.idle else active, key=lambda s: (-s.count, s.line))
        kept, size = [], 0
        for s in stacks:
            line = f"{s.line} {s.count}"
            if len(kept) >= COLLAPSED_LINES or size + len(line) > COLLAPSED_CHARS:
                break
            kept.append(line)
            size += len(line) + 1
        result.collapsed, result.collapsed_left_out = kept, len(stacks) - len(kept)
    result.notes.extend(_notes(p, rec, result))
    return result, active


def _notes(p: ProfileParams, rec: profiling.Recording, r: ProfileResult) -> list[str]:
    notes = []
    runs = rec.runs.values()
    if rec.stopped == "cancelled":
        notes.append(f"stopped early (cancelled) after {rec.seconds:.1f}s: the figures cover that time.")
    elif rec.stopped == "deadline":
        notes.append(f"stopped at the deadline after {rec.seconds:.1f}s: the figures cover that time.")
    if any(run.exited for run in runs):
        notes.append(f"pid {p.pid} exited during the profile: the figures cover its life until then.")
    if any(run.late for run in runs):
        notes.append(f"py-spy fell behind {p.rate} Hz (a loaded machine or many threads): fewer samples than asked; "
                     "a lower rate keeps up.")
    errors = sum(run.errors for run in runs)
    if errors:
        notes.append(f"{errors} sample(s) could not be read (threads starting or ending mid-read); left out.")
    if r.samples and not r.active_samples:
        notes.append("no thread ran during the profile: every sample is idle (see idle_in for where they waited).")
    if r.collapsed_left_out:
        notes.append(f"{r.collapsed_left_out} less frequent collapsed stack(s) left out of the answer; a flame graph "
                     f"file ({codes.arg('filepath')}) holds them all.")
    if r.threads_left_out:
        notes.append(f"{r.threads_left_out} less active thread(s) left out.")
    if not rec.os_state:
        notes.append("py-spy cannot tell running from idle samples on this Python (3.10 or older) without pausing "
                     "the process: each thread's running share comes from its OS state sampled alongside, given "
                     "to the stacks seen holding the GIL first.")
    notes.append("idle and GIL figures come from separate samplers run side by side with the CPU profile "
                 "(py-spy --idle and --gil): estimates, like any sampled figure.")
    return notes


def _pct(n: int, of: int) -> str:
    return f"{100 * n / of:.1f}%" if of else "-"


def _function_rows(rows: list[FunctionShare], color: bool, indent: str = "  ") -> list[str]:
    out = [paint(f"{indent}{'self%':>6} {'total%':>7} {'self':>6} {'total':>6}  function", "dim", color)]
    for f in rows:
        where = f"{f.file}:{f.line}" if f.line is not None else f.file
        out.append(f"{indent}{100 * f.self_share:5.1f}% {100 * f.total_share:6.1f}% {f.self_samples:6d} "
                   f"{f.total_samples:6d}  {paint(f.name, 'cyan', color)} ({where})")
    return out


def render(r: ProfileResult, color: bool) -> str:
    out = [paint(f"Profile of pid {r.pid}: {r.seconds:.1f}s at {r.rate} Hz, {len(r.threads) + r.threads_left_out} "
                 "thread(s), sampled from outside with py-spy (the process was never paused)", "bold", color),
           f"  thread samples: {r.samples}: running {r.active_samples} ({_pct(r.active_samples, r.samples)}), "
           f"idle {r.idle_samples} ({_pct(r.idle_samples, r.samples)}); GIL held at {r.gil_samples} of "
           f"{r.intervals} instants ({_pct(r.gil_samples, r.intervals)})", ""]
    if r.functions:
        out.append(paint(f"Top functions, share of the {r.active_samples} running samples "
                         f"({len(r.functions)} of {r.functions_seen})", "bold", color))
        out += _function_rows(r.functions, color) + [""]
    if r.gil_functions:
        out.append(paint(f"Holding the GIL, share of the {r.gil_samples} GIL samples", "bold", color))
        out += _function_rows(r.gil_functions, color) + [""]
    for t in r.threads:
        ident = f" native_id={t.native_id}" if t.native_id is not None else ""
        out.append(paint(f'Thread "{t.name or "?"}"{ident}', "bold", color) +
                   f": running {t.active_samples}/{t.samples} ({_pct(t.active_samples, t.samples)}), "
                   f"idle {t.idle_samples} ({_pct(t.idle_samples, t.samples)}), GIL {t.gil_samples} "
                   f"({_pct(t.gil_samples, r.intervals)})")
        for f in [f for f in t.functions if f.self_samples][:5]:
            where = f"{f.file}:{f.line}" if f.line is not None else f.file
            out.append(f"    {100 * f.self_share:5.1f}% {paint(f.name, 'cyan', color)} ({where})")
        for place in t.idle_in:
            where = f"{place.file}:{place.line}" if place.line is not None else place.file
            out.append(f"    idle in {place.name} ({where}): {_pct(place.samples, t.samples)}")
    if r.threads_left_out:
        out.append(f"... {r.threads_left_out} less active thread(s) left out")
    if r.collapsed is not None:
        out += ["", paint(f"Collapsed stacks ({len(r.collapsed)} of {len(r.collapsed) + r.collapsed_left_out})",
                          "bold", color), *r.collapsed]
    if r.flamegraph_file:
        out += ["", f"Flamegraph data has been successfully written to {r.flamegraph_file}! "
                    f"({r.flamegraph_samples} samples)"]
    out += [""] + [f"note: {n}" for n in r.notes]
    return "\n".join(out).rstrip()


TOOL = Tool(
    name="profile", params=ProfileParams, result=ProfileResult, run=run, render=render,
    title="CPU profile (sampling)", aliases=("perf",),
    description=(
        "Sample a live Python process for a few seconds and say where its CPU goes: the top functions by self "
        "and total share of the samples, overall and per thread, which threads were idle (and where they "
        "waited), and who held the GIL. Use it for high CPU, a slow process with no single slow call, or GIL "
        "contention between threads; use trace instead for one slow call. Sampled from outside with py-spy: "
        "nothing is loaded into the process and it is never paused. Optionally writes a flame graph SVG "
        "(filepath) and returns the collapsed stacks (collapsed). Example: {\"pid\": 1234, \"duration\": 5}. "
        "Read-only."),
)
