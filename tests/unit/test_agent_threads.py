"""In-process checks of slice "agent threads": the built libraries' glibc needs, the stack the
agent's threads get (through the C extension and through the ctypes fallback) whatever this
process set with threading.stack_size(), and what trace says when its Python recorder records."""
import ctypes
import glob
import os
import platform
import struct
import threading

import pytest

from flight_mcp.agent import native, server
from flight_mcp.tools import trace as trace_tool

PKG = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + "/flight_mcp"
# The oldest glibc each library must load into: the payload goes into any target (glibc's first
# version on the architecture); the recorder into what CPython 3.8 supports (manylinux2014).
FLOOR = {"x86_64": {"payload": (2, 2, 5), "recorder": (2, 17)},
         "aarch64": {"payload": (2, 17), "recorder": (2, 17)}}


def glibc_versions(path):
    """{version tuple: [file needing it]} from the ELF's .gnu.version_r (what the loader checks)."""
    data = open(path, "rb").read()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "a 64-bit little-endian ELF"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    found = {}
    for name, kind, flags, addr, offset, size, link, info, align, entsize in sections:
        if kind != 0x6FFFFFFE:   # SHT_GNU_verneed
            continue
        strtab = sections[link][4]
        text = lambda at: data[strtab + at:data.index(b"\0", strtab + at)].decode()
        pos = offset
        for _ in range(info):
            _, count, file_at, aux, nxt = struct.unpack_from("<HHIII", data, pos)
            at = pos + aux
            for _ in range(count):
                _, _, _, name_at, aux_next = struct.unpack_from("<IHHII", data, at)
                name = text(name_at)
                if name.startswith("GLIBC_") and name[6:].replace(".", "").isdigit():
                    found.setdefault(tuple(int(x) for x in name[6:].split(".")), []).append(text(file_at))
                at += aux_next
            pos += nxt
    return found


@pytest.mark.parametrize("kind,pattern", [("payload", "payload/_flight_payload*.so"),
                                          ("recorder", "agent/_flight_mcp_recorder*.so"),
                                          ("recorder", "agent/_flight_mcp_hook*.so")])
def test_built_libraries_load_into_older_glibc(kind, pattern):
    floor = FLOOR.get(platform.machine())
    if floor is None:
        pytest.skip("no glibc floor known for %s" % platform.machine())
    paths = glob.glob(os.path.join(PKG, pattern))
    assert paths, "not built: pip install -e ."
    for path in paths:
        needs = glibc_versions(path)
        assert needs, "%s needs no glibc version at all: the parser is wrong" % path
        too_new = {v: f for v, f in needs.items() if v > floor[kind]}
        assert not too_new, "%s needs glibc %s, newer than %s: pin those symbols" % (path, too_new, floor[kind])


_libc = ctypes.CDLL(None)
_libc.pthread_self.restype = ctypes.c_ulong


def _actual_stack():
    attr = ctypes.create_string_buffer(256)
    size = ctypes.c_size_t()
    assert _libc.pthread_getattr_np(ctypes.c_ulong(_libc.pthread_self()), attr) == 0
    _libc.pthread_attr_getstacksize(attr, ctypes.byref(size))
    _libc.pthread_attr_destroy(attr)
    return size.value


@pytest.fixture
def small_stack_setting():
    """This process chose a small stack for its threads, as a target may; restored afterwards."""
    old = threading.stack_size(256 * 1024)
    yield 256 * 1024
    threading.stack_size(old)


def _setting():
    """threading.stack_size() as the target sees it (called without an argument it also resets it)."""
    size = threading.stack_size()
    threading.stack_size(size)
    return size


def _run_on(start):
    """Runs a probe on a thread started by start(fn); returns what it saw."""
    seen, done = {}, threading.Event()

    def probe():
        seen["stack"] = _actual_stack()
        seen["agent"] = threading.get_ident() in server.AGENT_THREADS
        done.set()
    ident = start(probe)
    assert done.wait(10), "the thread never ran"
    return ident, seen


@pytest.mark.timeout(30)
def test_agent_threads_get_our_stack_not_the_targets(small_stack_setting):
    assert native.extension()[0] is not None, native.extension()[1]
    ident, seen = _run_on(server.start_thread)
    assert seen == {"stack": server.STACK_BYTES, "agent": True}
    assert isinstance(ident, int) and ident
    assert _setting() == small_stack_setting               # the setting, as the target sees it
    t = threading.Thread(target=lambda: seen.update(after=_actual_stack()))
    t.start()
    t.join()
    assert seen["after"] == small_stack_setting             # and what its next thread gets


@pytest.mark.timeout(30)
def test_ctypes_fallback_gives_the_same_stack(small_stack_setting):
    start = server._make_ctypes_starter()
    _, seen = _run_on(lambda fn: start(fn))
    assert seen["stack"] == server.STACK_BYTES and _setting() == small_stack_setting


def test_native_load_failures_name_the_cause_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(native, "_AGENT_DIR", str(tmp_path))
    module, why = native._load("_flight_mcp_recorder")
    assert module is None and "missing" in why and "reinstall" in why
    (tmp_path / "_flight_mcp_recorder.abi3.so").write_bytes(b"not an ELF file")
    module, why = native._load("_flight_mcp_recorder")
    assert module is None and "_flight_mcp_recorder.abi3.so" in why and "could not be loaded" in why


def test_trace_says_when_and_why_the_python_recorder_recorded():
    base = dict(target="__main__.f", kind="function", file="t.py", line=1, mechanism="sys.monitoring",
                started=1767225600.0, duration_s=1.0, seen=1, matched=1, captured=0, limit=1,
                stopped="deadline", depth=-1, interval=0.1, entrance_time=0.0, invocations=[])
    why = "_flight_mcp_recorder.abi3.so could not be loaded into this process (GLIBC_2.34 not found)"
    text = trace_tool.render(trace_tool.TraceResult(**base, recorder="python", recorder_fallback=why), False)
    assert "Python recorder" in text and why in text and "30-90x" in text
    text = trace_tool.render(trace_tool.TraceResult(**base, recorder="c"), False)
    assert "Python recorder" not in text


def test_every_agent_thread_starts_through_server_start_thread():
    """A thread started any other way would inherit the target's stack size (and escape
    AGENT_THREADS, which keeps our frames out of stack output and traces)."""
    import re
    agent = os.path.join(PKG, "agent")
    starts = re.compile(r"start_new_thread|start_joinable_thread|\bThread\(|pthread_create|_thread\.start")
    offenders = []
    for name in sorted(os.listdir(agent)):
        if name.endswith(".py") and name != "server.py":
            for number, line in enumerate(open(os.path.join(agent, name)), 1):
                if starts.search(line) and not line.lstrip().startswith("#"):
                    offenders.append("%s:%d: %s" % (name, number, line.strip()))
    assert not offenders, "start agent threads with server.start_thread: %s" % offenders


def test_trace_fallback_reason_from_the_agent(monkeypatch):
    from flight_mcp.agent import recording
    monkeypatch.setenv("FLIGHT_MCP_PY_RECORDER", "1")
    module, why = recording._c_recorder()
    assert module is None and "FLIGHT_MCP_PY_RECORDER=1" in why
    monkeypatch.delenv("FLIGHT_MCP_PY_RECORDER")
    module, why = recording._c_recorder()
    assert module is not None and why is None, why
