"""One live connection per target pid: attach on first use, reuse afterwards."""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

from .attach import procs
from .attach.bootstrap import RuntimeDir, agent_build
from .attach.client import AgentClient
from .errors import FlightError

DEFAULT_ATTACH_TIMEOUT = 5.0


def _connect(pid: int, rdir: RuntimeDir) -> AgentClient | None:
    """A connection to the agent of pid, or None. A socket that nobody serves, or that is served by
    another process than pid (a previous process with this pid, anything put there), is removed."""
    path = rdir.sock("host")
    if not os.path.exists(path):
        return None
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
        if peer == pid:
            return client
        client.close()
    rdir.remove(path)  # stale: the agent is gone (e.g. a previous process with this pid)
    return None


def attach(pid: int, timeout: float = DEFAULT_ATTACH_TIMEOUT) -> AgentClient:
    """Connects to the agent in pid, injecting it first when it is not running (or replacing one
    that another flight-mcp build left there)."""
    proc = procs.require_python(pid)
    stopped = procs.stopped_error(pid)
    if stopped is not None:  # nothing could answer: say so now, rather than time out on the GIL
        raise stopped
    try:
        st = os.stat(f"/proc/{pid}")
    except FileNotFoundError:
        raise FlightError("no_such_process", f"pid {pid} exited while attaching.")
    rdir = RuntimeDir(pid, st.st_uid, st.st_gid)
    client = _connect(pid, rdir)
    how: dict = {"method": "already attached"}
    replaced = None
    if client is not None:
        client.info = client.request("info", timeout=timeout)
        if client.info.get("agent_build") != agent_build():
            replaced = _retire(pid, client)
            client = None
    if client is None:
        rdir.ensure()
        with rdir.lock(time.monotonic() + timeout):
            # Another flight-mcp (a second server, a CLI) may have attached while we waited.
            client = _connect(pid, rdir)
            if client is None and _pending_injection(pid, rdir):
                # An earlier payload is loaded and its thread still waits for the GIL: injecting
                # another would only queue behind it. Wait for that agent instead.
                how = {"method": "earlier injection", "thread": None}
                client = _wait_for_agent(pid, rdir, time.monotonic() + timeout, how)
            elif client is None:
                client, how = _inject_and_connect(pid, proc.version, rdir, timeout)
        client.info = client.request("info", timeout=timeout)
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
    try:
        client.request("detach", timeout=5.0)
    finally:
        client.close()
    _wait_until_gone(client.path)
    return old


def _wait_until_gone(path: str) -> None:
    # The agent closes its listener just after answering `detach`: wait for it, so that an attach
    # right after injects afresh instead of reaching the listener on its way out.
    deadline = time.monotonic() + 2.0
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.002)


def _inject_and_connect(pid: int, version, rdir: RuntimeDir, timeout: float) -> tuple[AgentClient, dict]:
    """Injects the payload and waits for the agent to listen."""
    started = time.monotonic()
    how = _inject(pid, version, rdir, timeout)
    how["inject_ms"] = round((time.monotonic() - started) * 1000, 1)  # survey + injector child
    client = _wait_for_agent(pid, rdir, started + timeout, how)
    how["ms"] = round((time.monotonic() - started) * 1000, 1)  # + the agent starting in the target
    return client, how


def _pending_injection(pid: int, rdir: RuntimeDir) -> bool:
    """A payload of ours is mapped in pid and its bootstrap has not run yet (the bootstrap deletes
    its own file first thing; the library file goes as soon as the injector has mapped it)."""
    scripts = {n[:-3] for n in rdir.staged() if n.endswith(".py")}
    if not scripts:
        return False
    try:
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read()
    except OSError:
        return False
    return any(f"/{stem}.so" in maps for stem in scripts)


def _inject(pid: int, version, rdir: RuntimeDir, timeout: float) -> dict:
    rdir.clear_error()
    lib, script = rdir.stage_injection(version)
    if version >= (3, 14):
        from .attach import remote_exec
        return remote_exec.run(pid, rdir.to_target(script))
    from .attach import inject
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


def _wait_for_agent(pid: int, rdir: RuntimeDir, deadline: float, how: dict) -> AgentClient:
    while True:
        client = _connect(pid, rdir)
        if client is not None:
            return client
        detail = rdir.read_error()
        if detail is not None:
            raise _agent_error(pid, detail)
        if not os.path.exists(f"/proc/{pid}"):
            raise FlightError("no_such_process", f"pid {pid} exited while attaching.")
        if time.monotonic() > deadline:
            stopped = procs.stopped_error(pid)
            if stopped is not None:  # stopped while we waited
                raise stopped
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
                if e.kind in ("no_such_process", "not_python", "bad_pid", "permission_denied"):
                    raise  # "nothing to do" would hide a wrong pid
                return False
            if client is None:
                return False
        try:
            client.request("detach", timeout=5.0)
        finally:
            client.close()
        _wait_until_gone(client.path)
        return True

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for c in clients:
            c.close()  # the agent cancels this connection's commands and removes their instrumentation


def attach_existing(pid: int) -> AgentClient | None:
    procs.require_python(pid)
    st = os.stat(f"/proc/{pid}")
    return _connect(pid, RuntimeDir(pid, st.st_uid, st.st_gid))
