"""The lock analysis of stack in this interpreter (no process): decoding which lock a frame's
instruction enters, which with-statements a frame is inside, the wait-for cycles, and a real
deadlock between two threads of this test (plain locks with a timeout, released by the test)."""
import dis
import threading
import time

import pytest

from flight_mcp.agent import cmd_stack, locks
from flight_mcp.tools import stack

pytestmark = pytest.mark.timeout(30)

LOCK = threading.Lock()


class Holder:
    def __init__(self):
        self._lock = threading.Lock()
        self.inner = self

    def with_attr(self):
        with self._lock:
            marker()

    def acquire_chain(self):
        self.inner._lock.acquire(timeout=1)

    def not_a_lock(self):
        time.sleep(0)

    def subscripted(self, locks_):
        locks_[0].acquire()

    def nested(self, other):
        with LOCK:
            try:
                with other._lock, self._lock:
                    marker()
            except ValueError:
                marker()
        marker()


def marker():
    pass


def uses_global():
    with LOCK:
        pass


def local_acquire(lk):
    lk.acquire(True, 1)
    marker()
    lk.release()
    marker()


def offsets(fn, pred):
    return [i.offset for i in dis.get_instructions(fn) if pred(i)]


def first(fn, *opnames):
    return offsets(fn, lambda i: i.opname in opnames)[0]


def calls_to(fn, name):
    """Offsets of the call instructions that call name (the call after each load of it)."""
    ins = list(dis.get_instructions(fn))
    found = []
    for n, i in enumerate(ins):
        if i.argval == name and i.opname in ("LOAD_GLOBAL", "LOAD_METHOD", "LOAD_ATTR"):
            found.append(next(j.offset for j in ins[n + 1:] if j.opname in locks.CALL_OPS))
    return found


def test_a_with_and_an_acquire_call_are_decoded_to_their_chains():
    code = locks.Code(Holder.with_attr.__code__)
    assert code.waiting_at(first(Holder.with_attr, *locks.WITH_OPS)) == ("with", (("local", "self"), ["_lock"]))
    code = locks.Code(Holder.acquire_chain.__code__)
    at = calls_to(Holder.acquire_chain, "acquire")[0]
    assert code.waiting_at(at) == ("acquire", (("local", "self"), ["inner", "_lock"]))
    code = locks.Code(uses_global.__code__)
    assert code.waiting_at(first(uses_global, *locks.WITH_OPS)) == ("with", (("global", "LOCK"), []))
    code = locks.Code(local_acquire.__code__)
    assert code.waiting_at(calls_to(local_acquire, "acquire")[0]) == ("acquire", (("local", "lk"), []))


def test_calls_that_are_not_a_lock_acquire_decode_to_nothing():
    code = locks.Code(Holder.not_a_lock.__code__)
    assert code.waiting_at(calls_to(Holder.not_a_lock, "sleep")[0]) is None       # another method
    code = locks.Code(Holder.subscripted.__code__)
    assert code.waiting_at(calls_to(Holder.subscripted, "acquire")[0]) is None    # not a plain chain
    code = locks.Code(Holder.with_attr.__code__)
    assert code.waiting_at(calls_to(Holder.with_attr, "marker")[0]) is None       # a function call
    assert code.waiting_at(10 ** 6) is None


def test_the_with_statements_a_frame_is_inside():
    code = locks.Code(Holder.nested.__code__)
    inner_call, handler_call, after_call = calls_to(Holder.nested, "marker")
    assert code.active_withs(inner_call) == [(("local", "self"), ["_lock"]), (("local", "other"), ["_lock"]),
                                             (("global", "LOCK"), [])]
    assert code.active_withs(handler_call) == [(("global", "LOCK"), [])]   # in an except inside the with
    assert code.active_withs(after_call) == []
    entering = first(Holder.nested, *locks.WITH_OPS)
    assert code.active_withs(entering) == []   # still entering the first with: holds nothing yet


def test_after_an_acquire_before_its_release_is_held():
    code = locks.Code(local_acquire.__code__)
    held_at, released_at = calls_to(local_acquire, "marker")
    sites = code.sites()
    assert [(what, chain) for _, what, chain in sites] == [("acquire", (("local", "lk"), [])),
                                                            ("release", (("local", "lk"), []))]
    assert sites[0][0] < held_at < sites[1][0] < released_at


def test_wait_for_cycles():
    # a waits for lock 0 held by b, b for lock 1 held by a: one cycle, from the first thread in order
    assert locks.cycles([1, 2, 3], {2: (1, [1]), 1: (0, [2])}) == [[(1, 0), (2, 1)]]
    # a tail into a three-cycle: only the cycle, rotated to start at its first thread in order
    edges = {9: (0, [5]), 5: (1, [6]), 6: (2, [7]), 7: (3, [5])}
    assert locks.cycles([9, 7, 6, 5], edges) == [[(7, 3), (5, 1), (6, 2)]]
    assert locks.cycles([4], {4: (0, [4])}) == [[(4, 0)]]                 # a thread waiting for itself
    assert locks.cycles([1, 2], {1: (0, [2]), 2: (1, [])}) == []          # holder unknown: no cycle
    assert locks.cycles([1, 2, 3], {1: (0, [2, 3]), 2: (1, [1])}) == []   # several holders: no edge
    two = locks.cycles([1, 2, 3, 4], {1: (0, [2]), 2: (1, [1]), 3: (2, [4]), 4: (3, [3])})
    assert two == [[(1, 0), (2, 1)], [(3, 2), (4, 3)]]


def test_an_rlock_owner_is_read_from_its_own_fields():
    r = threading.RLock()
    kinds = locks.Kinds()
    assert locks.rlock_owner(kinds, r, None) == (None, 0)
    with r, r:
        assert locks.rlock_owner(kinds, r, None) == (threading.get_ident(), 2)
    assert kinds.kind(r) == "rlock" and kinds.kind(LOCK) == "lock" and kinds.kind(object()) is None
    assert kinds.kind(threading.Condition()) == "condition" and kinds.kind(threading.BoundedSemaphore()) == \
        "semaphore"


class Catalog:
    def __init__(self):
        self._lock = threading.Lock()


class Inventory:
    def __init__(self):
        self._lock = threading.Lock()


def test_a_real_deadlock_in_this_process_is_found_and_told_first():
    catalog, inventory = Catalog(), Inventory()
    both = threading.Barrier(3)

    def update():   # held after its acquire(), never released: the test releases it to end the deadlock
        catalog._lock.acquire()
        both.wait()
        inventory._lock.acquire(timeout=20)

    def reserve():
        with inventory._lock:
            both.wait()
            with catalog._lock:
                pass

    sleeping = threading.Event()
    ts = [threading.Thread(target=update, name="worker-a", daemon=True),
          threading.Thread(target=reserve, name="worker-b", daemon=True),
          threading.Thread(target=sleeping.wait, name="idle", daemon=True)]
    for t in ts:
        t.start()
    both.wait()
    try:
        deadline = time.monotonic() + 10
        while True:   # until both are blocked in their second acquire
            p = stack.StackParams(pid=1)
            result = stack._from_agent(cmd_stack.stack(p.agent_args(), None), p)
            if result.deadlocks or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        threads = {t.name: t for t in result.threads}
        a, b = threads["worker-a"], threads["worker-b"]
        names = [lk.name for lk in result.locks]
        assert sorted(names) == ["Catalog._lock", "Inventory._lock"]
        assert [[(s.thread, names[s.lock]) for s in c] for c in result.deadlocks] == \
            [[(a.ident, "Inventory._lock"), (b.ident, "Catalog._lock")]]
        assert (a.wait_how, b.wait_how) == ("acquire", "with")
        assert threads["idle"].waits_for is None and threads["idle"].holds == []
        text = stack.render(result, False)
        assert text.splitlines()[0] == (
            f"DEADLOCK: thread {a.native_id} (worker-a) holds Catalog._lock and waits for Inventory._lock held by "
            f"thread {b.native_id} (worker-b), which waits for Catalog._lock.")
        assert "waiting to acquire Catalog._lock (Lock, by with), held by thread" in text
    finally:
        catalog._lock.release()     # a plain lock may be released by any thread: both go on and end
        sleeping.set()
        for t in ts:
            t.join(5)


def test_no_lock_noise_when_no_thread_waits_for_a_lock():
    p = stack.StackParams(pid=1)
    facts = cmd_stack.stack(p.agent_args(), None)
    assert facts["locks"] == [] and facts["deadlocks"] == []
    result = stack._from_agent(facts, p)
    assert not any(t.waits_for is not None or t.holds for t in result.threads)
    assert "DEADLOCK" not in stack.render(result, False) and "lock waits" not in stack.render(result, False)


def test_the_cheap_prefilters_agree_with_the_decoder():
    d = locks.Decoder()
    assert d.with_bytes and all(0 <= b < 256 for b in list(d.with_bytes) + list(d.stop_ops))   # real opcodes
    assert d.may_hold(Holder.nested.__code__) and d.may_hold(local_acquire.__code__)
    assert not d.may_hold(marker.__code__) and not d.may_hold(Holder.not_a_lock.__code__)
    at = first(Holder.with_attr, *locks.WITH_OPS)
    assert d.may_wait_at(Holder.with_attr.__code__, at)
    assert d.may_wait_at(Holder.acquire_chain.__code__, calls_to(Holder.acquire_chain, "acquire")[0])
    assert not d.may_wait_at(Holder.with_attr.__code__, 0) and not d.may_wait_at(marker.__code__, 10 ** 6)
    assert d.code(Holder.with_attr.__code__) is d.code(Holder.with_attr.__code__)   # decoded once


def _result(threads, locks_, deadlocks=()):
    return stack.StackResult(pid=1, source="agent", threads=threads, locks=locks_,
                             deadlocks=[[stack.DeadlockStep(thread=t, lock=n) for t, n in c] for c in deadlocks])


def _thread(ident, name, **kw):
    return stack.ThreadStack(ident=ident, name=name, native_id=ident + 1000, frames=[], **kw)


def _lock(name, kind="lock", holders=(), held_by="code", waiters=(), address=0x10):
    return stack.LockFact(name=name, kind=kind, type="_thread.lock", address=address, holders=list(holders),
                          held_by=held_by, waiters=list(waiters))


def test_three_thread_cycle_and_same_named_locks_render():
    ts = [_thread(1, "a", waits_for=0, wait_how="with", holds=[2]), _thread(2, "b", waits_for=1, holds=[0]),
          _thread(3, "c", waits_for=2, wait_how="acquire", holds=[1])]
    lks = [_lock("Account.lock", holders=[2], waiters=[1], address=0xa0),
           _lock("Account.lock", holders=[3], waiters=[2], address=0xb0),
           _lock("Ledger._lock", kind="rlock", held_by="owner", holders=[1], waiters=[3])]
    text = stack.render(_result(ts, lks, [[(1, 0), (2, 1), (3, 2)]]), False)
    assert text.splitlines()[0] == (
        "DEADLOCK: thread 1001 (a) holds Ledger._lock and waits for Account.lock at 0xa0 held by thread 1002 (b), "
        "which waits for Account.lock at 0xb0 held by thread 1003 (c), which waits for Ledger._lock.")
    assert "    waiting to acquire Ledger._lock (RLock, by acquire()), held by thread 1001 (a)" in text
    assert "    holds Ledger._lock (RLock)" in text


def test_self_deadlock_unknown_holder_and_semaphore_render():
    ts = [_thread(1, "a", waits_for=0, wait_how="with", holds=[0]), _thread(2, "b", waits_for=1),
          _thread(3, "c", waits_for=2, wait_how="acquire"), _thread(4, "d", holds=[2])]
    lks = [_lock("app.SELF", holders=[1], waiters=[1]), _lock("Cache._lock", held_by=None, waiters=[2]),
           _lock("app.POOL", kind="semaphore", holders=[4], waiters=[3])]
    text = stack.render(_result(ts, lks, [[(1, 0)]]), False)
    assert text.splitlines()[0] == "DEADLOCK: thread 1001 (a) holds app.SELF and waits for it again (Lock is not " \
                                   "reentrant)."
    assert "waiting to acquire app.SELF (Lock, by with), held by itself" in text
    assert "waiting to acquire Cache._lock (Lock), holder unknown (no thread's frames are inside a with or after " \
           "an acquire of it)" in text
    assert "waiting to acquire app.POOL (Semaphore, by acquire()), held by at least thread 1004 (d)" in text
    plain = stack.render(_result(ts[1:], lks[1:]), False)
    assert plain.splitlines()[0] == "lock waits: 2 thread(s) blocked on 2 lock(s); no deadlock (the waits form no " \
                                    "cycle)."
