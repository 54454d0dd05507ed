"""Our end of the agent's socket: requests with ids, streamed events, cancel.

Synchronous on purpose: the CLI uses it directly and the MCP server from worker threads, so
one implementation serves both without dragging an event loop into the CLI.
"""
from __future__ import annotations

import itertools
import json
import queue
import socket
import threading
import time
from typing import Any, Callable

from ..errors import FlightError

_CLOSED = object()


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
        self.closed = False
        self.info: dict[str, Any] = {}
        self._reader = threading.Thread(target=self._read_loop, name=f"flight-mcp-client-{pid}", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    msg = json.loads(line)
                    with self._lock:
                        q = self._waiting.get(msg.get("id"))
                    if q is not None:
                        q.put(msg)
        except (OSError, ValueError):
            pass
        finally:
            self.closed = True
            with self._lock:
                waiting = list(self._waiting.values())
            for q in waiting:
                q.put(_CLOSED)

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
                cancelled: Callable[[], bool] | None = None) -> dict:
        """Runs one agent command and returns its result. `timeout` bounds the whole exchange;
        when it passes, or `cancelled()` turns true, the command is cancelled in the agent and we
        wait briefly for its final (partial) answer."""
        if self.closed:
            raise FlightError("agent_gone", f"the connection to pid {self.pid} is closed; call again to re-attach.")
        req_id = next(self._ids)
        q: queue.Queue = queue.Queue()
        with self._lock:
            self._waiting[req_id] = q
        try:
            self._send({"id": req_id, "cmd": cmd, "args": args or {}})
            deadline = time.monotonic() + timeout
            cancel_sent_at = None
            while True:
                try:
                    msg = q.get(timeout=0.05)
                except queue.Empty:
                    now = time.monotonic()
                    if cancel_sent_at is None and (now >= deadline or (cancelled is not None and cancelled())):
                        self._send({"cancel": req_id})
                        cancel_sent_at = now
                    elif cancel_sent_at is not None and now - cancel_sent_at > 3.0:
                        raise FlightError("agent_timeout", f"pid {self.pid} did not answer `{cmd}` within "
                                          f"{timeout:.1f}s; its threads may be holding the GIL in native code "
                                          "(stack with native=true reads it from outside).")
                    continue
                if msg is _CLOSED:
                    raise FlightError("agent_gone", f"pid {self.pid} closed the connection during `{cmd}`: "
                                      "the process exited or the agent was detached.")
                if "event" in msg:
                    if on_event is not None:
                        on_event(msg["event"])
                    continue
                if "error" in msg:
                    err = dict(msg["error"])
                    raise FlightError(err.pop("kind", "agent_error"), err.pop("message", "agent error"), **err)
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
