"""Our end of the agent's socket: requests with ids, streamed events, cancel.

Synchronous on purpose: the CLI uses it directly and the MCP server from worker threads, so
one implementation serves both without dragging an event loop into the CLI.

No reader thread: a thread waiting for an answer reads the socket itself (one reader at a time,
handing every message to the request it belongs to). A reader thread cost a thread hand-off on
every answer (~0.2-0.7 ms on a busy machine, a large part of a warm MCP call).
"""
from __future__ import annotations

import itertools
import json
import queue
import select
import socket
import threading
import time
from typing import Any, Callable

from ..agent.codes import CODES
from ..errors import FlightError
from . import procs

# A request the agent has not started this long after it was sent waits for the GIL (see
# session/gil.py for how much normal answers take); the agent then names the threads in its ack.
STALL_BUDGET_S = 0.5
# How often a long command with nothing to report beats (agent/capture.py's PROGRESS_EVERY_S): beats
# that stop for STALL_BUDGET_S longer than this mean its thread waits for the GIL.
BEAT_EVERY_S = 0.2

_CLOSED = object()
_TURN = object()  # "the socket has no reader now: take over" (to a waiting request)


class AgentClient:
    def __init__(self, pid: int, path: str, connect_timeout: float = 2.0):
        self.pid = pid
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(connect_timeout)
        self.sock.connect(path)
        self.sock.settimeout(None)
        self._ids = itertools.count(1)
        self._waiting: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._read_lock = threading.Lock()  # held by the one thread reading the socket
        self._buf = b""
        self._closed = False
        self.info: dict[str, Any] = {}
        # native_id -> threading name, from the agent's answers (stack, the ack of a request that waited):
        # names for threads read from outside while the agent cannot answer
        self.thread_names: dict[int, str] = {}
        self.on_names: Callable[[dict[int, str]], None] | None = None   # told when they change
        self.translate: Callable[[Any], Any] | None = None   # the agent's pids and thread ids into ours

    @property
    def closed(self) -> bool:
        """True once the agent hung up. Nobody reads while no request runs, so look at the socket."""
        if not self._closed and self._read_lock.acquire(blocking=False):
            try:
                self._read(None, 0)  # hands out what arrived, and sees an end of stream
            finally:
                self._read_lock.release()
                self._pass_turn(None)
        return self._closed

    @closed.setter
    def closed(self, value: bool) -> None:
        self._closed = value

    def _next(self, q: queue.Queue, timeout: float) -> Any:
        """The next message for q within timeout (None when none came), reading the socket
        ourselves when no other thread does."""
        while True:
            try:
                msg = q.get_nowait()
            except queue.Empty:
                msg = None
            if msg is not None and msg is not _TURN:
                return msg
            if self._read_lock.acquire(blocking=False):
                try:
                    self._read(q, timeout)
                finally:
                    self._read_lock.release()
                    self._pass_turn(q)
                try:
                    msg = q.get_nowait()
                except queue.Empty:
                    return None
                return None if msg is _TURN else msg
            try:
                msg = q.get(timeout=timeout)
            except queue.Empty:
                return None
            if msg is not _TURN:
                return msg
            # the reader left: loop and read ourselves

    def _read(self, q: queue.Queue | None, timeout: float) -> None:
        """Reads and hands out messages until q has one (q None: until nothing more is readable),
        the socket ends, or timeout passes and nothing is readable. Only under _read_lock."""
        end = time.monotonic() + timeout
        while q is None or q.empty():
            try:
                if not select.select([self.sock], [], [], max(end - time.monotonic(), 0))[0]:
                    return
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise OSError("end of stream")
                self._buf += chunk
                while b"\n" in self._buf:
                    line, self._buf = self._buf.split(b"\n", 1)
                    msg = json.loads(line)
                    if self.translate is not None:  # a target in its own pid namespace (attach/pidns.py)
                        msg = self.translate(msg)
                    with self._lock:
                        dest = self._waiting.get(msg.get("id"))
                    if dest is not None:
                        dest.put(msg)
            except (OSError, ValueError):
                self._closed = True
                with self._lock:
                    waiting = list(self._waiting.values())
                for w in waiting:
                    w.put(_CLOSED)
                return

    def _pass_turn(self, mine: queue.Queue | None) -> None:
        """Wakes one other waiting request to read on (ours got its message or gave up reading)."""
        with self._lock:
            others = [w for w in self._waiting.values() if w is not mine]
        if others:
            others[0].put(_TURN)

    def _send(self, msg: dict) -> None:
        data = (json.dumps(msg) + "\n").encode()
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError as e:
                self.closed = True
                raise FlightError("agent_gone", f"the agent in pid {self.pid} closed the connection ({e}); "
                                  "the process may have exited. Call again to re-attach.")

    def request(self, cmd: str, args: dict | None = None, *, timeout: float = 10.0,
                on_event: Callable[[dict], None] | None = None,
                cancelled: Callable[[], bool] | None = None, watch: Any = None) -> dict:
        """Runs one agent command and returns its result. `timeout` bounds the whole exchange;
        when it passes, or `cancelled()` turns true, the command is cancelled in the agent and we
        wait briefly for its final (partial) answer.

        watch (session/gil.py's StallWatch) hears of the GIL: watch.names is set to our thread names,
        watch.sent(at) when the request left,
        watch.started(queued_s) when Python ran for it in the agent, watch.overdue() once when it
        has not after STALL_BUDGET_S, watch.finished(waited_s) with the whole wait for the GIL
        (before the command ran and after it answered) when the answer arrived, or watch.gave_up(waited_s)
        when we stop waiting for a request that never started; watch.quiet() once per silence when a
        command that beats (a capture) has sent nothing for STALL_BUDGET_S + BEAT_EVERY_S."""
        if self.closed:
            raise FlightError("agent_gone", f"the connection to pid {self.pid} is closed; call again to re-attach.")
        req_id = next(self._ids)
        q: queue.Queue = queue.Queue()
        with self._lock:
            self._waiting[req_id] = q
        try:
            sent = time.monotonic()
            self._send({"id": req_id, "cmd": cmd, "args": args or {}, "sent": sent, "slow_s": STALL_BUDGET_S})
            if watch is not None:
                watch.names = self.thread_names  # what it knows now, and what this request's ack adds
                watch.sent(sent)
            deadline = sent + timeout
            cancel_sent_at = None
            queued = None  # how long the request waited before Python ran for it in the agent
            heard = None  # when the command last beat or sent anything (None: it does not beat)
            while True:
                msg = self._next(q, 0.05)
                if msg is None:
                    now = time.monotonic()
                    if queued is None and watch is not None and now - sent >= STALL_BUDGET_S:
                        watch.overdue()  # (once: it keeps that it was called)
                    if heard is not None and watch is not None and now - heard >= STALL_BUDGET_S + BEAT_EVERY_S:
                        watch.quiet()
                        heard = None  # once per silence: the next message starts listening again
                    if cancel_sent_at is None and (now >= deadline or (cancelled is not None and cancelled())):
                        stopped = procs.stopped_error(self.pid) if now >= deadline else None
                        if stopped is not None:  # it cannot even take the cancel
                            raise stopped
                        self._send({"cancel": req_id})
                        cancel_sent_at = now
                    elif cancel_sent_at is not None and now - cancel_sent_at > 3.0:
                        stopped = procs.stopped_error(self.pid)
                        if stopped is not None:
                            raise stopped
                        if watch is not None and queued is None:  # never started: the GIL stayed held
                            watch.gave_up(now - sent)
                        raise FlightError("agent_timeout", f"pid {self.pid} did not answer `{cmd}` within "
                                          f"{timeout:.1f}s; its threads may be holding the GIL in native code "
                                          "(stack with native=true reads it from outside).")
                    continue
                if msg is _CLOSED:
                    raise FlightError("agent_gone", f"pid {self.pid} closed the connection during `{cmd}`: "
                                      "the process exited or the agent was detached.")
                if "started" in msg and queued is None:  # the ack, or an answer that came before it
                    started = msg["started"]
                    queued = started["queued_s"]
                    if started.get("threads"):
                        self.thread_names.update({int(k): v for k, v in started["threads"].items()})
                        if self.on_names is not None:
                            self.on_names(self.thread_names)
                    if watch is not None:
                        watch.started(queued)
                if "beat" in msg or (heard is not None and "event" in msg):
                    heard = time.monotonic()
                if "result" not in msg and "error" not in msg and "event" not in msg:
                    continue
                if "event" in msg:
                    if on_event is not None:
                        on_event(msg["event"])
                    continue
                if "error" in msg:
                    err = dict(msg["error"])
                    code, message = err.pop("kind", None), err.pop("message", "the agent sent no message")
                    if code not in CODES:  # an agent of another version, or a bug: never an unknown code
                        code, message = "agent_bug", f"the agent answered with error code {code!r}: {message}"
                    raise FlightError(code, message, arg=err.pop("arg", None), **err)
                if watch is not None and queued is not None:
                    # the reply's time on the way: written late when the GIL was held after the command
                    tail = max(time.monotonic() - msg.get("replied", time.monotonic()), 0.0)
                    watch.finished(queued + tail)
                return msg["result"]
        finally:
            with self._lock:
                self._waiting.pop(req_id, None)

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
