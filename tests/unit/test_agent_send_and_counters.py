"""The agent's side of a client that does not read, and its counters, in-process (stdlib agent
modules imported directly, real sockets, real threads)."""
import json
import socket
import sys
import threading
import time

from flight_mcp.agent import capture, server


def _pair():
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return server.Connection(ours), peer


def _read_all(peer):
    peer.settimeout(1.0)
    data = b""
    while True:
        try:
            chunk = peer.recv(1 << 16)
        except socket.timeout:
            return data
        if not chunk:
            return data
        data += chunk


def test_progress_events_never_wait_for_a_client_that_does_not_read():
    conn, peer = _pair()
    ctx = server.CommandContext(conn, 7, {})
    started = time.monotonic()
    sent = [ctx.emit({"captured": i, "message": "x" * 200}) for i in range(5000)]
    assert time.monotonic() - started < 2.0   # the old blocking sendall never returned here
    assert any(sent) and not all(sent)        # the socket took some, the rest were dropped
    # what was sent is whole lines, once the client reads again (a partial write is finished first)
    done = threading.Thread(target=conn.send, args=({"id": 7, "result": {"ok": True}},), kwargs={"wait_s": 5})
    done.start()
    lines = _read_all(peer).splitlines()
    done.join(5)
    msgs = [json.loads(line) for line in lines]
    assert msgs[-1] == {"id": 7, "result": {"ok": True}}
    captured = [m["event"]["captured"] for m in msgs[:-1]]
    assert captured == sorted(captured) and len(captured) == sum(sent)


def test_a_final_reply_waits_a_bounded_time_then_gives_the_connection_up():
    conn, peer = _pair()
    while conn.send({"event": "x" * 500}, wait_s=0):
        pass
    started = time.monotonic()
    assert conn.send({"id": 1, "result": {}}, wait_s=0.3) is False
    assert 0.25 < time.monotonic() - started < 2.0
    assert conn.closed
    assert conn.send({"id": 2, "result": {}}, wait_s=5) is False   # no second wait on a dead client


def test_close_does_not_wait_for_a_writer_stuck_on_the_client():
    conn, peer = _pair()
    while conn.send({"event": "x" * 500}, wait_s=0):
        pass
    writer = threading.Thread(target=conn.send, args=({"id": 1, "result": {}},), kwargs={"wait_s": 30})
    writer.start()
    time.sleep(0.1)
    started = time.monotonic()
    conn.close()
    writer.join(5)
    assert not writer.is_alive() and time.monotonic() - started < 2.0


def test_counters_lose_no_call_counted_from_many_threads():
    ctx = server.CommandContext(None, 1, {})
    cap = capture.Capture(ctx, 10)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # switch threads as often as the interpreter allows
    try:
        def bump():
            for _ in range(20000):
                cap.note_seen()
                cap.note_matched()
        threads = [threading.Thread(target=bump) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert (cap.seen, cap.matched, cap.skipped) == (160000, 160000, 0)


def test_a_cancelled_command_records_nothing_even_with_its_lock_held():
    # In a forked child the capture's lock may be held by a thread that did not survive the fork.
    ctx = server.CommandContext(None, 1, {})
    cap = capture.Capture(ctx, 10)
    assert cap.add({"n": 1})
    cap._lock.acquire()
    ctx.cancelled = True
    assert cap.add({"n": 2}) is False
    assert len(cap.records) == 1
