"""Answers that waited for the GIL say so: how long, and which thread held it.

A thread inside one long C call (a regular expression backtracking, a big sort) keeps the GIL, and the
agent, which needs it to run anything, waits. Every request carries the host's send time; the agent
acks it as soon as Python runs for it, saying how long that took (attach/client.py, agent/server.py).
A request not acked within STALL_BUDGET_S is overdue: the process is read from outside once, without
stopping it, for the thread that holds the GIL and its frames (nothing is read for answers that come in
time). When the answer arrives, a wait of at least the budget becomes a GilWait fact of the call's
Result (tools/gil_wait.py): the tool layer collects them per call through a context variable, so every
tool reports its waits without doing anything itself.

A stall that begins while a long command (a capture) already runs delays no request: the capture's loop
in the agent measures how late its own thread wakes (agent/capture.py's GilGaps: facts in its answer and
progress), and beats while it has nothing to send; when beats stop, the holder is read from outside
once (quiet(); held_during()). An agent just loaded by an attach needs the GIL to start: connect tells
the watch (injected(), overdue(), gave_up()), so stack reads from outside at once and others' errors name
the holder.
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
import time

from ..attach import external_stack
from ..attach.client import STALL_BUDGET_S
from ..errors import FlightError

# How long a finished answer waits for the outside reading still under way (it started when the
# request was overdue; it takes ~0.3-0.6 s on an idle machine, 0.7-1.5 s on a loaded one): an answer
# that waited for the GIL is late anyway.
SAMPLE_GRACE_S = 2.0
SAMPLE_TIMEOUT_S = 3.0
# How long an agent just loaded into the process may take to start before we look at who holds the GIL
# (it starts in a few ms to ~0.3 s; it needs the GIL for that). A thread running pure Python always
# holds the GIL when looked at, so the budget must outlast a busy, CPU-starved start: at 0.8 s a busy
# target on a loaded CI machine read as stalled on its first attach.
START_BUDGET_S = 2.5
FRAMES_KEPT = 5


class _Waits(list):
    """One call's GIL waits (GilWait facts), and `during`: the GilHolder facts of the thread seen holding
    the GIL while a long command (a capture) had started but stopped beating (read once per call)."""
    during: dict | None = None


_sink: contextvars.ContextVar[list | None] = contextvars.ContextVar("flight_mcp_gil_waits", default=None)


# The watch of the request for facts a new connection makes (session.connect.attach), set around getting it.
_connect_watch: contextvars.ContextVar = contextvars.ContextVar("flight_mcp_connect_watch", default=None)


@contextlib.contextmanager
def watching_connect(watch):
    token = _connect_watch.set(watch)
    try:
        yield
    finally:
        _connect_watch.reset(token)


def connect_watch():
    return _connect_watch.get()


def collect() -> contextvars.Token:
    """Starts collecting the GIL waits of the requests made in this context (one tool call)."""
    return _sink.set(_Waits())


def collected(token: contextvars.Token) -> list[dict]:
    waits = _sink.get() or []
    _sink.reset(token)
    return waits


def record(wait: dict) -> None:
    sink = _sink.get()
    if sink is not None:
        sink.append(wait)


def held_during() -> dict | None:
    """The holder read from outside while this call's long command ran and stopped beating, or None."""
    return getattr(_sink.get(), "during", None)


def watching() -> bool:
    """Whether a tool call collects waits here (requests outside one need no watch)."""
    return _sink.get() is not None


def summary(waits: list[dict]) -> dict | None:
    """The GilWait facts of a call: its longest wait, and how many requests waited that long."""
    if not waits:
        return None
    longest = max(waits, key=lambda w: w["waited_ms"])
    return dict(longest, requests=len(waits))


def holder(threads: list[dict], names: dict[int, str]) -> dict | None:
    """The GilHolder facts of the thread holding the GIL in an outside reading, or None."""
    for t in threads:
        if t.get("holds_gil"):
            frames = [f for f in t["frames"] if f.get("kind", "python") == "python"][-FRAMES_KEPT:]
            return {"native_id": t["native_id"], "name": names.get(t["native_id"]) or t["name"], "frames": frames}
    return None


def is_stall(waited_s: float, budget_s: float = STALL_BUDGET_S) -> bool:
    return waited_s >= budget_s


class StallWatch:
    """One request's view of the GIL (see AgentClient.request): reads the holder from outside once when
    the request is overdue, and records the wait when the answer came late."""

    def __init__(self, pid: int, cmd: str, names: dict[int, str] | None = None, *, read=external_stack.read):
        # names: the client's native_id -> threading name (it learns them as answers arrive)
        self.pid, self.cmd, self.names = pid, cmd, names if names is not None else {}
        self._read = read
        self._sent = time.monotonic()
        self._sampler: threading.Thread | None = None
        self.sample: dict | None = None  # {"threads": [...], "after_s": when the reading started}
        self._quiet: threading.Thread | None = None  # the reading made when a started command went quiet
        self.quiet_sample: dict | None = None  # {"threads": [...]}

    def sent(self, at: float) -> None:
        """A request left (a call may make two: the facts of a new connection, then its command)."""
        self._sent = at
        self._sampler, self.sample = None, None

    def injected(self, at: float) -> None:
        """The agent was loaded (or found loaded) at `at` and must get the GIL to start: its wait counts
        from there (session.connect calls overdue() when it has not started within the budget)."""
        self.sent(at)

    def quiet(self) -> None:
        """The started command stopped beating (its thread waits for the GIL): read who holds it, once
        per call (again only if the last reading found nobody holding it: a CPU-starved silence); the
        command reports how long it waited itself (capture.GilGaps)."""
        if self._quiet is not None and (self._quiet.is_alive() or self.quiet_sample is None
                                        or holder(self.quiet_sample["threads"], {}) is not None):
            return
        self.quiet_sample = None
        self._quiet = threading.Thread(target=self._sample_quiet, name=f"flight-mcp-gil-{self.pid}", daemon=True)
        self._quiet.start()

    def _sample_quiet(self) -> None:
        try:
            facts = self._read(self.pid, native=False, timeout=SAMPLE_TIMEOUT_S, stop=False)
        except Exception:
            return
        self.quiet_sample = {"threads": facts["threads"]}

    def started(self, queued_s: float) -> None:
        pass  # the wait is known when the answer arrives (the ack's queued_s is part of it)

    def overdue(self) -> None:
        if self._sampler is not None:
            return
        self._sampler = threading.Thread(target=self._sample_now, name=f"flight-mcp-gil-{self.pid}", daemon=True)
        self._sampler.start()

    def _sample_now(self) -> None:
        after = time.monotonic() - self._sent
        try:
            facts = self._read(self.pid, native=False, timeout=SAMPLE_TIMEOUT_S, stop=False)
        except FlightError:
            return  # the wait is still reported, without its holder
        except Exception:
            return
        self.sample = {"threads": facts["threads"], "after_s": after}

    def finished(self, waited_s: float) -> None:
        if self._quiet is not None:
            self._quiet.join(SAMPLE_GRACE_S)
            held = holder(self.quiet_sample["threads"], self.names) if self.quiet_sample else None
            sink = _sink.get()
            if held is not None and sink is not None:
                sink.during = held
        if not is_stall(waited_s):
            return
        if self._sampler is not None:
            self._sampler.join(SAMPLE_GRACE_S)
        record(self.fact(waited_s))

    def gave_up(self, waited_s: float) -> None:
        """The request never started (the call's error says so): the wait so far, still going on."""
        if self._sampler is not None:
            self._sampler.join(SAMPLE_GRACE_S)
        record(dict(self.fact(waited_s), still_waiting=True))

    def fact(self, waited_s: float) -> dict:
        sample = self.sample
        held = holder(sample["threads"], self.names) if sample else None
        return {"waited_ms": round(waited_s * 1000, 1), "request": self.cmd, "holder": held,
                "seen_after_ms": round(sample["after_s"] * 1000, 1) if held else None}


class _Ping:
    """The watch of one `info` request: did Python run for it in the agent within the budget?"""

    def __init__(self):
        self.names: dict[int, str] = {}
        self.started_event = threading.Event()

    def sent(self, at: float) -> None:
        pass

    def started(self, queued_s: float) -> None:
        self.started_event.set()

    def overdue(self) -> None:
        pass

    def injected(self, at: float) -> None:
        pass

    def quiet(self) -> None:
        pass

    def finished(self, waited_s: float) -> None:
        pass

    def gave_up(self, waited_s: float) -> None:
        pass


def stalled_now(pid: int, names: dict[int, str] | None = None, *, budget_s: float = STALL_BUDGET_S,
                read=external_stack.read) -> dict | None:
    """Whether a thread holds pid's GIL right now, asked of the agent already running there (never
    injects): {"stalled": False}, {"stalled": True, "holder": GilHolder facts or None}, or None when no
    agent runs (nothing to ask; the process is not stopped to find out). names: native_id -> threading
    name known from earlier answers."""
    from .connect import attach_existing  # (connect imports this module)
    try:
        client = attach_existing(pid)
    except FlightError:
        return None
    if client is None:
        return None
    ping = _Ping()

    def ask() -> None:
        try:
            client.request("info", {}, timeout=budget_s + SAMPLE_TIMEOUT_S, watch=ping)
        except FlightError:
            pass

    try:
        threading.Thread(target=ask, name=f"flight-mcp-ping-{pid}", daemon=True).start()
        if ping.started_event.wait(budget_s):
            return {"stalled": False}
        try:  # still no Python ran for it: read who holds the GIL, without stopping the process
            facts = read(pid, native=False, timeout=SAMPLE_TIMEOUT_S, stop=False)
        except FlightError:
            return {"stalled": True, "holder": None}
        return {"stalled": True, "holder": holder(facts["threads"], {**(names or {}), **client.thread_names})}
    finally:
        client.close()
