"""How a one-shot command (`flight-mcp PID --cmd ...`) reaches the user's resident helper
(resident_server.py): a process of this user that has imported the command line once and forks a child
per command, the way Mercurial's chg and Android's zygote start programs. A command then costs a fork
instead of its interpreter's imports and model builds (~0.3-0.5 s).

- The `flight-mcp` command (front.py) connects to the resident of its installation, starting it when there
  is none, and sends its argv, environment and cwd with its stdin/stdout/stderr attached (SCM_RIGHTS). The
  child takes those fds as its own 0/1/2 and runs `flight_mcp.cli.main(argv)`, exactly what the command
  would have run: same output (a terminal stays a terminal), same exit status. The command forwards the
  signals it gets (Ctrl-C ends a watch cleanly) to the child, and exits with the child's status.
- Who can reach it: the socket lies in the user's private state directory (statedir.private: this
  user's, 0700, not a symlink), is reached through a descriptor of that very folder, and each end checks
  the other's uid (SO_PEERCRED) before a byte is read.
- Which code it runs: one resident per installation and version of the code: the socket's name holds the
  package's path, its files' newest modification time and the interpreter, so an upgrade or an edited
  source tree starts a new one; an old one ends when idle.
- Lifetime: it ends after IDLE_S seconds without a command (FLIGHT_MCP_RESIDENT_IDLE), when its socket is
  removed or replaced, or on `{"op": "stop"}`. It holds no connection to any target between commands:
  each child attaches and detaches as the command alone would.
- FLIGHT_MCP_RESIDENT=0 turns it off: every command imports and runs in its own process.

Wire format: a request is a 4-byte big-endian length and that many bytes of marshal data (a dict: both
ends run the same interpreter, and only this user's processes get this far); the answer to "run" is the
child's pid, then its exit status (4-byte signed ints; -N: killed by signal N).

Builtin modules only at module level (_socket and _signal, not socket and signal, whose enums cost more
to import than all the rest): every command pays this module's imports. It also runs as a script
(`python -S resident.py connect SOCKET ARG...`) for the tests (tests/cli_zygote.py).
"""
from __future__ import annotations

import _signal
import _socket
import marshal
import os
import struct
import sys

IDLE_S = 600.0
HEADER = struct.Struct("!I")
INT = struct.Struct("!i")
_PEERCRED = struct.Struct("3i")   # struct ucred: pid, uid, gid
_FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2)


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


def address(path: str) -> str:
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
    import zlib
    newest, folders = 0, [package]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        folders.append(entry.path)
                elif entry.name.endswith((".py", ".so")):
                    newest = max(newest, entry.stat().st_mtime_ns)
    where = f"{package}\0{sys.prefix}\0{os.path.realpath(sys.executable)}".encode()
    return f"{zlib.crc32(where):08x}-{newest:x}"


def peer(conn) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a unix socket."""
    pid, uid, _ = _PEERCRED.unpack(conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid


def connect(path: str):
    """A connection to the resident at path, if one listens there and runs as this user."""
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        conn.connect(address(path))
        if peer(conn)[1] == os.getuid():
            return conn
    except OSError:
        pass
    conn.close()
    return None


# ---- the client: the `flight-mcp` command ------------------------------------------------------

def run(argv: list[str]) -> int | None:
    """Runs `flight-mcp ARGV` in a child of this installation's resident and returns its exit status;
    None when no resident listens (the caller runs the command itself, then start()s one)."""
    path = socket_path()
    conn = connect(path) if path is not None else None
    return None if conn is None else exchange(conn, argv)


def start() -> None:
    """Starts this installation's resident in the background, unless one is starting already: the
    lock beside its socket is held, by the resident it is handed to, until it listens. Called after a
    command that found none has answered, so that its warm-up does not compete with that command."""
    import fcntl
    import subprocess
    path = socket_path()
    if path is None:
        return
    lock = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return
    log = os.open(os.path.join(os.path.dirname(path), "resident.log"),
                  os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    # the package's own folder first on sys.path (cwd / has none): the resident runs the very code the key
    # names. `-m flight_mcp...`: what `ps` knows for flight-mcp's own (tools/processes.py)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
    try:
        subprocess.Popen([sys.executable, "-m", "flight_mcp.resident_server", path, str(lock)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd="/", env=env,
                         start_new_session=True, pass_fds=(lock,))
    finally:
        os.close(log)
        os.close(lock)


def exchange(conn, argv: list[str]) -> int:
    """Sends the command with this process's stdio, forwards signals to the child while it runs, and
    returns its exit status (re-raising the signal that killed it, as a shell would see it). OSError
    only while sending: once sent, the command may be running, and is never run a second time."""
    send_frame(conn, {"op": "run", "args": argv, "env": dict(os.environ), "cwd": os.getcwd()}, (0, 1, 2))
    pid = recv_int(conn)
    if pid is None:
        return _lost()
    previous = {sig: _signal.signal(sig, lambda signum, _frame: _forward(pid, signum)) for sig in _FORWARDED}
    try:
        code = recv_int(conn)
    finally:
        for sig, handler in previous.items():
            _signal.signal(sig, handler)
    if code is None:   # the resident died under its child: end the child as Ctrl-C would (cleanly)
        _forward(pid, _signal.SIGINT)
        return _lost()
    if code < 0:   # killed by a signal: so are we
        _signal.signal(-code, _signal.SIG_DFL)
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


def send_frame(conn, message: dict, fds=()) -> None:
    data = marshal.dumps(message)
    ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
    conn.sendmsg([HEADER.pack(len(data)) + data], ancillary)


def recv_exact(conn, size: int) -> bytes | None:
    buf = b""
    while len(buf) < size:
        try:
            chunk = conn.recv(size - len(buf))
        except InterruptedError:
            continue
        except ConnectionError:   # the other end is gone: as EOF (a timeout still raises)
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def recv_int(conn) -> int | None:
    data = recv_exact(conn, INT.size)
    return None if data is None else INT.unpack(data)[0]


def stop(path: str) -> int | None:
    """Asks the resident at path to end; its pid, or None when none listens there."""
    conn = connect(path)
    if conn is None:
        return None
    try:
        pid = peer(conn)[0]
        send_frame(conn, {"op": "stop"})
        recv_exact(conn, 1)   # EOF once it has stopped listening
    finally:
        conn.close()
    return pid


def running(folder: str) -> dict[str, int]:
    """socket path -> pid of every resident listening in folder (a state directory)."""
    found = {}
    try:
        names = os.listdir(folder)
    except OSError:
        return found
    for name in names:
        if name.startswith("resident-") and name.endswith(".sock"):
            conn = connect(os.path.join(folder, name))
            if conn is not None:
                found[os.path.join(folder, name)] = peer(conn)[0]
                conn.close()
    return found


def stop_all(folder: str) -> list[int]:
    """Stops every resident whose socket is in folder (a state directory); their pids."""
    return [pid for pid in map(stop, running(folder)) if pid is not None]


if __name__ == "__main__" and sys.argv[1:2] == ["connect"]:
    # `python -S resident.py connect SOCKET ARG...`: a command that behaves as `flight-mcp ARG...`
    # through the resident (or zygote) at SOCKET; 125 if there is none
    _conn = connect(sys.argv[2])
    sys.exit(125 if _conn is None else exchange(_conn, sys.argv[3:]))
