"""The resident helper: a process of this user that has imported the command line once and forks a child
per one-shot command (`flight-mcp PID --cmd ...`), the way Mercurial's chg and Android's zygote start
programs. A command then costs a fork instead of its interpreter's imports and model builds (~0.3-0.5 s).

- The `flight-mcp` command (front.py) connects to the resident of its installation, starting it when there
  is none, and sends its argv, environment and cwd with its stdin/stdout/stderr attached (SCM_RIGHTS). The
  child takes those fds as its own 0/1/2 and runs `flight_mcp.cli.main(argv)`, exactly what the command
  would have run: same output (a terminal stays a terminal), same exit status. The command forwards the
  signals it gets (Ctrl-C ends a watch cleanly) to the child, and exits with the child's status.
- Who can reach it: the socket lies in the user's private state directory (statedir.private: this
  user's, 0700, not a symlink), and each end checks the other's uid (SO_PEERCRED) before a byte is read.
- Which code it runs: one resident per installation and version of the code: the socket's name is a hash
  of the package's path, its files' modification times and the interpreter, so an upgrade or an edited
  source tree starts a new one; an old one ends when idle.
- Lifetime: it ends after IDLE_S seconds without a command (FLIGHT_MCP_RESIDENT_IDLE), when its socket is
  removed or replaced, or on `{"op": "stop"}`. It holds no connection to any target between commands:
  each child attaches and detaches as the command alone would.
- FLIGHT_MCP_RESIDENT=0 turns it off: every command imports and runs in its own process.

Wire format: a frame is a 4-byte big-endian length and that much JSON; the answer to "run" is the child's
pid, then its exit status (4-byte signed ints; -N: killed by signal N).

Stdlib only at module level: the client side runs in `flight-mcp` before anything else is imported, and
as a script (`python -S resident.py connect SOCKET ARG...`) for the tests (tests/cli_zygote.py).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

IDLE_S = 600.0
_HEADER = struct.Struct("!I")
_INT = struct.Struct("!i")
_PEERCRED = struct.Struct("3i")   # struct ucred: pid, uid, gid
_MAX_REQUEST = 4 << 20
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


# ---- where: the socket of this installation ----------------------------------------------------

def socket_path() -> str | None:
    """This installation's socket, in the user's private state directory; None when that directory
    cannot be made private."""
    from . import statedir
    try:
        folder = statedir.private(statedir.root())
    except OSError:
        return None
    return os.path.join(folder, f"resident-{_code_key()}.sock")


_FOLDERS: dict[str, int] = {}


def _address(path: str) -> str:
    """path as a unix socket's address: through a descriptor of its folder, opened without following
    a symlink and checked to be this user's and private. So the address names the very folder that was
    checked, and is short whatever the folder's path (a socket's address holds 107 bytes). OSError when
    the folder is not private."""
    folder, name = os.path.split(path)
    fd = _FOLDERS.get(folder)
    if fd is None:
        fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            os.close(fd)
            raise PermissionError(f"{folder} is not a private folder of this user")
        _FOLDERS[folder] = fd
    return f"/proc/self/fd/{fd}/{name}"


def _code_key(package: str = os.path.dirname(os.path.abspath(__file__))) -> str:
    """What decides which code a resident runs: the package's path, the newest modification time among
    its files, and the interpreter (its environment and its binary)."""
    import hashlib
    newest, folders = 0, [package]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        folders.append(entry.path)
                elif entry.name.endswith((".py", ".so")):
                    newest = max(newest, entry.stat().st_mtime_ns)
    return hashlib.sha256(f"{package}\0{newest}\0{sys.prefix}\0{os.path.realpath(sys.executable)}".encode()).hexdigest()[:16]


def _peer(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end."""
    pid, uid, _ = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid


def _connect(path: str) -> socket.socket | None:
    """A connection to the resident at path, if one listens there and runs as this user."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(_address(path))
        if _peer(conn)[1] == os.getuid():
            return conn
    except OSError:
        pass
    conn.close()
    return None


# ---- the client: the `flight-mcp` command ------------------------------------------------------

def run(argv: list[str]) -> int | None:
    """Runs `flight-mcp ARGV` in a child of this installation's resident (started if needed) and
    returns its exit status; None when there is no resident to use (the caller runs the command itself)."""
    path = socket_path()
    if path is None:
        return None
    conn = _connect(path) or _start(path)
    if conn is None:
        return None
    return exchange(conn, argv)


def exchange(conn: socket.socket, argv: list[str]) -> int:
    """Sends the command with this process's stdio, forwards signals to the child while it runs, and
    returns its exit status (re-raising the signal that killed it, as a shell would see it)."""
    send_frame(conn, {"op": "run", "args": argv, "env": dict(os.environ), "cwd": os.getcwd()}, (0, 1, 2))
    pid = _recv_int(conn)
    if pid is None:
        return _lost()
    previous = {sig: signal.signal(sig, lambda signum, _frame: _forward(pid, signum)) for sig in _FORWARDED}
    try:
        code = _recv_int(conn)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code is None:   # the resident died under its child: end the child as Ctrl-C would (cleanly)
        _forward(pid, signal.SIGINT)
        return _lost()
    if code < 0:   # killed by a signal: so are we
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _lost() -> int:
    print("error: flight-mcp's resident helper ended before the command did; run it again, or with "
          "FLIGHT_MCP_RESIDENT=0 to run it without the helper", file=sys.stderr)
    return 1


def _start(path: str) -> socket.socket | None:
    """Starts the resident for path (one at a time: a lock beside it) and connects to it."""
    import fcntl
    import subprocess
    folder = os.path.dirname(path)
    lock = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(path)   # another command started it while we waited
        if conn is not None:
            return conn
        log = os.path.join(folder, "resident.log")
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            # the package's own folder first on sys.path: the resident runs the very code the key names
            proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                 "from flight_mcp.resident import serve; serve(sys.argv[2])",
                 os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_fd, cwd="/",
                start_new_session=True)
        finally:
            os.close(log_fd)
        ready = _read_line(proc.stdout.fileno(), timeout=30.0)
        proc.stdout.close()
        if ready != b"READY":
            if proc.poll() is None:
                proc.kill()
            print(f"flight-mcp: the resident helper did not start (its log: {log}); running the command "
                  "without it", file=sys.stderr)
            return None
        return _connect(path)
    finally:
        os.close(lock)


def _read_line(fd: int, timeout: float) -> bytes:
    import select
    import time
    data, deadline = b"", time.monotonic() + timeout
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n")[0].strip()


def send_frame(conn: socket.socket, message: dict, fds=()) -> None:
    data = json.dumps(message).encode()
    socket.send_fds(conn, [_HEADER.pack(len(data)) + data], list(fds))


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    buf = b""
    while len(buf) < size:
        try:
            chunk = conn.recv(size - len(buf))
        except InterruptedError:
            continue
        if not chunk:
            return None
        buf += chunk
    return buf


def _recv_int(conn: socket.socket) -> int | None:
    data = _recv_exact(conn, _INT.size)
    return None if data is None else _INT.unpack(data)[0]


def stop(path: str) -> int | None:
    """Asks the resident at path to end; its pid, or None when none listens there."""
    conn = _connect(path)
    if conn is None:
        return None
    with conn:
        pid = _peer(conn)[0]
        send_frame(conn, {"op": "stop"})
        _recv_exact(conn, 1)   # EOF once it has stopped listening
    return pid


def stop_all(folder: str) -> list[int]:
    """Stops every resident whose socket is in folder (a state directory); their pids."""
    pids = []
    try:
        names = os.listdir(folder)
    except OSError:
        return pids
    for name in names:
        if name.startswith("resident-") and name.endswith(".sock"):
            pid = stop(os.path.join(folder, name))
            if pid is not None:
                pids.append(pid)
    return pids


# ---- the resident ------------------------------------------------------------------------------

def serve(path: str) -> None:
    """The resident's life: imports and builds what commands use, listens at path (replacing what was
    there atomically), says READY on stdout, then forks a child per command until idle or stopped."""
    os.umask(0o077)
    idle_s = float(os.environ.get("FLIGHT_MCP_RESIDENT_IDLE") or IDLE_S)
    warm_up()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address, fresh = _address(path), _address(f"{path}.{os.getpid()}")
    try:
        os.unlink(fresh)
    except FileNotFoundError:
        pass
    listener.bind(fresh)
    os.rename(fresh, address)   # atomically: a client finds the old socket or this one, never none
    inode = os.stat(address).st_ino
    listener.listen(64)

    def still_ours() -> bool:
        try:
            return os.stat(address).st_ino == inode
        except OSError:
            return False

    print("READY", flush=True)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)
    os.close(null)
    try:
        Loop(listener, idle_s=idle_s, still_ours=still_ours).run()
    finally:
        if still_ours():
            os.unlink(address)


def warm_up() -> None:
    """Imports every module a command uses and builds every pydantic model's validator, so that a
    child starts with nothing left to do but its command (models are built on first use: models.py)."""
    import importlib
    import pkgutil

    from . import cli
    cli._no_pydantic_plugins()
    import flight_mcp
    skip = {"flight_mcp.server", "flight_mcp.http_server", "flight_mcp.agent"}  # the MCP SDK; target code
    for info in pkgutil.walk_packages(flight_mcp.__path__, "flight_mcp.", onerror=lambda _name: None):
        if not any(info.name == s or info.name.startswith(s + ".") for s in skip):
            importlib.import_module(info.name)
    from .tools import all_tools
    from .tools.base import Params
    from .models import Fact
    all_tools()
    seen, todo = set(), [Params, Fact]
    while todo:
        model = todo.pop()
        for sub in model.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    for model in seen:
        model.model_rebuild(force=True)
    cli._parser()


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
            if _peer(conn)[1] != os.getuid():
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
            conn.sendall(_INT.pack(pid))
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
                conn.sendall(_INT.pack(os.waitstatus_to_exitcode(status)))
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
        if len(data) < _HEADER.size:
            raise ValueError("short request")
        size = _HEADER.unpack_from(data)[0]
        if size > _MAX_REQUEST:
            raise ValueError("request too large")
        body = data[_HEADER.size:]
        if len(body) < size:
            rest = _recv_exact(conn, size - len(body))
            if rest is None:
                raise ValueError("truncated request")
            body += rest
        message = json.loads(body)
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
    import logging
    import threading
    import traceback
    import warnings

    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
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
    logging.root.handlers.clear()
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


if __name__ == "__main__" and sys.argv[1:2] == ["connect"]:
    # `python -S resident.py connect SOCKET ARG...`: a command that behaves as `flight-mcp ARG...`
    # through the resident (or zygote) at SOCKET; 125 if there is none
    _conn = _connect(sys.argv[2])
    sys.exit(125 if _conn is None else exchange(_conn, sys.argv[3:]))
