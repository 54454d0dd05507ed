"""gilstat: who holds the GIL and who waits for it, per thread, over an interval; the long holds with
the stack that held the GIL, and the long waits."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from ..models import Fact, Frame
from ..render import paint, wall_time
from .base import Call, Cli, TimedParams, Tool

# The answer must arrive after the measurement: what the deadline adds to the interval when the
# caller gave no timeout (attach included).
ATTACH_ALLOWANCE_S = 10.0


class GilstatParams(TimedParams):
    # flight_profiler's `gilstat on [gil_take] [gil_hold] [interval] [max_threads]`: the trailing
    # numbers are the ones left out
    cli_trailing_optional: ClassVar[bool] = True

    action: Annotated[Literal["on", "off"], Cli(positional=True)] = Field(
        "on", description="on: measure for `interval` seconds, then answer (nothing keeps running after). "
                          "off: stop a measurement still running (flight_profiler's `gilstat off`).")
    take_threshold_ms: Annotated[float, Cli("--take", positional=True)] = Field(
        10, gt=0, le=600000, description="A wait for the GIL at least this long (ms) is listed as a long wait "
                                         "(flight_profiler's gil_take).")
    hold_threshold_ms: Annotated[float, Cli("--hold", positional=True)] = Field(
        10, gt=0, le=600000, description="A hold of the GIL at least this long (ms) is listed as a long hold, with "
                                         "the holder's stack (flight_profiler's gil_hold).")
    interval: Annotated[float, Cli("-i", "--interval", positional=True)] = Field(
        5, gt=0, le=3600, description="Seconds to measure.")
    max_threads: Annotated[int, Cli("--max-threads", positional=True)] = Field(
        500, ge=1, le=10000, description="The most threads to list (the busiest first).")
    rate: Annotated[int, Cli("-r", "--rate")] = Field(
        1000, ge=10, le=10000, description="Samples per second: the resolution of shares and durations is one "
                                           "sample period.")


class GilThread(Fact):
    ident: int | None = Field(description="threading ident; None for a thread that ended before it could be named.")
    native_id: int | None = Field(None, description="OS thread id.")
    name: str | None = None
    daemon: bool | None = None
    main: bool = False
    ended: bool = Field(False, description="The thread ended during the measurement.")
    hold_share: float = Field(description="Share (0-1) of the samples where this thread held the GIL.")
    wait_share: float = Field(description="Share (0-1) of the samples where it was blocked taking the GIL.")
    long_holds: int = Field(description="Holds at least hold_threshold_ms long.")
    long_waits: int = Field(description="Waits at least take_threshold_ms long.")
    max_hold_ms: float
    max_wait_ms: float


class GilEvent(Fact):
    kind: Literal["hold", "wait"]
    ident: int | None = None
    native_id: int | None = None
    name: str | None = None
    start: float = Field(description="When it began (epoch seconds).")
    duration_ms: float
    ongoing: bool = Field(description="Still going when the measurement ended (its duration so far).")
    frames: list[Frame] | None = Field(None, description="Holds: the holder's stack, outermost first, read when the "
                                                         "agent next got the GIL, i.e. where the holder let it go.")
    stack_after_ms: float | None = Field(None, description="When the stack was read, in ms after the hold began.")


class GilstatResult(Fact):
    action: Literal["on", "off"]
    stopped_running: bool | None = Field(None, description="off: a measurement was running and was stopped.")
    mechanism: Literal["gil_state_sampler"] | None = Field(
        None, description="gil_state_sampler: a native thread of the agent reads the GIL's state (locked, last "
                          "holder) and each thread's system call (blocked on the GIL's condition/mutex = waiting) "
                          "every sample, never taking the GIL.")
    pid: int | None = None
    start: float | None = Field(None, description="Epoch seconds.")
    duration_s: float | None = Field(None, description="Time measured.")
    interval: float | None = None
    stopped_by: Literal["interval", "deadline", "cancel", "off"] | None = None
    samples: int | None = None
    resolution_ms: float | None = Field(None, description="Mean time between samples actually achieved.")
    wait_resolution_ms: float | None = Field(None, description="Mean time between reads of the waits: every sample, "
                                                               "or less often when many threads would make the "
                                                               "reads cost more than ~4% of a core.")
    rate: int | None = None
    held_share: float | None = Field(None, description="Share of samples where any thread held the GIL.")
    agent_hold_share: float | None = Field(None, description="Of held_share, the agent's own threads (left out of "
                                                             "threads).")
    switches: int | None = Field(None, description="Times the GIL went to another thread.")
    waits_measured: bool | None = Field(None, description="False when /proc/self/task/*/syscall could not be read: "
                                                          "wait shares are then unknown (shown as 0).")
    hold_threshold_ms: float | None = None
    take_threshold_ms: float | None = None
    threads: list[GilThread] = Field(default_factory=list)
    threads_elided: int = Field(0, description="Threads left out of `threads` (max_threads).")
    untracked_samples: int = Field(0, description="Thread-samples not attributed: the process had more threads "
                                                  "than the sampler follows (4096).")
    events: list[GilEvent] = Field(default_factory=list, description="The longest holds and waits over the "
                                                                      "thresholds: holds, then waits, each longest first.")
    events_elided: int = Field(0, description="Shorter events left out of `events` (the 40 longest are kept).")
    long_holds: int = Field(0, description="Holds over hold_threshold_ms, all threads.")
    long_waits: int = Field(0, description="Waits over take_threshold_ms, all threads.")


def run(p: GilstatParams, call: Call) -> GilstatResult:
    timeout = p.timeout_s if "timeout_s" in p.model_fields_set else max(p.timeout_s, p.interval + ATTACH_ALLOWANCE_S)
    return GilstatResult(**call.request(p, "gilstat", budget_arg="timeout_s", margin=1.0, timeout=timeout))


def _pct(x: float) -> str:
    return f"{x * 100:5.1f}%"


def _who(name: str | None, ident: int | None, native_id: int | None) -> str:
    label = name or "?"
    return f"{label} (tid={native_id if native_id is not None else '?'})"


def render(r: GilstatResult, color: bool) -> str:
    if r.action == "off":
        if r.stopped_running:
            return "gilstat off: stopped the measurement that was running."
        return ("gilstat off: nothing was running (each `gilstat on` measures for its interval, answers, and "
                "leaves nothing behind).")
    lines = [paint(f"🔒 gilstat pid={r.pid} {wall_time(r.start or 0)} measured {r.duration_s:.2f}s"
                   + ("" if r.stopped_by == "interval" else f" (stopped by {r.stopped_by})"), "bold", color),
             f"  mechanism: GIL state sampler (a native agent thread reads the GIL's holder and each thread's "
             f"system call, never taking the GIL); {r.samples} samples, resolution {r.resolution_ms:.2f} ms"
             + (f" (waits: {r.wait_resolution_ms:.2f} ms)" if r.wait_resolution_ms and
                r.wait_resolution_ms > 1.5 * r.resolution_ms else ""),
             "gil statistics report:",
             f"  GIL held {_pct(r.held_share or 0).strip()} of the time, {r.switches} switches between threads"
             + (f" (agent: {_pct(r.agent_hold_share).strip()})" if r.agent_hold_share else "")]
    if not r.waits_measured:
        lines.append("  waits unknown: /proc/self/task/*/syscall could not be read in the target")
    header = f"  {'thread':<32}{'hold':>8}{'wait':>8}{'long holds':>12}{'max hold ms':>13}{'long waits':>12}{'max wait ms':>13}"
    lines.append(paint(header, "cyan", color))
    for t in r.threads:
        who = _who(t.name, t.ident, t.native_id) + (" [ended]" if t.ended else "")
        lines.append(f"  {who:<32}{_pct(t.hold_share):>8}{_pct(t.wait_share):>8}{t.long_holds:>12}"
                     f"{t.max_hold_ms:>13.1f}{t.long_waits:>12}{t.max_wait_ms:>13.1f}")
    if r.untracked_samples:
        lines.append(f"  {r.untracked_samples} thread-samples not attributed (more than 4096 threads)")
    if r.threads_elided:
        lines.append(f"  ... {r.threads_elided} more threads (raise max_threads to list them)")
    shown = f" (the {len(r.events)} longest shown)" if r.events_elided else ""
    lines.append(f"gil warning report: {r.long_holds} holds over {r.hold_threshold_ms:g} ms, {r.long_waits} waits "
                 f"over {r.take_threshold_ms:g} ms{shown}")
    for e in r.events:
        what = paint(f"{e.kind:<5}", "red" if e.kind == "hold" else "yellow", color)
        lines.append(f"  {what}{e.duration_ms:>9.1f} ms{'+' if e.ongoing else ' '} {_who(e.name, e.ident, e.native_id)} "
                     f"from {wall_time(e.start)}")
        if e.frames:
            lines.append(f"      stack of the holder, read {e.stack_after_ms:.0f} ms after the hold began:")
            for fr in e.frames[-8:]:
                lines.append(f'        File "{fr.file}", line {"?" if fr.line is None else fr.line}, in {fr.name}')
                if fr.source:
                    lines.append("          " + fr.source)
    return "\n".join(lines)


TOOL = Tool(
    name="gilstat", params=GilstatParams, result=GilstatResult, run=run, render=render,
    title="GIL hold/wait shares per thread",
    description=(
        "Measure the GIL of a live Python process for `interval` seconds: per thread, the share of time it HELD "
        "the GIL and the share it WAITED for it, the GIL switches, and the long holds (with the stack that held "
        "the GIL) and long waits over the thresholds. Use it when threads are slow but the CPU is not busy, "
        "latency spikes under load, or one thread starves the others (a C call or tight loop holding the GIL). "
        "Sampled from a native thread that never takes the GIL; everything stops when the call answers. "
        "Example: {\"pid\": 1234, \"interval\": 3, \"hold_threshold_ms\": 50}."),
)
