"""The application cannot see us, every pyenv Python 3.8-3.13: while watch and trace run on a plain
function, a method, a generator and a coroutine, each one sees its real caller, no frame of ours in
its stack (sys._getframe, traceback.extract_stack, inspect.stack, format_exc), none in the traceback
of an exception raised through it, recurses to near the recursion limit as without us, and its
function object stays byte for byte what it was, during the commands and after them.

The target checks itself once per round and writes what it saw to a file; the test keeps the rounds
that ran entirely between the first and the last capture of every command (so under all of them)
and requires at least two such rounds, then that every round it wrote was clean.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flight_mcp import resident

from .conftest import STATE_HOME, version_params, wait_until

pytestmark = pytest.mark.timeout(180)

TARGET = r'''
import ctypes, inspect, json, re, sys, threading, time, traceback

SCRIPT = __file__
OUT = sys.argv[1]


def fail():
    raise KeyError("boom")


def observe(me):
    """What the instrumented function `me` (its frame) can see of the call chain."""
    names = [fs.name for fs in traceback.extract_stack(me)]
    return {"caller": me.f_back.f_code.co_name,
            "stack": names[names.index("rounds"):],
            "foreign": sorted(set(fi.filename for fi in inspect.stack(0)) - {SCRIPT, threading.__file__})}


def plain(seq, depth, boom=False):
    if depth:
        return plain(seq, depth - 1)
    if boom:
        fail()
    return observe(sys._getframe())


class Svc(object):
    def method(self, seq, boom=False):
        if boom:
            fail()
        return observe(sys._getframe())


def gen(seq, boom=False):
    yield observe(sys._getframe())
    yield observe(sys._getframe())
    if boom:
        fail()


class Step(object):
    def __await__(self):
        yield


async def co(seq, boom=False):
    first = observe(sys._getframe())
    await Step()
    second = observe(sys._getframe())
    if boom:
        fail()
    return [first, second]


async def outer(seq, boom=False):
    return await co(seq, boom)


def drive(coro):
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value


def tb_names(call):
    try:
        call()
    except KeyError as e:
        shown = re.findall(r'File "[^"]*", line \d+, in (\S+)', traceback.format_exc())
        return {"extract_tb": [fs.name for fs in traceback.extract_tb(e.__traceback__)], "format_exc": shown}
    return "no exception"


def rounds(seq):
    obs = {"plain": plain(seq, 0), "method": Svc().method(seq), "gen": list(gen(seq)),
           "co": drive(outer(seq))}
    tbs = {"plain": tb_names(lambda: plain(seq, 0, True)), "method": tb_names(lambda: Svc().method(seq, True)),
           "gen": tb_names(lambda: list(gen(seq, True))), "co": tb_names(lambda: drive(outer(seq, True)))}
    # the function's own recursion, to a margin below the limit taken from this very stack
    room = sys.getrecursionlimit() - len(inspect.stack(0)) - 40
    try:
        plain(seq, room)
        rec = "ok"
    except RecursionError as e:
        rec = "RecursionError at %d levels below the limit: %s" % (room, e)
    return obs, tbs, rec


FUNCS = [plain, Svc.method, gen, co, outer]


def raw(f):
    """The function object's bytes after its reference count: code, vectorcall, version, ..."""
    return ctypes.string_at(id(f) + 8, type(f).__basicsize__ - 8)


def worker():
    for i in range(15):   # warm up: call sites specialised (3.11+), function versions assigned
        rounds(-1)
    snap = [(f.__code__, raw(f)) for f in FUNCS]
    print("READY", flush=True)
    seq = 0
    with open(OUT, "a") as out:
        while True:
            t0 = time.time()
            obs, tbs, rec = rounds(seq)
            same = [f.__code__ is code and raw(f) == b for f, (code, b) in zip(FUNCS, snap)]
            out.write(json.dumps({"seq": seq, "t0": t0, "t1": time.time(), "obs": obs, "tbs": tbs, "rec": rec,
                                  "same": same}) + "\n")
            out.flush()
            seq += 1
            time.sleep(0.05)


threading.Thread(target=worker, daemon=True).start()
while True:   # the main thread idles in a system call: the attach's safe point
    time.sleep(1)
'''


def expected_obs(caller, stack):
    return {"caller": caller, "stack": stack, "foreign": []}


EXPECTED_OBS = {
    "plain": expected_obs("rounds", ["rounds", "plain"]),
    "method": expected_obs("rounds", ["rounds", "method"]),
    "gen": [expected_obs("rounds", ["rounds", "gen"])] * 2,
    "co": [expected_obs("outer", ["rounds", "drive", "outer", "co"])] * 2,
}
EXPECTED_TBS = {kind: {"extract_tb": names, "format_exc": names} for kind, names in (
    ("plain", ["tb_names", "<lambda>", "plain", "fail"]),
    ("method", ["tb_names", "<lambda>", "method", "fail"]),
    ("gen", ["tb_names", "<lambda>", "gen", "fail"]),
    ("co", ["tb_names", "<lambda>", "drive", "outer", "co", "fail"]))}

COMMANDS = {  # plain recurses to near the limit: its filter keeps only the innermost call
    "plain": "__main__ plain -f 'args[1] == 0'",
    "method": "__main__ Svc method",
    "gen": "__main__ gen",
    "co": "__main__ co",
}
# The installed command: its resident helper starts the four commands of a window within ~0.1 s of each
# other (a new interpreter each took ~0.5 s of CPU, and on a loaded machine left them no window in common).
FLIGHT_MCP = str(Path(sys.executable).parent / "flight-mcp")
STAMP = re.compile(r"^(?:[✓✗]|🔍) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d):(\d{3}) ", re.M)


def capture_times(out):
    """Epoch seconds of each capture, from the title lines (local wall time, millisecond digits)."""
    return [time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000.0
            for day, ms in STAMP.findall(out)]


def attach_and_warm(pid):
    """Attaches through the installed command and waits for the resident helper it leaves running, so
    that the commands of a window start within ~0.1 s of each other."""
    r = subprocess.run([FLIGHT_MCP, str(pid), "--no-color", "--cmd", "stack"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: resident.running(os.path.join(STATE_HOME, "flight-mcp")), timeout=60,
               what="the resident helper")


def run_all(pid, tool, seconds):
    """Runs tool on every function at once, each until its deadline; the window all of them covered."""
    procs = {kind: subprocess.Popen([FLIGHT_MCP, str(pid), "--no-color", "--cmd",
                                     "%s %s -n 10000 --timeout %d" % (tool, spec, seconds)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for kind, spec in COMMANDS.items()}
    first, last = [], []
    for kind, p in procs.items():
        out, err = p.communicate(timeout=seconds + 60)
        assert p.returncode == 0, f"{tool} {kind}: {out}\n{err}"
        times = capture_times(out)
        assert len(times) >= 2, f"{tool} {kind} captured {len(times)} calls:\n{out}\n{err}"
        first.append(min(times))
        last.append(max(times))
    return max(first), min(last)


def rounds_in(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


@pytest.mark.parametrize("version", version_params())
def test_application_sees_no_frame_of_ours(spawn, version, tmp_path):
    out_path = tmp_path / "rounds.jsonl"
    t = spawn(version, TARGET, args=[str(out_path)])
    attach_and_warm(t.pid)
    windows = [run_all(t.pid, "watch", 3), run_all(t.pid, "trace", 3)]  # a round takes ~0.1 s: tens under each
    done = len(rounds_in(out_path))
    deadline = time.monotonic() + 20
    while len(rounds_in(out_path)) < done + 3:   # rounds after every command ended
        assert t.alive() and time.monotonic() < deadline, "the target stopped writing rounds"
        time.sleep(0.05)
    rounds = rounds_in(out_path)
    for start, end in windows:
        inside = [r for r in rounds if start < r["t0"] and r["t1"] < end]
        assert len(inside) >= 2, f"only {len(inside)} rounds ran under every command ({start}..{end})"
    for r in rounds:
        where = "round %d (%s)" % (r["seq"], "under a command" if any(s < r["t0"] and r["t1"] < e
                                                                   for s, e in windows) else "no command")
        assert r["obs"] == EXPECTED_OBS, f"{where}: {json.dumps(r['obs'], indent=1)}"
        assert r["tbs"] == EXPECTED_TBS, f"{where}: {r['tbs']}"
        assert r["rec"] == "ok", f"{where}: {r['rec']}"
        assert all(r["same"]), f"{where}: function objects changed (plain, method, gen, co, outer): {r['same']}"
    assert t.alive()
