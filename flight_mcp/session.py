"""One live connection per target pid: attach on first use, reuse afterwards."""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time

from .attach import procs
from .attach.bootstrap import RuntimeDir
from .attach.client import AgentClient
from .errors import FlightError

DEFAULT_ATTACH_TIMEOUT = 5.0


def _connect(pid: int, rdir: RuntimeDir) -> AgentClient | None:
    path = rdir.sock("host")
    if not os.path.exists(path):
        return None
    try:
        return AgentClient(pid, path)
    except OSError:
        try:
            os.unlink(path)  # stale: the agent is gone (e.g. a previous process with this pid)
        except OSError:
            pass
        return None


def attach(pid: int, timeout: float = DEFAULT_ATTACH_TIMEOUT) -> AgentClient:
    """Connects to the agent in pid, injecting it first when it is not running."""
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
    if client is None:
        rdir.ensure()
        with _attach_lock(rdir, time.monotonic() + timeout):
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
    client.info["injection"] = how
    return client


@contextlib.contextmanager
def _attach_lock(rdir: RuntimeDir, deadline: float):
    """One injection per target at a time across every flight-mcp process (flock on a file in
    the target's runtime dir); the loser then finds the winner's agent instead of injecting twice."""
    fd = os.open(rdir.lockfile(), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FlightError("attach_busy", f"another flight-mcp process is attaching to pid {rdir.pid} "
                                      "and did not finish in time; retry in a moment.")
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)  # releases the lock


def _inject_and_connect(pid: int, version, rdir: RuntimeDir, timeout: float) -> tuple[AgentClient, dict]:
    """Injects the payload and waits for the agent to listen."""
    started = time.monotonic()
    how = _inject(pid, version, rdir, timeout)
    how["inject_ms"] = round((time.monotonic() - started) * 1000, 1)  # survey + injector child
    client = _wait_for_agent(pid, rdir, started + timeout, how)
    how["ms"] = round((time.monotonic() - started) * 1000, 1)  # + the agent starting in the target
    return client, how


def _staged(pid: int, rdir: RuntimeDir) -> list[str]:
    try:
        names = os.listdir(rdir.host)
    except OSError:
        return []
    return [n for n in names if n.startswith(f"inject-{pid}-")]


def _pending_injection(pid: int, rdir: RuntimeDir) -> bool:
    """A payload of ours is mapped in pid and its bootstrap has not run yet (the bootstrap deletes
    its own file first thing; the library file goes as soon as the injector has mapped it)."""
    scripts = {n[:-3] for n in _staged(pid, rdir) if n.endswith(".py")}
    if not scripts:
        return False
    try:
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read()
    except OSError:
        return False
    return any(f"/{stem}.so" in maps for stem in scripts)


def _inject(pid: int, version, rdir: RuntimeDir, timeout: float) -> dict:
    if os.path.exists(rdir.errfile("host")):
        os.unlink(rdir.errfile("host"))
    lib, script = rdir.stage_injection(version)
    if version >= (3, 14):
        from .attach import remote_exec
        return remote_exec.run(pid, rdir.to_target(script))
    from .attach import inject
    try:
        how = inject.inject(pid, lib, deadline_s=min(timeout, 3.0))
        os.unlink(lib)  # mapped now; the mapping keeps it alive
        return how
    except BaseException:  # nothing was loaded: the staged files must not look like a pending injection
        for p in (lib, script):
            try:
                os.unlink(p)
            except OSError:
                pass
        raise


def _wait_for_agent(pid: int, rdir: RuntimeDir, deadline: float, how: dict) -> AgentClient:
    while True:
        client = _connect(pid, rdir)
        if client is not None:
            return client
        if os.path.exists(rdir.errfile("host")):
            with open(rdir.errfile("host")) as f:
                detail = f.read().strip().splitlines()
            raise FlightError("agent_failed", f"the agent failed to start inside pid {pid}: "
                              f"{detail[-1] if detail else 'unknown error'}. The target is unaffected.")
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
        # The agent closes its listener just after answering: wait for it, so that an attach
        # right after this one injects afresh instead of reaching the listener on its way out.
        deadline = time.monotonic() + 2.0
        while os.path.exists(client.path) and time.monotonic() < deadline:
            time.sleep(0.002)
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
