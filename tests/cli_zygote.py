"""Start `flight-mcp` processes without paying its imports each time (~0.5 s for a command, ~1.5 s for
the MCP server with the SDK): a zygote imports flight_mcp once, then forks one child per request; the
child takes the requester's stdin/stdout/stderr (passed over a unix socket), argv, environment and cwd,
and runs the real entry point `flight_mcp.cli.main(argv)` in a process of its own that exits with main's
exit code. It is the product's resident helper (flight_mcp/resident.py, resident_server.py: its loop,
its child, its wire format), with the MCP SDK imported as well, a socket in a private temporary folder,
and a life bound to the test process's (its stdin).

Requesters:
- `launcher_command(args)`: a command line that behaves as `python -m flight_mcp.cli ARG...` (same stdio,
  exit status, signals forwarded), for code that needs a command line, like the MCP SDK's stdio_client
  (tests/mcp_client.py): resident.py run as a script, `python -S resident.py connect SOCKET ARG...`.
- `start(args, stdin, stdout, stderr)` from the test process (tests/conftest.py flight_cli).
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading

from flight_mcp import resident, resident_server


def serve(path: str) -> None:
    """The zygote: the resident's warm-up plus the MCP SDK, then its loop until stdin closes."""
    resident_server.warm_up()
    import flight_mcp.server  # noqa: F401  (the MCP SDK: most of the time saved)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print("READY", flush=True)
    resident_server.Loop(listener, parent_fd=sys.stdin.fileno()).run()


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
    return sys.executable, ["-S", resident.__file__, "connect", socket_path(), *args]


class Started:
    """A child started by the zygote for this process: its pid, and its exit code when it ends."""

    def __init__(self, conn: socket.socket, pid: int):
        self.conn = conn
        self.pid = pid

    def wait(self, timeout: float | None) -> int | None:
        """The exit code (-N: killed by signal N), or None if it did not end within timeout."""
        self.conn.settimeout(timeout)
        try:
            code = resident.recv_int(self.conn)
        except socket.timeout:
            return None
        if code is None:
            raise RuntimeError("the flight-mcp zygote died")
        self.conn.close()
        return code

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
    resident.send_frame(conn, {"op": "run", "args": args, "env": dict(os.environ), "cwd": os.getcwd()},
                        (stdin, stdout, stderr))
    pid = resident.recv_int(conn)
    if pid is None:
        raise RuntimeError("the flight-mcp zygote died")
    return Started(conn, pid)
