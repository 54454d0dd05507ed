"""gilstat's C sampler in this process (no target): it finds this interpreter's GIL, attributes holds
to the thread that holds it and waits to the threads blocked taking it, ends by itself or on stop(),
and refuses a second measurement while one runs."""
import _thread
import os
import sys
import threading
import time

import pytest

from flight_mcp.agent import native

mod, why = native.extension("_flight_mcp_gilstat")
pytestmark = pytest.mark.skipif(mod is None, reason=f"extension not built: {why}")
MS = 1000000


def tasks():
    return len(os.listdir("/proc/self/task"))


def checked():
    assert mod.check(sys.version_info[1], int(round(sys.getswitchinterval() * 1e6))) is None
    return mod


def test_the_layout_check_refuses_what_it_does_not_know():
    assert "no GIL layout" in mod.check(99, 5000)
    assert "not where" in mod.check(sys.version_info[1], 1)  # a switch interval the GIL does not have
    checked()


def test_holder_and_waiters_and_the_long_hold_stack_request():
    m = checked()
    stop = []
    data = list(range(1500000, 0, -1))

    def hog():
        while not stop:
            sorted(data)

    def spin():
        while not stop:
            pass

    threads = [threading.Thread(target=hog, name="hog"), threading.Thread(target=spin, name="spin")]
    for t in threads:
        t.start()
    before = tasks()
    try:
        m.start(600 * MS, MS, 20 * MS, 20 * MS, 50, 100, 3, [_thread.get_native_id()])
        assert tasks() == before + 1
        with pytest.raises(RuntimeError):
            m.start(600 * MS, MS, 20 * MS, 20 * MS, 50, 100, 3, [])
        requests = []
        while True:
            got = m.wait(0.1)
            if got == "done":
                break
            if got is not None:
                requests.append(got)
        m.stop()
        assert tasks() == before  # the sampler's thread is gone
        states = {addr: ident for addr, ident, _ in m.threads()}
        raw = m.result()
    finally:
        stop.append(1)
        for t in threads:
            t.join()
    assert raw["stopped"] == 0 and raw["samples"] > 50 and raw["proc_ok"] == 1
    holds = {states.get(addr): n for addr, n, runs, mx in raw["holders"]}
    hog_ident = threads[0].ident
    assert holds[hog_ident] == max(holds.values()) and holds[hog_ident] > raw["samples"] * 0.3, holds
    waits = {tid: n for tid, n, runs, mx in raw["waiters"]}
    assert waits[threads[1].native_id] > raw["samples"] * 0.05, waits  # less when the OS keeps it off the CPU
    assert _thread.get_native_id() not in waits  # excluded
    # the hog's long holds ask for its stack (a spinner preempted by the OS holding the GIL may too)
    assert any(states.get(addr) == hog_ident for _, addr in requests), (requests, states, hog_ident)
    kinds = {e[0] for e in raw["events"]}
    assert 0 in kinds and raw["events_total"] >= len(raw["events"])
    with pytest.raises(RuntimeError):
        m.result()  # taken once, then freed


def test_stop_ends_it_early_and_says_so():
    m = checked()
    before = tasks()
    gen = m.start(60000 * MS, MS, 10 * MS, 10 * MS, 10, 10, 0, [])
    time.sleep(0.05)
    assert m.stop(gen + 1) is False and tasks() == before + 1  # another command's clean-up: not this one
    assert m.stop() is True and tasks() == before  # gilstat off: whichever runs
    assert m.stop(gen) is False
    assert m.wait(0.01) == "done"
    with pytest.raises(RuntimeError):
        m.result(gen + 1)
    assert m.result(gen)["stopped"] == 1


def test_many_threads_read_waits_less_often():
    """The waits cost one /proc read per thread: with many threads they are read every few samples
    (within ~10,000 reads a second) while holds are still read every sample."""
    m = checked()
    done = threading.Event()
    sleepers = [threading.Thread(target=done.wait) for _ in range(80)]
    for t in sleepers:
        t.start()
    try:
        m.start(500 * MS, MS // 2, 100 * MS, 100 * MS, 200, 10, 0, [])  # 2000 samples/s x 80+ threads
        while m.wait(0.1) != "done":
            pass
        m.stop()
        raw = m.result()
    finally:
        done.set()
        for t in sleepers:
            t.join()
    assert raw["samples"] > 50
    assert raw["wait_scans"] * 4 <= raw["samples"] + 4, raw["wait_scans"]
    assert len(raw["waiters"]) >= 80
