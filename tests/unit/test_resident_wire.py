"""The resident helper's pieces that need no process: which command lines go to it (front.py), which code
a resident runs (its key), how its socket is addressed (only through a private folder of ours), and its
wire format (requests with their fds, refused when malformed). tests/test_resident.py runs the real one."""
from __future__ import annotations

import os
import socket
import struct

import pytest

from flight_mcp import front, resident
from flight_mcp.resident_server import _recv_request


@pytest.mark.parametrize("argv, wanted", [
    (["123", "--cmd", "stack"], True),
    (["123", "--cmd=getglobal __main__ CONFIG", "--json"], True),
    (["--workers-of", "5", "--cmd", "stack"], True),
    (["123,456", "--cmd", "stack"], True),
    (["123"], False),                                   # the interactive session needs this terminal
    (["123", "--cmd", "console"], False),               # so does the interactive console
    (["123", "--cmd", "console print(1)"], False),
    (["123", "--cmd"], False),                          # argparse says what is missing
    (["--stdio"], False),
    (["--http", "8765"], False),
    (["123", "--cmd", "stack", "--help"], False),
    (["--version"], False),
    (["ps"], False),
    (["demo"], False),
])
def test_which_command_lines_go_to_the_resident(argv, wanted):
    assert front.wants_resident(argv, env={}) is wanted


def test_the_resident_can_be_turned_off():
    assert not front.wants_resident(["123", "--cmd", "stack"], env={"FLIGHT_MCP_RESIDENT": "0"})
    assert front.wants_resident(["123", "--cmd", "stack"], env={"FLIGHT_MCP_RESIDENT": "1"})


def test_the_key_follows_the_code_and_nothing_else(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub" / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    (package / "sub" / "__pycache__" / "b.cpython-311.pyc").write_bytes(b"")
    (package / "notes.txt").write_text("")
    key = resident._code_key(str(package))
    assert key == resident._code_key(str(package))
    later = os.stat(package / "a.py").st_mtime_ns + 10**9
    for unrelated in (package / "sub" / "__pycache__" / "b.cpython-311.pyc", package / "notes.txt"):
        os.utime(unrelated, ns=(later, later))
        assert resident._code_key(str(package)) == key, unrelated
    os.utime(package / "sub" / "b.py", ns=(later, later))   # an edited source: a new resident
    assert resident._code_key(str(package)) != key
    assert resident._code_key(str(package)) != resident._code_key(str(tmp_path))   # another installation


def test_a_socket_is_addressed_only_through_a_private_folder_of_ours(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    long_name = "resident-" + "x" * 150 + ".sock"   # far longer than a socket address may be
    where = resident.address(str(private / long_name))
    assert where.startswith("/proc/self/fd/") and where.endswith(long_name)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(resident.address(str(private / "short.sock")))
    listener.listen(1)
    conn = resident.connect(str(private / "short.sock"))
    assert conn is not None and resident.peer(conn) == (os.getpid(), os.getuid())
    conn.close()
    listener.close()
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    with pytest.raises(PermissionError):
        resident.address(str(loose / "s.sock"))
    (tmp_path / "link").symlink_to(private)
    with pytest.raises(OSError):
        resident.address(str(tmp_path / "link" / "s.sock"))
    assert resident.connect(str(loose / "s.sock")) is None   # a client then runs the command itself
    assert resident.connect(str(private / "nobody-listens.sock")) is None


def test_a_request_carries_its_fds_and_a_malformed_one_is_refused():
    r, w = os.pipe()
    try:
        client, server = socket.socketpair(socket.AF_UNIX)
        message = {"op": "run", "args": ["1", "--cmd", "stack"], "env": {"K": "v\udcff"}, "cwd": "/"}
        resident.send_frame(client, message, (r, w, w))
        got, fds = _recv_request(server)
        assert got == message and len(fds) == 3
        os.write(fds[1], b"through the passed fd")
        assert os.read(r, 100) == b"through the passed fd"
        for fd in fds:
            os.close(fd)
        for frame in (b"\x00\x01", struct.pack("!I", 64 << 20) + b"x",      # short; over the size limit
                      struct.pack("!I", 100) + b"cut short",                  # then the client is gone
                      struct.pack("!I", 3) + b"xyz"):                         # not marshal data
            client.close()
            client, server = socket.socketpair(socket.AF_UNIX)
            client.sendall(frame)
            client.shutdown(socket.SHUT_WR)
            server.settimeout(5)
            with pytest.raises(ValueError):
                _recv_request(server)
        client.close()
    finally:
        os.close(r)
        os.close(w)


def test_stopping_residents_of_an_absent_folder_stops_none(tmp_path):
    assert resident.stop_all(str(tmp_path / "absent")) == []
    (tmp_path / "resident-dead.sock").write_text("")   # not a socket: nothing listens
    assert resident.stop_all(str(tmp_path)) == []


def test_a_command_through_the_resident_imports_next_to_nothing():
    """What every command pays before its resident answers: front.py's and resident.py's module-level
    imports, builtin modules only (socket and signal would import enum; json, re)."""
    import ast
    allowed = {"front.py": {"__future__", "os", "sys"},
               "resident.py": {"__future__", "_signal", "_socket", "marshal", "os", "struct", "sys"}}
    for name, modules in allowed.items():
        tree = ast.parse(open(os.path.join(os.path.dirname(front.__file__), name)).read())
        imported = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "." for node in tree.body if isinstance(node, ast.ImportFrom)}
        assert imported <= modules, (name, imported - modules)
