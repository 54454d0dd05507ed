"""Start `flight-mcp` processes without paying its imports each time (~0.5 s for a command, ~1.5 s for
the MCP server with the SDK): a zygote process imports flight_mcp once, then forks one child per
request; the child takes the requester's stdin/stdout/stderr (passed over a unix socket), argv,
environment and cwd, and runs the real entry point `flight_mcp.cli.main(argv)` in a process of its own
that exits with main's exit code. The zygote never runs flight_mcp code itself, so every child starts
from freshly imported modules, as a new interpreter would.

Requesters:
- `LAUNCHER` is a few lines run as `python -S -c LAUNCHER SOCKET ARG...`: a command that behaves as
  `python -m flight_mcp.cli ARG...` (same stdio, exit status, signals forwarded), for code that needs
  a command line, like the MCP SDK's stdio_client (tests/mcp_client.py).
- `run(args, stdin, stdout, stderr)` from the test process (tests/conftest.py flight_cli).

Stdlib only: the zygote imports it before flight_mcp, the launcher does not import it at all.
"""
from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading

_HEADER = struct.Struct("!I")
_INT = struct.Struct("!i")

# Run with `python -S -c LAUNCHER SOCKET ARG...` (-S: no site import; all it needs is in the stdlib).
LAUNCHER = r'''
import json, os, signal, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
data = json.dumps({"args": sys.argv[2:], "env": dict(os.environ), "cwd": os.getcwd()}).encode()
socket.send_fds(s, [struct.pack("!I", len(data)) + data], [0, 1, 2])
null = os.open(os.devnull, os.O_RDWR)  # the child has our stdio now; keep none, so EOF comes when it exits
for fd in (0, 1, 2):
    os.dup2(null, fd)
def recv_int():
    buf = b""
    while len(buf) < 4:
        chunk = s.recv(4 - len(buf))
        if not chunk:
            os._exit(125)  # the zygote died
        buf += chunk
    return struct.unpack("!i", buf)[0]
pid = recv_int()
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(sig, lambda signum, frame: os.kill(pid, signum))
code = recv_int()
if code < 0:  # killed by a signal: so are we, as the caller would see it from the real process
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
os._exit(code)
'''


# ---- the child: a fresh `python -m flight_mcp.cli ARGS` ---------------------------------------

def become_cli(args: list[str], env: dict | None = None, cwd: str | None = None) -> int:
    """In a forked child whose fds 0/1/2 are already the caller's: close every other fd, restore the
    interpreter's default signal dispositions and hooks, drop the parent's atexit handlers, run main()
    as the console script does (`sys.exit(main())`), then exit like the interpreter (non-daemon threads
    joined, atexit handlers run, streams flushed). Returns the exit code for os._exit."""
    import faulthandler
    import io
    import logging
    import traceback
    import warnings

    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    faulthandler.disable()
    for sig in (signal.SIGTERM, signal.SIGALRM, signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.set_wakeup_fd(-1)
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
        os.chdir(cwd)
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


# ---- the zygote --------------------------------------------------------------------------------

def _preload() -> None:
    import importlib
    import pkgutil

    import flight_mcp.cli  # noqa: F401
    import flight_mcp.server  # noqa: F401  (the MCP SDK: most of the time saved)
    for pkg in ("flight_mcp.tools", "flight_mcp.attach"):
        mod = importlib.import_module(pkg)
        for info in pkgutil.iter_modules(mod.__path__):
            importlib.import_module(f"{pkg}.{info.name}")


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]] | None:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < _HEADER.size:
        for fd in fds:
            os.close(fd)
        return None
    size = _HEADER.unpack_from(data)[0]
    data = data[_HEADER.size:]
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return json.loads(data), fds


def serve(path: str) -> None:
    """The zygote's loop: one child per connection; exits (killing its children) when stdin closes."""
    _preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(sys.stdin, selectors.EVENT_READ, "parent")
    children: dict[int, socket.socket] = {}
    print("READY", flush=True)
    try:
        while True:
            for key, _ in sel.select(timeout=0.02):
                if key.data == "parent":
                    if not os.read(sys.stdin.fileno(), 1024):
                        return  # the test process is gone
                elif key.data == "accept":
                    conn, _ = listener.accept()
                    sel.register(conn, selectors.EVENT_READ, "request")
                elif key.data == "request":
                    conn = key.fileobj
                    sel.unregister(conn)
                    request = _recv_request(conn)
                    if request is None:
                        conn.close()
                        continue
                    pid = _fork_child(request, listener, conn)
                    children[pid] = conn
                    conn.sendall(_INT.pack(pid))
                    sel.register(conn, selectors.EVENT_READ, ("child", pid))
                else:  # the requester went away (or wrote) while its child runs: a dead launcher
                    conn, pid = key.fileobj, key.data[1]
                    try:
                        gone = not conn.recv(1, socket.MSG_PEEK)
                    except OSError:
                        gone = True
                    if gone:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        sel.unregister(conn)
            while children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                conn = children.pop(pid, None)
                if conn is None:
                    continue
                try:
                    sel.unregister(conn)
                except KeyError:
                    pass
                try:
                    conn.sendall(_INT.pack(os.waitstatus_to_exitcode(status)))
                except OSError:
                    pass
                conn.close()
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _fork_child(request: tuple[dict, list[int]], listener: socket.socket, conn: socket.socket) -> int:
    message, fds = request
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            listener.close()
            conn.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            code = become_cli(message["args"], message.get("env"), message.get("cwd"))
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    return pid


# ---- the test process's side -------------------------------------------------------------------

_zygote: dict = {}
_lock = threading.Lock()


def socket_path() -> str:
    """The zygote's socket, starting the zygote on first use (one per test process; it ends with it)."""
    with _lock:
        if _zygote.get("proc") is not None and _zygote["proc"].poll() is None:
            return _zygote["path"]
        folder = tempfile.mkdtemp(prefix="flight-zygote-")
        path = os.path.join(folder, "sock")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from tests.cli_zygote import serve; "
                                 "serve(sys.argv[1])", path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                cwd=root)
        line = proc.stdout.readline()
        if line.strip() != b"READY":
            proc.kill()
            raise RuntimeError(f"the flight-mcp zygote did not start (exit {proc.wait()})")
        _zygote.update(proc=proc, path=path)
        atexit.register(_stop, proc, folder)
        return path


def _stop(proc: subprocess.Popen, folder: str) -> None:
    proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    try:
        os.unlink(os.path.join(folder, "sock"))
        os.rmdir(folder)
    except OSError:
        pass


def launcher_command(args: list[str]) -> tuple[str, list[str]]:
    """(command, args) that behave as `python -m flight_mcp.cli ARGS`, started by the zygote."""
    return sys.executable, ["-S", "-c", LAUNCHER, socket_path(), *args]


class Started:
    """A child started by the zygote for this process: its pid, and its exit code when it ends."""

    def __init__(self, conn: socket.socket, pid: int):
        self.conn = conn
        self.pid = pid

    def wait(self, timeout: float | None) -> int | None:
        """The exit code (-N: killed by signal N), or None if it did not end within timeout."""
        self.conn.settimeout(timeout)
        buf = b""
        try:
            while len(buf) < _INT.size:
                chunk = self.conn.recv(_INT.size - len(buf))
                if not chunk:
                    raise RuntimeError("the flight-mcp zygote died")
                buf += chunk
        except socket.timeout:
            return None
        self.conn.close()
        return _INT.unpack(buf)[0]

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start(args: list[str], stdin: int, stdout: int, stderr: int) -> Started:
    """Starts `flight_mcp.cli.main(args)` in a zygote child with these fds as its stdio, this
    process's environment and cwd."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(socket_path())
    data = json.dumps({"args": args, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    socket.send_fds(conn, [_HEADER.pack(len(data)) + data], [stdin, stdout, stderr])
    buf = b""
    while len(buf) < _INT.size:
        chunk = conn.recv(_INT.size - len(buf))
        if not chunk:
            raise RuntimeError("the flight-mcp zygote died")
        buf += chunk
    return Started(conn, _INT.unpack(buf)[0])
