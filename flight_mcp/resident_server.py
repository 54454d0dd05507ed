"""The resident helper's own life (how commands reach it, and why: resident.py): it imports and builds
everything a command uses, listens on its socket, and forks a child per command that becomes
`flight-mcp ARGS` with the caller's stdio, environment and cwd, until idle or stopped."""
from __future__ import annotations

import marshal
import os
import signal
import socket
import sys

from . import resident
from .resident import HEADER, IDLE_S, INT, address, peer, recv_exact

_MAX_REQUEST = 4 << 20


def serve(path: str, lock: int) -> None:
    """The resident's life: imports and builds what commands use, listens at path (replacing what was
    there atomically), lets go of the starting lock (fd), then forks a child per command until idle or
    stopped."""
    os.umask(0o077)
    idle_s = float(os.environ.get("FLIGHT_MCP_RESIDENT_IDLE") or IDLE_S)
    warm_up()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    here, fresh = address(path), address(f"{path}.{os.getpid()}")
    try:
        os.unlink(fresh)
    except FileNotFoundError:
        pass
    listener.bind(fresh)
    os.rename(fresh, here)   # atomically: a client finds the old socket or this one, never none
    inode = os.stat(here).st_ino
    listener.listen(64)

    def still_ours() -> bool:
        try:
            return os.stat(here).st_ino == inode
        except OSError:
            return False

    os.close(lock)
    try:
        Loop(listener, idle_s=idle_s, still_ours=still_ours).run()
    finally:
        if still_ours():
            os.unlink(here)


def warm_up() -> None:
    """Imports every module a command uses and builds every pydantic model's validator, so that a
    child starts with nothing left to do but its command (models are built on first use: models.py)."""
    import importlib
    import pkgutil

    from pydantic import BaseModel

    import flight_mcp

    from . import cli
    cli._no_pydantic_plugins()
    skip = ("flight_mcp.server", "flight_mcp.http_server", "flight_mcp.agent")  # the MCP SDK; target code
    for info in pkgutil.walk_packages(flight_mcp.__path__, "flight_mcp.", onerror=lambda _name: None):
        if not any(info.name == s or info.name.startswith(s + ".") for s in skip):
            importlib.import_module(info.name)
    from .attach.bootstrap import agent_sources
    from .models import Fact
    from .tools import all_tools
    from .tools.base import Params
    all_tools()
    seen, todo = set(), [Params, Fact]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    for model in seen:
        model.model_rebuild(force=True)
        issubclass(model, BaseModel)   # fills BaseModel's ABC cache: isinstance() of a model is then a lookup
    agent_sources()   # the agent's files, read and hashed once (they are part of the resident's key)
    cli._parser().parse_intermixed_args(["1", "--cmd", "stack", "--no-color"])   # and argparse's regexes


class Loop:
    """Accepts connections, forks a child per "run", reports each child's pid and exit status to its
    client, and kills a child whose client went away (its command was interrupted: the agent removes
    what the command installed when the child's connection to it drops)."""

    def __init__(self, listener: socket.socket, *, idle_s: float | None = None, still_ours=None,
                 parent_fd: int | None = None):
        import selectors   # here, not at the top: the client side never needs it
        self.listener = listener
        self.idle_s = idle_s
        self.still_ours = still_ours
        self.parent_fd = parent_fd
        self.children: dict[int, socket.socket] = {}
        self.stopping = False
        self.sel = selectors.DefaultSelector()
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)   # a child's end wakes select at once (no polling latency)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.readable = selectors.EVENT_READ
        self.sel.register(self.wake_r, self.readable, "wake")
        self.sel.register(listener, self.readable, "accept")
        if parent_fd is not None:
            self.sel.register(parent_fd, self.readable, "parent")

    def run(self) -> None:
        import time
        last = time.monotonic()
        try:
            while not (self.stopping and not self.children):
                events = self.sel.select(timeout=1.0)
                for key, _ in events:
                    self._event(key)
                self._reap()
                if self.children or events:
                    last = time.monotonic()
                elif not self.stopping and (
                        (self.idle_s is not None and time.monotonic() - last > self.idle_s)
                        or (self.still_ours is not None and not self.still_ours())):
                    self._stop_listening()
        finally:
            for pid in self.children:
                _kill(pid)

    def _event(self, key) -> None:
        what = key.data
        if what == "wake":
            try:
                os.read(self.wake_r, 512)
            except BlockingIOError:
                pass
        elif what == "parent":
            if not os.read(self.parent_fd, 1024):
                self.stopping = True   # the process that started us is gone: so are our children
                for pid in self.children:
                    _kill(pid)
        elif what == "accept":
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if peer(conn)[1] != os.getuid():
                conn.close()
                return
            self.sel.register(conn, self.readable, "request")
        elif what == "request":
            self.sel.unregister(key.fileobj)
            self._request(key.fileobj)
        else:   # ("child", pid): its client wrote or went away while the child runs
            conn, pid = key.fileobj, what[1]
            try:
                gone = not conn.recv(1, socket.MSG_PEEK)
            except OSError:
                gone = True
            if gone:
                _kill(pid)
                self.sel.unregister(conn)

    def _request(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5.0)
            message, fds = _recv_request(conn)
        except (OSError, ValueError):
            conn.close()
            return
        if message.get("op") == "stop":
            self._stop_listening()
            conn.close()
            return
        if message.get("op") != "run" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        pid = self._fork(message, fds, conn)
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        try:
            conn.sendall(INT.pack(pid))
        except OSError:
            pass
        self.sel.register(conn, self.readable, ("child", pid))

    def _fork(self, message: dict, fds: list[int], conn: socket.socket) -> int:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self.sel.close()
                self.listener.close()
                conn.close()
                for target, fd in enumerate(fds):
                    os.dup2(fd, target)
                code = become_cli(message["args"], message.get("env"), message.get("cwd"))
            finally:
                os._exit(code)
        return pid

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            try:
                self.sel.unregister(conn)
            except (KeyError, ValueError):
                pass
            try:
                conn.sendall(INT.pack(os.waitstatus_to_exitcode(status)))
            except OSError:
                pass
            conn.close()

    def _stop_listening(self) -> None:
        self.stopping = True
        try:
            self.sel.unregister(self.listener)
        except (KeyError, ValueError):
            pass
        self.listener.close()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    try:
        if len(data) < HEADER.size:
            raise ValueError("short request")
        size = HEADER.unpack_from(data)[0]
        if size > _MAX_REQUEST:
            raise ValueError("request too large")
        body = data[HEADER.size:]
        if len(body) < size:
            rest = recv_exact(conn, size - len(body))
            if rest is None:
                raise ValueError("truncated request")
            body += rest
        try:
            message = marshal.loads(body)
        except (EOFError, TypeError) as e:
            raise ValueError(f"not a request: {e}") from None
        if not isinstance(message, dict):
            raise ValueError("not an object")
        return message, fds
    except ValueError:
        for fd in fds:
            os.close(fd)
        raise


# ---- the child: a fresh `flight-mcp ARGS` ------------------------------------------------------

def become_cli(args: list[str], env: dict | None = None, cwd: str | None = None) -> int:
    """In a forked child whose fds 0/1/2 are already the caller's: close every other fd, restore the
    interpreter's default signal dispositions and hooks, drop the parent's atexit handlers, run main()
    as the console script does (`sys.exit(main())`), then exit like the interpreter (non-daemon threads
    joined, atexit handlers run, streams flushed). Returns the exit code for os._exit."""
    import atexit
    import faulthandler
    import io
    import threading
    import traceback
    import warnings

    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    resident._FOLDERS.clear()   # their descriptors were just closed
    faulthandler.disable()
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGALRM, signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, 0)
    atexit._clear()
    sys.excepthook = sys.__excepthook__
    sys.unraisablehook = sys.__unraisablehook__
    threading.excepthook = threading.__excepthook__
    if "logging" in sys.modules:   # not imported otherwise: importing it costs a command ~10 ms
        sys.modules["logging"].root.handlers.clear()
    warnings.resetwarnings()
    warnings.showwarning = warnings._showwarning_orig
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    if cwd is not None:
        try:
            os.chdir(cwd)
        except OSError:
            pass   # the caller's cwd is gone or not ours to enter: a command needs none
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=False)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, errors="backslashreplace")
    from flight_mcp import cli
    sys.argv = [cli.__file__, *args]
    try:
        try:
            code = _exit_code(cli.main(args))
        finally:
            threading._shutdown()
    except SystemExit as e:
        code = _exit_code(e.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        code = code or 120  # what the interpreter does when flushing stdout fails
    return code


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":   # started by resident.start(): `python -m flight_mcp.resident_server SOCKET LOCK_FD`
    serve(sys.argv[1], int(sys.argv[2]))
