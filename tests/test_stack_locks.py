"""stack is lock-aware on real targets: a two-lock inversion (tests/targets/lock_inversion.py, with
threading.Lock and with RLock) is reported as a deadlock, first in the answer, naming both locks by
their owner paths and both holders, on every Python 3.8-3.13; a plain wait is a wait, not a
deadlock; a thread that waits for no lock gets no lock line. With locals (3.8, 3.13), each frame's
locals come as read-only views: no __repr__ of the target runs."""
import json
import re
import subprocess
from pathlib import Path

import anyio
import pytest

from .conftest import flight_cli, version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(180)


def stack_json(pid, *flags):
    r = flight_cli(str(pid), "--json", "--cmd", " ".join(("stack",) + flags))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def by_name(result):
    return {t["name"]: t for t in result["threads"]}


@pytest.mark.parametrize("version", version_params())
def test_two_lock_inversion_is_a_deadlock(spawn, version):
    for kind, held_by in (("lock", "code"), ("rlock", "owner")):
        t = spawn(version, "lock_inversion", args=[kind])
        r = stack_json(t.pid)
        threads = by_name(r)
        a, b, main = threads["worker-a"], threads["worker-b"], threads["MainThread"]
        names = [lk["name"] for lk in r["locks"]]
        assert sorted(names) == ["Catalog._lock", "Inventory._lock", "__main__.AUDIT_LOCK"], (kind, r["locks"])
        lock = {lk["name"]: lk for lk in r["locks"]}
        assert {lk["kind"] for lk in r["locks"]} == {kind}
        assert all(lk["held_by"] == held_by for lk in r["locks"]), r["locks"]
        cat, inv, audit = names.index("Catalog._lock"), names.index("Inventory._lock"), names.index(
            "__main__.AUDIT_LOCK")
        # who waits for what, and how
        assert (a["waits_for"], a["wait_how"], a["holds"]) == (inv, "with", [cat])
        assert (b["waits_for"], b["wait_how"], b["holds"]) == (cat, "acquire", [inv])
        assert lock["Catalog._lock"]["holders"] == [a["ident"]] and lock["Catalog._lock"]["waiters"] == [b["ident"]]
        assert lock["Inventory._lock"]["holders"] == [b["ident"]]
        # a wait that is not a deadlock; and no lock noise on a thread that only sleeps
        assert threads["auditor"]["waits_for"] == audit and audit in main["holds"]
        assert audit not in [step["lock"] for cycle in r["deadlocks"] for step in cycle]
        idler = threads["idler"]
        assert idler["waits_for"] is None and idler["holds"] == [] and idler["wait_how"] is None
        assert r["deadlocks"] == [[{"thread": a["ident"], "lock": inv}, {"thread": b["ident"], "lock": cat}]]

        text = flight_cli(str(t.pid), "--no-color", "--cmd", "stack").stdout
        first = text.splitlines()[0]
        assert first == (f"DEADLOCK: thread {a['native_id']} (worker-a) holds Catalog._lock and waits for "
                         f"Inventory._lock held by thread {b['native_id']} (worker-b), which waits for "
                         f"Catalog._lock."), text
        label = "RLock" if kind == "rlock" else "Lock"
        assert (f"waiting to acquire __main__.AUDIT_LOCK ({label}, by with), held by thread {main['native_id']} "
                f"(MainThread)") in text
        idle_block = text.split("(idler)")[1].split("Traceback for")[0]
        assert "waiting" not in idle_block and "holds" not in idle_block and "DEADLOCK" not in idle_block
        t.kill()


SCRIPT = r'''
import threading
import time

REPRS = []


class Loud:
    def __repr__(self):
        REPRS.append(1)
        return "Loud!"


def work(order_id, items):
    note = Loud()
    big = list(range(1000))
    print("READY", flush=True)
    while True:
        time.sleep(0.05)


threading.Thread(target=work, args=(42, {"sku": "A-1", "qty": 3}), name="worker", daemon=True).start()
while True:
    time.sleep(0.05)
'''


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))
def test_locals_are_read_only_views(spawn, version):
    t = spawn(version, SCRIPT)

    async def go():
        async with mcp_session() as s:
            return await s.call_tool("stack", {"pid": t.pid, "locals": True})

    r = anyio.run(go)
    assert not r.is_error, text_of(r)
    worker = by_name(r.structured_content)["worker"]
    [frame] = [f for f in worker["frames"] if f["name"] == "work"]
    views = {v["name"]: v["view"] for v in frame["locals"]}
    assert views["order_id"]["repr"] == "42" and views["items"]["type"] == "dict"
    assert views["note"]["type"] == "__main__.Loud" and "Loud!" not in views["note"]["repr"]
    assert views["big"]["len"] == 1000 and len(views["big"]["repr"]) < 400
    main = by_name(r.structured_content)["MainThread"]
    assert main["frames"][0].get("locals") is None   # a module's frame: its locals are its globals
    text = text_of(r)
    assert re.search(r"^ +order_id = 42$", text, re.M), text
    assert re.search(r"^ +items = \{'sku': 'A-1', 'qty': 3\}$", text, re.M), text

    plain = stack_json(t.pid)   # without the flag: frames as before, no locals key
    assert all("locals" not in f for th in plain["threads"] for f in th["frames"])
    reprs = flight_cli(str(t.pid), "--json", "--cmd", "getglobal __main__ REPRS")
    assert json.loads(reprs.stdout)["view"]["repr"] == "[]"   # no __repr__ of the target ran


DECODER_CHECK = r'''
import json, sys, threading
sys.path.insert(0, sys.argv[1])
from flight_mcp.agent import locks

LOCK = threading.Lock()

def timeout():
    return 1

class C:
    def patterns(self, other, lk):
        with self._lock:                           # with an attribute
            pass
        with LOCK:                                 # with a global
            pass
        self.a.b.acquire()                         # acquire on a chain
        lk.acquire(timeout=timeout())              # keyword argument computed by a call
        lk.acquire(True, min(1, 2) + 1)            # positional arguments with calls and arithmetic
        with other._lock, self._lock:              # two context managers
            try:
                in_try()                           # inside both withs and a try
            except ValueError:
                in_handler()                       # in an except handler inside both withs (3.12+: moved to the end)
        after()                                    # after them
        other.wait()                               # not a lock method

def in_try():
    pass

in_handler = after = in_try

import dis
code = locks.Code(C.patterns.__code__)
ins = list(dis.get_instructions(C.patterns))
out = {"waits": [], "withs": {}}
for n, i in enumerate(ins):
    got = code.waiting_at(i.offset)
    if got is not None:
        out["waits"].append([got[0], got[1][0][1]] + got[1][1])
    if i.argval in ("in_try", "in_handler", "after") and i.opname == "LOAD_GLOBAL":
        call = next(j for j in ins[n + 1:] if j.opname in locks.CALL_OPS)
        out["withs"][i.argval] = sorted([c[0][1]] + c[1] for c in code.active_withs(call.offset))
print(json.dumps(out))
'''


@pytest.mark.parametrize("version", version_params())
def test_the_decoder_reads_each_versions_bytecode(version):
    """The decoder in each version's own interpreter (no attach): the opcodes, caches and argument
    encodings differ from 3.8 to 3.13."""
    from .conftest import PYTHONS
    root = str(Path(__file__).resolve().parent.parent)
    r = subprocess.run([PYTHONS[version], "-c", DECODER_CHECK, root], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["waits"] == [["with", "self", "_lock"], ["with", "LOCK"], ["acquire", "self", "a", "b"],
                            ["acquire", "lk"], ["acquire", "lk"], ["with", "other", "_lock"],
                            ["with", "self", "_lock"]], got
    both = [["other", "_lock"], ["self", "_lock"]]
    assert got["withs"] == {"in_try": both, "in_handler": both, "after": []}, got
