"""One live connection per target pid: attach on first use, reuse afterwards."""
from __future__ import annotations

import os
import socket
import struct
import threading
import time
from typing import Callable

from .. import procfs
from ..attach import pidns, procs
from ..attach.bootstrap import RuntimeDir, agent_build, remove_private
from ..attach.client import AgentClient
from ..errors import FlightError
from . import gil, names_cache
from .deadline import Deadline

DEFAULT_ATTACH_TIMEOUT = 5.0
# The least an `info` request gets even when the attach used up the deadline (it answers in ms).
_FACTS_S = 0.5


def _connect(pid: int, rdir: RuntimeDir) -> AgentClient | None:
    """A connection to the agent of pid, or None. A socket that nobody serves, or that is served by
    another process than pid (a previous process with this pid, anything put there), is removed."""
    if not rdir.has_socket():
        return None
    path = rdir.sock("host")
    try:
        client = AgentClient(pid, path)
    except OSError:
        client = None
    if client is not None:
        try:
            peer = struct.unpack("3i", client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))[0]
        except OSError:
            peer = None
        if peer == pid:  # SO_PEERCRED gives the pid in our pid namespace, whatever the target's
            client.translate = pidns.translator(pid)
            # names the agent gave an earlier command: a reading from outside during a stall uses them
            client.thread_names.update(names_cache.load(pid))
            client.on_names = lambda names: names_cache.save(pid, names)
            return client
        client.close()
    rdir.remove(path)  # stale: the agent is gone (e.g. a previous process with this pid)
    return None


def attach(pid: int, timeout: float = DEFAULT_ATTACH_TIMEOUT) -> AgentClient:
    """Connects to the agent in pid, injecting it first when it is not running (or replacing one
    that another flight-mcp build left there). Every step shares the one deadline of timeout seconds
    (a request for facts gets at least _FACTS_S, so an agent that started just in time is not lost).
    The request for facts is where a new connection waits for the GIL: gil.connect_watch() hears of it."""
    watch = gil.connect_watch()
    deadline = Deadline(timeout)
    version = procs.require_python(pid)
    stopped = procs.stopped_error(pid)
    if stopped is not None:  # nothing could answer: say so now, rather than time out on the GIL
        raise stopped
    rdir = RuntimeDir.of(pid)
    client = _connect(pid, rdir)
    how: dict = {"method": "already attached"}
    replaced = None
    if client is not None:
        client.info = client.request("info", timeout=deadline.left(floor=_FACTS_S), watch=watch)
        if client.info.get("agent_build") != agent_build():
            replaced = _retire(pid, client)
            client = None
    if client is None:
        rdir.ensure()
        with rdir.lock(deadline.at):
            # Another flight-mcp (a second server, a CLI) may have attached while we waited.
            client = _connect(pid, rdir)
            if client is None and rdir.pending_injection():
                # An earlier payload is loaded and its thread still waits for the GIL: injecting
                # another would only queue behind it. Wait for that agent instead.
                how = {"method": "earlier injection", "thread": None}
                client = _wait_for_agent(pid, rdir, deadline.at, how, watch)
            elif client is None:
                client, how = _inject_and_connect(pid, version, rdir, deadline, watch)
        client.info = client.request("info", timeout=deadline.left(floor=_FACTS_S), watch=watch)
        if client.info.get("agent_build") != agent_build():  # another flight-mcp won the race to inject
            client.close()
            raise FlightError("agent_version_mismatch", f"another flight-mcp (agent version "
                              f"{client.info.get('agent_version', 'unknown')}) attached pid {pid} at the same time; "
                              "retry when it is done.")
        if replaced:
            how["replaced"] = replaced
    client.info["injection"] = how
    return client


def _retire(pid: int, client: AgentClient) -> str:
    """Detaches an agent of another build (a flight-mcp before an upgrade left it): its replies would
    not fit our models. Refused while it serves other clients, whose commands it would end."""
    info = client.info
    old = f"{info.get('agent_version', 'unknown')} (build {info.get('agent_build') or 'unknown'})"
    others = info.get("connections", 1) - 1  # agents before 0.2.0 do not say
    if others > 0:
        client.close()
        raise FlightError("agent_version_mismatch", f"pid {pid} runs the agent of another flight-mcp, version {old}, "
                          f"and it is serving {others} other client(s); this flight-mcp brings build {agent_build()}. "
                          f"When they are done, detach it (`flight-mcp {pid} --cmd detach`) and retry.")
    _detach(client)
    return old


def _detach(client: AgentClient) -> None:
    """Asks the agent to remove everything and stop listening, and waits until it has."""
    try:
        client.request("detach", timeout=5.0)
    finally:
        client.close()
    _wait_until_gone(client.path)
    remove_private(client.pid)  # a container's /tmp is left as it was


def _wait_until_gone(path: str) -> None:
    # The agent closes its listener just after answering `detach`: wait for it, so that an attach
    # right after injects afresh instead of reaching the listener on its way out.
    deadline = time.monotonic() + 2.0
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.002)


def _inject_and_connect(pid: int, version, rdir: RuntimeDir, deadline: Deadline, watch=None) -> tuple[AgentClient, dict]:
    """Injects the payload and waits for the agent to listen."""
    started = time.monotonic()
    how = _inject(pid, version, rdir, deadline.left(floor=0.001))
    how["inject_ms"] = round((time.monotonic() - started) * 1000, 1)  # survey + injector child
    client = _wait_for_agent(pid, rdir, deadline.at, how, watch)
    how["ms"] = round((time.monotonic() - started) * 1000, 1)  # + the agent starting in the target
    return client, how


def _inject(pid: int, version, rdir: RuntimeDir, timeout: float) -> dict:
    rdir.clear_error()
    lib, script = rdir.stage_injection(version)
    if version >= (3, 14):
        from ..attach import remote_exec
        return remote_exec.run(pid, rdir.to_target(script))
    from ..attach import inject
    try:
        rdir.check_staged(lib)
        how = inject.inject(pid, lib, deadline_s=min(timeout, 3.0))
        rdir.remove(lib)  # mapped now; the mapping keeps it alive
        return how
    except BaseException:  # nothing was loaded: the staged files must not look like a pending injection
        for p in (lib, script):
            try:
                rdir.remove(p)
            except (OSError, FlightError):
                pass
        raise


def _wait_for_agent(pid: int, rdir: RuntimeDir, deadline: float, how: dict, watch=None) -> AgentClient:
    """The loaded agent's connection once it listens. watch (gil.connect_watch()) hears of the wait:
    injected() now, overdue() once the agent has not started within gil.START_BUDGET_S (its thread
    waits for the GIL, or the process is slow), gave_up() when the deadline passes."""
    loaded = time.monotonic()
    if watch is not None:
        watch.injected(loaded)
    told = False
    while True:
        client = _connect(pid, rdir)
        if client is not None:
            return client
        if watch is not None and not told and time.monotonic() - loaded >= gil.START_BUDGET_S:
            watch.overdue()
            told = True
        detail = rdir.read_error()
        if detail is not None:
            raise _agent_error(pid, detail)
        if not procfs.exists(pid):
            raise FlightError("no_such_process", f"pid {pid} exited while attaching.")
        if time.monotonic() > deadline:
            stopped = procs.stopped_error(pid)
            if stopped is not None:  # stopped while we waited
                raise stopped
            if watch is not None:  # its error names the thread holding the GIL, when it was read
                watch.gave_up(time.monotonic() - loaded)
            raise FlightError(
                "agent_timeout",
                f"the agent was loaded into pid {pid} "
                + (f"(thread {how['thread']}) " if how.get("thread") else "by an earlier attach ")
                + "but did not start in time: "
                "it waits for the GIL, so a thread is holding the GIL without releasing it (a long C call "
                "or a native deadlock). The target is unaffected and the agent will start once the GIL "
                "is free; meanwhile stack with native=true reads the process from outside.")
        time.sleep(0.001)  # a stat per ms is nothing; the agent is often up within a few ms


def _agent_error(pid: int, detail: str) -> FlightError:
    kind, _, message = detail.partition(": ")
    if kind == "Untrusted":
        return FlightError("unsafe_runtime_dir", f"the agent was not started inside pid {pid}: {message}. Nothing was "
                           "loaded from there; retry (flight-mcp replaces an altered agent folder).")
    if kind == "AgentConflict":
        return FlightError("agent_version_mismatch", f"the agent was not started inside pid {pid}: {message} "
                           f"(`flight-mcp {pid} --cmd detach` with the flight-mcp that attached it) and retry.")
    return FlightError("agent_failed", f"the agent failed to start inside pid {pid}: {detail}. The target is "
                       "unaffected.")


class Sessions:
    """pid -> AgentClient, shared by every tool call of one server (or one CLI run)."""

    def __init__(self, attach_timeout: float = DEFAULT_ATTACH_TIMEOUT):
        # attach_timeout: for get() without a timeout; a tool call passes its own deadline.
        self._clients: dict[int, AgentClient] = {}
        self._lock = threading.Lock()
        self._pid_locks: dict[int, threading.Lock] = {}
        self.attach_timeout = attach_timeout
        # Processes in which the last outside reading saw an injected agent still waiting for the GIL,
        # keyed by procfs.identity (pid, start time) against pid reuse: see session.stack.
        self.pending_agents: dict[tuple[int, str], int] = {}

    def get(self, pid: int, timeout: float | None = None) -> AgentClient:
        """The session for pid, attaching within timeout (default: attach_timeout) if needed."""
        with self._lock:
            lock = self._pid_locks.setdefault(pid, threading.Lock())
        with lock:
            client = self._clients.get(pid)
            if client is not None and not client.closed:
                return client
            client = attach(pid, self.attach_timeout if timeout is None else timeout)
            self._clients[pid] = client
            return client

    def request(self, pid: int, cmd: str, args: dict, deadline: Deadline, *, budget_arg: str | None = None,
                margin: float = 0.0, on_event: Callable[[dict], None] | None = None,
                cancelled: Callable[[], bool] | None = None, watch=None) -> dict:
        """Runs cmd within deadline, attach included: the request gets what the attach left. budget_arg
        names an argument of the agent's set to that rest (a capture's own deadline, after which the
        agent answers with what it has); margin is extra time for that answer to arrive. watch: what
        hears of the GIL (see AgentClient.request); by default, within a tool call, a gil.StallWatch."""
        if watch is None and gil.watching():
            watch = gil.StallWatch(pid, cmd)
        with gil.watching_connect(watch):
            client = self.get(pid, deadline.left(floor=0.001))
        left = deadline.left(floor=0.001)
        if budget_arg is not None:
            args = dict(args, **{budget_arg: round(left, 3)})
        if watch is None:
            return client.request(cmd, args, timeout=left + margin, on_event=on_event, cancelled=cancelled)
        return client.request(cmd, args, timeout=left + margin, on_event=on_event, cancelled=cancelled, watch=watch)

    def agent_listening(self, pid: int) -> bool:
        """An agent answers in pid now (ours, or one another flight-mcp attached); never injects."""
        if pid in self.attached():
            return True
        try:
            client = attach_existing(pid)
        except FlightError:
            return False
        if client is None:
            return False
        client.close()
        return True

    def learn_names(self, pid: int, threads: list[dict]) -> None:
        """Keeps the threading names of an agent's answer (its thread facts) for readings from outside."""
        client = self._clients.get(pid)
        if client is not None:
            client.thread_names.update({t["native_id"]: t["name"] for t in threads if t.get("native_id")})
            names_cache.save(pid, client.thread_names)

    def thread_names(self, pid: int) -> dict[int, str]:
        """native_id -> threading name, as the agent in pid last told (never waits, never attaches)."""
        client = self._clients.get(pid)
        return dict(client.thread_names) if client is not None else {}

    def attached(self) -> list[int]:
        return [pid for pid, c in self._clients.items() if not c.closed]

    def detach(self, pid: int) -> bool:
        """Removes all instrumentation and stops the agent's listener. False when nothing was attached."""
        with self._lock:
            client = self._clients.pop(pid, None)
        if client is None or client.closed:
            # An agent left by another server still listens: connect to it to detach it too.
            try:
                client = attach_existing(pid)
            except FlightError as e:
                if e.code in ("no_such_process", "not_python", "bad_pid", "permission_denied"):
                    raise  # "nothing to do" would hide a wrong pid
                return False
            if client is None:
                return False
        _detach(client)
        return True

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for c in clients:
            c.close()  # the agent cancels this connection's commands and removes their instrumentation


def attach_existing(pid: int) -> AgentClient | None:
    """The agent already running in pid, or None: never injects."""
    procs.require_python(pid)
    return _connect(pid, RuntimeDir.of(pid))
