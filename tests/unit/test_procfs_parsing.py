"""procfs: the /proc parsers on sample text, and the readers on this test process itself (no process
is started)."""
import os
import threading
import time

import pytest

from flight_mcp import procfs
from flight_mcp.attach import pidns, procs, safepoint
from flight_mcp.attach.bootstrap import RuntimeDir

pytestmark = pytest.mark.timeout(30)

# A command name may hold spaces and parentheses: the fields count from the last ')'.
STAT = ("4242 (my (odd) prog) S 4200 4242 22459 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 3 0 1281703 3133440 383 "
        "18446744073709551615 1 2 3 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n")

MAPS = """\
55d1c0a00000-55d1c0a01000 r--p 00000000 08:01 1234   /usr/bin/python3.12
7f1e2a000000-7f1e2a200000 r-xp 00000000 08:01 5678   /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2b000000-7f1e2b100000 r-xp 00000000 08:01 91011  /usr/lib/libpython3.12.so.1.0
7f1e2c000000-7f1e2c001000 rw-p 00000000 00:00 0
7f1e2d000000-7f1e2d010000 r-xp 00000000 00:2a 777    /tmp/flight-mcp-0/inject-4242-0a1b2c3d4e5f.so (deleted)
7f1e2e000000-7f1e2e001000 r--p 00000000 08:01 31337  /home/u/my dir/lib with spaces.so
7ffc4e3e0000-7ffc4e401000 rw-p 00000000 00:00 0      [stack]
garbage line
"""

STATUS = "Name:\tpython3\nState:\tS (sleeping)\nTgid:\t4242\nTracerPid:\t99\nUid:\t1000\t1000\t1000\t1000\n"


def test_stat_counts_fields_from_the_last_parenthesis():
    st = procfs.parse_stat(STAT)
    assert (st.state, st.ppid, st.start_time) == ("S", 4200, "1281703")
    assert procfs.parse_stat("4242 (truncated") is None


def test_maps_lines_with_anonymous_deleted_and_spaced_paths():
    maps = procfs.parse_maps(MAPS)
    assert len(maps) == 7  # the garbage line is skipped
    assert (maps[0].start, maps[0].end, maps[0].path) == (0x55d1c0a00000, 0x55d1c0a01000, "/usr/bin/python3.12")
    assert maps[3].path == ""
    assert maps[4].path.endswith(".so (deleted)")
    assert maps[5].path == "/home/u/my dir/lib with spaces.so"
    assert maps[6].path == "[stack]"


def test_status_and_syscall():
    st = procfs.parse_status(STATUS)
    assert st["TracerPid"] == "99" and st["State"] == "S (sleeping)" and st["Uid"].split()[0] == "1000"
    assert procfs.parse_syscall("running\n") == (None, [])
    assert procfs.parse_syscall("-1 0x7ffc 0x0\n") == (-1, ["0x7ffc", "0x0"])
    assert procfs.parse_syscall("202 0x7f1e2a0000f0 0x80 0x0\n") == (202, ["0x7f1e2a0000f0", "0x80", "0x0"])


def test_runtime_dir_knows_its_payload_in_the_maps():
    maps = procfs.parse_maps(MAPS)
    assert RuntimeDir(4242, 0, 0).payload_mapped(maps)
    assert not RuntimeDir(424, 0, 0).payload_mapped(maps)  # a prefix of another pid's name is not ours
    assert not RuntimeDir(4242, 0, 0).payload_mapped([])


def test_readers_on_this_process():
    me = os.getpid()
    assert procfs.exists(me) and procfs.alive(me)
    assert procfs.state(me) in ("R", "S")
    assert procfs.identity(me) == procfs.identity(me) and procfs.identity(me)[1]
    assert procfs.exe(me) == os.readlink("/proc/self/exe")
    assert procfs.owner(me) == (os.stat("/proc/self").st_uid, os.stat("/proc/self").st_gid)
    assert procfs.root(me, "/tmp") == f"/proc/{me}/root/tmp"
    assert any(m.path == procfs.exe(me) or "libpython" in m.path for m in procfs.maps(me))
    assert me in procfs.threads(me)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert t.native_id in procfs.threads(me) and procfs.thread_count(me) >= 2
        # A thread blocked in a futex wait: a system call (safe or not is safepoint's business).
        deadline = time.monotonic() + 5
        nr, _args = procfs.syscall(me, t.native_id)
        while nr is None and time.monotonic() < deadline:  # until it has reached its wait
            time.sleep(0.001)
            nr, _args = procfs.syscall(me, t.native_id)
        assert nr is not None and nr >= 0
    finally:
        stop.set()
        t.join()
    assert procs.python_version(me) is not None


def test_readers_say_unknown_for_a_gone_process():
    gone = 4_000_000
    while os.path.exists(f"/proc/{gone}"):
        gone -= 1
    assert not procfs.exists(gone) and not procfs.alive(gone)
    assert procfs.state(gone) is None and procfs.stat(gone) is None and procfs.maps(gone) is None
    assert procfs.identity(gone) == (gone, "") and procfs.threads(gone) == [] and procfs.tracer(gone) == 0
    assert not procfs.mapped(gone, "python") and procfs.status(gone) == {}
    assert safepoint.survey(gone) == []
    with pytest.raises(FileNotFoundError):
        procfs.owner(gone)


# -- namespaces -----------------------------------------------------------------------------------------
def test_nspid_ours_first_innermost_last():
    status = procfs.parse_status("Name:\tpython3\nNSpid:\t13104\t1\nNStgid:\t13104\t1\n")
    assert procfs.parse_nspid(status["NSpid"]) == [13104, 1]
    assert procfs.parse_nspid("4242") == [4242] and procfs.parse_nspid("") == [] and procfs.parse_nspid("x 1") == []


def test_id_maps_translate_outside_ids_inside():
    rootless = procfs.parse_id_map("         0       1000          1\n         1     100000      65536\nbad\n")
    assert rootless == [(0, 1000, 1), (1, 100000, 65536)]
    assert procfs.map_inside(rootless, 1000) == 0 and procfs.map_inside(rootless, 100005) == 6
    assert procfs.map_inside(rootless, 0) is None and procfs.map_inside(rootless, 165536) is None
    assert procfs.map_inside(procfs.parse_id_map("0 0 4294967295\n"), 4242) == 4242  # no namespace of its own


def test_this_process_shares_our_namespaces():
    me = os.getpid()
    assert procfs.ns_pid(me) == me and pidns.translator(me) is None
    assert procfs.ns_tids(me)[threading.get_native_id()] == threading.get_native_id()
    assert procfs.map_inside(procfs.id_map(me), os.geteuid()) == os.geteuid()


def test_translator_turns_the_agents_ids_into_ours():
    t = pidns.Translator(13104, 1)
    t.tids, t._read_at = {1: 13104, 3: 13106}, time.monotonic() + 3600  # no /proc reading in this test
    msg = {"id": 4, "started": {"queued_s": 0.7, "threads": {"1": "MainThread", "3": "w", "9": "gone"}},
           "result": {"pid": 1, "threads": [{"native_id": 3, "name": "w", "frames": [{"name": "pid"}]},
                                            {"native_id": 9, "name": "gone"}],
                      "value": {"kind": "mapping", "children": [{"name": "pid", "view": {"repr": "1"}}]},
                      "gil": {"pid_like": 1, "native_id": "3"}}}
    out = t(msg)
    assert out["started"]["threads"] == {"13104": "MainThread", "13106": "w"}
    assert out["result"]["pid"] == 13104
    assert [th["native_id"] for th in out["result"]["threads"]] == [13106, None]
    assert out["result"]["value"] == msg["result"]["value"]  # a view's keys and texts are the target's
    assert out["result"]["gil"] == {"pid_like": 1, "native_id": "3"}  # only ints under the two names


def test_the_longest_socket_path_fits_sun_path():
    """We connect to the agent's socket through /proc/PID/root (its mount namespace): with the largest
    pid (pid_max's limit) and uid, that path still fits sockaddr_un's 108 bytes, NUL included."""
    rdir = RuntimeDir(4194304, 4294967294, 0)
    assert rdir.sock("host") == "/proc/4194304/root/tmp/flight-mcp-4294967294/agent-4194304.sock"
    assert len(rdir.sock("host").encode()) < 108 and rdir.sock("target").startswith("/tmp/flight-mcp-4294967294/")
