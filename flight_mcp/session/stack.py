"""Every thread's stack: from the in-process agent, or else from outside the process.

The agent knows thread names, source lines and asyncio tasks, but it needs the GIL and a safe point
to start; the reading from outside (attach/external_stack.py) needs neither. This module decides
which answers within the call's one deadline, and reports why the agent did not (the tool turns
that into its notes).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .. import procfs
from ..attach import external_stack, procs, safepoint
from ..attach.bootstrap import RuntimeDir
from ..errors import FlightError
from . import gil
from .connect import Sessions, attach_existing
from .deadline import Deadline

# Agent errors that a reading from outside cannot cure either: report them as they are.
NO_FALLBACK = frozenset({"no_such_process", "not_python", "bad_pid", "usage", "read_only", "external_unavailable"})

# How long an attach started by stack may go on in the background after stack answered from outside.
ATTACH_GRACE_S = 5.0

# How long the names may lag behind the outside reading (they are asked for in parallel with it).
NAMES_GRACE_S = 0.3

# What the names request asks of a running agent, and how long it may take.
NAMES_TIMEOUT_S = 2.0


@dataclass
class StackReading:
    """What was read, and how. agent: the agent's facts ({pid, threads, tasks, event_loops});
    external: external_stack.read()'s ({pid, threads, notes, pending_agents, ms})."""
    source: str
    facts: dict
    agent_error: FlightError | None = None  # external after a fallback: why the agent did not answer
    pending: str | None = None  # external without asking: "waiting" (an earlier agent waits for the GIL) or "gone"
    named: int = 0  # external: threads named by an agent already running
    notes: list[str] = field(default_factory=list)
    stall: dict | None = None  # external because the GIL was held: the GilWait facts (session/gil.py)


class GilHeld(Exception):
    """The agent's stack request was not started within STALL_BUDGET_S: a thread holds the GIL."""

    def __init__(self, watch: "_Watch", box: dict):
        super().__init__("gil held")
        self.watch, self.box = watch, box


class _Watch:
    """What the stack request's client reports (see AgentClient.request's watch)."""

    def __init__(self):
        self.sent_at: float | None = None
        self.injected_at: float | None = None  # when an attach loaded the agent, which has not started yet
        self.queued: float | None = None
        self.waited: float | None = None
        self.longest = 0.0  # the longest queued_s of its requests (a new connection's facts, then stack)
        self.changed = threading.Event()
        self.names: dict[int, str] = {}  # the client's native_id -> threading name (set by it)

    def sent(self, at: float) -> None:
        """(twice on a new connection: its request for facts, then stack)"""
        self.sent_at, self.queued, self.waited = at, None, None
        self.changed.set()

    def injected(self, at: float) -> None:
        self.injected_at = at
        self.changed.set()

    def quiet(self) -> None:
        pass

    def started(self, queued_s: float) -> None:
        self.queued, self.longest = queued_s, max(self.longest, queued_s)
        self.changed.set()

    def overdue(self) -> None:
        self.changed.set()

    def finished(self, waited_s: float) -> None:
        self.waited = waited_s
        self.longest = max(self.longest, waited_s)

    def gave_up(self, waited_s: float) -> None:
        self.longest = max(self.longest, waited_s)

    @property
    def starting(self) -> bool:
        """The agent was loaded by this attach and has not started (no request was sent to it yet)."""
        return self.sent_at is None and self.injected_at is not None

    @property
    def since(self) -> float | None:
        return self.injected_at if self.starting else self.sent_at

    def stalled(self, now: float) -> bool:
        """Sent, not started by Python in the agent within the budget: the GIL is held. Or an agent
        just loaded has not started within gil.START_BUDGET_S (it needs the GIL to start)."""
        if self.starting:
            return now - self.injected_at >= gil.START_BUDGET_S
        return self.sent_at is not None and self.queued is None and gil.is_stall(now - self.sent_at)


def read(sessions: Sessions, pid: int, args: dict, deadline: Deadline, *, native: bool,
         cancelled=None) -> StackReading:
    """The stacks of pid within deadline. native: read from outside only, with C frames (the agent is
    only asked for thread names, and only if it already runs). args: the agent's `stack` request."""
    if native:
        return _external(sessions, pid, args, deadline, native=True, ask_names=True)
    key = procfs.identity(pid)
    gone = None
    if key in sessions.pending_agents and not sessions.agent_listening(pid):
        reading = _external(sessions, pid, args, deadline, native=False, ask_names=False)
        if key in sessions.pending_agents and gil.holder(reading.facts["threads"], {}) is not None:
            reading.pending = "waiting"  # a thread still holds the GIL: asking would only wait
            return reading
        # it got the GIL, or gets it any moment, and starts (e.g. after a first attach during a stall):
        # ask it; this reading answers if it cannot
        reading.pending = "waiting" if key in sessions.pending_agents else "gone"
        gone = reading
    # Keep enough of the deadline for the reading from outside, in case the agent does not answer: what one
    # takes on an idle machine, or a third of a longer deadline (a loaded machine reads slower, and an agent
    # that has not answered in two thirds of the time is rarely about to), never more than half.
    left = deadline.left()
    reserve = min(max(external_stack.expected_seconds(pid), left / 3), left / 2)
    budget = deadline.keeping(reserve)
    try:
        facts = _ask_agent(sessions, pid, args, budget, cancelled)
    except GilHeld as held:
        reading = _while_gil_held(sessions, pid, args, deadline, held, reserve, budget)
        if reading is not None:
            return reading
        facts = held.box["facts"]
    except FlightError as e:
        if e.code in NO_FALLBACK:
            raise
        if gone is not None:
            return gone
        try:
            reading = _external(sessions, pid, args, deadline, native=False, ask_names=False, floor=reserve)
        except FlightError as ext:
            if ext.code == e.code:  # the same cause (no permission, process gone): say it once
                raise e
            raise FlightError(e.code, f"{e.message} Reading pid {pid} from outside failed too: {ext.message}")
        reading.agent_error = e
        return reading
    return StackReading("agent", facts)


def _external(sessions: Sessions, pid: int, args: dict, deadline: Deadline, *, native: bool, ask_names: bool,
              floor: float = 0.0) -> StackReading:
    names: dict = {}
    asker = None
    if ask_names:  # the agent's names, asked while the outside reading runs
        asker = threading.Thread(target=_names_from_running_agent, args=(sessions, pid, args, names), daemon=True,
                                 name=f"flight-mcp-names-{pid}")
        asker.start()
    facts = external_stack.read(pid, native=native, timeout=deadline.left(floor=floor))
    key = procfs.identity(pid)
    if facts["pending_agents"]:
        sessions.pending_agents[key] = facts["pending_agents"]
    else:
        sessions.pending_agents.pop(key, None)
    if asker is not None:
        asker.join(NAMES_GRACE_S)
    if not names:  # the agent cannot answer now: the names it gave before
        names = _seen(sessions.thread_names(pid))
    named = _apply_names(facts["threads"], dict(names))
    return StackReading("external", facts, named=named)


def _while_gil_held(sessions: Sessions, pid: int, args: dict, deadline: Deadline, held: GilHeld,
                    reserve: float, budget: Deadline) -> StackReading | None:
    """The stacks read from outside right away, with native frames (the holder is inside a C call):
    the agent would show the threads as they are after the stall, not the stall. A late answer of the
    agent that arrives meanwhile only names the threads and tells how long the wait was. None: the
    agent's answer stands (held.box["facts"])."""
    w = held.watch
    since, starting = w.since, w.starting
    read_at = time.monotonic()
    try:
        # with native frames (the holder's C call), except while a first attach waits: that reading must fit
        # in what the attach left of the deadline
        reading = _external(sessions, pid, args, deadline, native=not starting, ask_names=False, floor=reserve)
    except FlightError:  # not readable from outside (permissions...): the agent's late answer, if it comes
        while "facts" not in held.box and "error" not in held.box and not budget.expired:
            held.watch.changed.wait(min(budget.left(), 0.05))
        if "facts" not in held.box:
            raise
        gil.record({"waited_ms": round(w.longest * 1000, 1), "request": "stack"})
        return None
    if "facts" in held.box and not gil.is_stall(w.longest):
        return None  # only the ack was late (a CPU-starved process): the command started in time, its answer stands
    # names from the agent's earlier answers, or from this request's ack and answer if the stall ended meanwhile
    if held.watch.names:
        reading.named = _apply_names(reading.facts["threads"], _seen(held.watch.names))
    holder = gil.holder(reading.facts["threads"], {})
    if starting and holder is None:  # nobody holds the GIL: the agent is only slow to start; it answers
        while "facts" not in held.box and "error" not in held.box and not budget.expired:
            held.watch.changed.wait(min(budget.left(), 0.05))
        if "facts" in held.box:
            return None
    waited = w.waited if w.waited is not None and not starting else time.monotonic() - since  # still waiting: so far
    reading.stall = {"waited_ms": round(waited * 1000, 1), "request": "stack", "holder": holder,
                     "seen_after_ms": round((read_at - since) * 1000, 1), "ended": w.waited is not None and not starting,
                     "starting": starting}
    gil.record(dict({k: v for k, v in reading.stall.items() if k not in ("ended", "starting")},
                    still_waiting=not reading.stall["ended"]))
    return reading


def _names_from_running_agent(sessions: Sessions, pid: int, args: dict, out: dict) -> None:
    """native_id -> the agent's thread facts, only from an agent that already runs: never injects."""
    request = dict(args, async_tasks=False, allow_mutating=False, may_change_target=False)
    try:
        if pid in sessions.attached():
            raw = sessions.get(pid).request("stack", request, timeout=NAMES_TIMEOUT_S)
        else:
            client = attach_existing(pid)
            if client is None:
                return
            try:
                raw = client.request("stack", request, timeout=NAMES_TIMEOUT_S)
            finally:
                client.close()
    except Exception:  # names are a nicety: the outside reading stands without them
        return
    out.update({t["native_id"]: t for t in raw.get("threads", ()) if t.get("native_id")})


def _seen(names: dict[int, str]) -> dict:
    """native_id -> name as _apply_names takes them (the agent's thread facts)."""
    return {k: {"name": v, "ident": None, "daemon": None} for k, v in names.items()}


def _apply_names(threads: list[dict], by_native_id: dict) -> int:
    named = 0
    for t in threads:
        seen = by_native_id.get(t["native_id"])
        if seen:
            t["name"], t["ident"], t["daemon"] = seen["name"], seen["ident"], seen["daemon"]
            named += 1
    return named


def _ask_agent(sessions: Sessions, pid: int, args: dict, budget: Deadline, cancelled) -> dict:
    """The agent's answer within budget, attach included, or a FlightError saying why not.

    We wait budget at most, but an attach under way goes on in the background for up to
    ATTACH_GRACE_S, so the next call finds the agent (one waiting for the GIL starts once it is free).
    """
    box: dict = {}
    watch = _Watch()

    def ask() -> None:
        try:
            with gil.watching_connect(watch):
                sessions.get(pid, max(budget.left(), ATTACH_GRACE_S))
            # the answer may come after we answered from outside (it then tells how long the GIL was held)
            box["facts"] = sessions.request(pid, "stack", args, budget, cancelled=cancelled, watch=watch)
            sessions.learn_names(pid, box["facts"]["threads"])
        except FlightError as e:
            box["error"] = e
        except Exception as e:  # never a traceback to the user; the fallback still answers
            box["error"] = FlightError("agent_failed", f"asking the agent failed: {type(e).__name__}: {e}")
        finally:
            watch.changed.set()

    worker = threading.Thread(target=ask, name=f"flight-mcp-stack-{pid}", daemon=True)
    worker.start()
    while worker.is_alive() and not budget.expired:
        if watch.stalled(time.monotonic()):
            raise GilHeld(watch, box)
        watch.changed.wait(min(budget.left(), 0.02))
        watch.changed.clear()
    if "facts" in box:
        return box["facts"]
    if "error" in box:
        raise box["error"]
    raise why_no_answer(pid, budget.seconds)


def why_no_answer(pid: int, budget: float) -> FlightError:
    """Why the attach (still going on in the background) gave no answer within our budget."""
    stopped = procs.stopped_error(pid)
    if stopped is not None:
        return stopped
    try:
        loaded = RuntimeDir.of(pid).payload_mapped()
    except FlightError:
        loaded = False
    if loaded:
        return FlightError("agent_timeout", f"the agent was loaded into pid {pid} but did not answer within "
                           f"{budget:.1f}s: it needs the GIL, so a thread is holding it (a long C call, or a "
                           "native deadlock). It starts by itself once the GIL is free.")
    states = safepoint.survey(pid)
    if states and not any(s.safe for s in states):
        seen = "; ".join(f"thread {s.tid}: {s.why}" for s in states[:6])
        return FlightError("no_safe_point", f"pid {pid} offered no safe point within {budget:.1f}s: flight-mcp "
                           f"only injects into a thread blocked in a system call, and none was ({seen}).")
    return FlightError("agent_timeout", f"attaching to pid {pid} did not finish within {budget:.1f}s.")
