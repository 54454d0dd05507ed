"""The session layer's arithmetic and decisions, with stand-ins for the agent and the outside reader:
one deadline covers attach, request and fallback (no process is started)."""
import pytest

from flight_mcp.errors import FlightError
from flight_mcp.session import Deadline, Sessions
from flight_mcp.session import stack as session_stack

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_deadline_left_spent_expired():
    clock = Clock()
    d = Deadline(10.0, clock=clock)
    assert d.left() == 10.0 and d.spent() == 0.0 and not d.expired
    clock.now += 4
    assert d.left() == 6.0 and d.spent() == 4.0
    clock.now += 7
    assert d.expired and d.left() == 0.0 and d.left(floor=0.5) == 0.5


def test_keeping_reserves_at_most_half_of_what_is_left():
    clock = Clock()
    d = Deadline(10.0, clock=clock)
    inner = d.keeping(1.5)
    assert inner.at == d.at - 1.5 and inner.seconds == 8.5 and inner.left() == 8.5
    assert d.keeping(8.0).left() == 5.0  # half of 10: the agent keeps a fair chance
    clock.now += 9
    assert d.keeping(1.5).left() == 0.5 and inner.expired


class FakeClient:
    def __init__(self, clock, attach_s=0.0):
        self.clock, self.calls, self.closed = clock, [], False

    def request(self, cmd, args, *, timeout, on_event=None, cancelled=None):
        self.calls.append((cmd, args, timeout))
        return {"ok": True}


def test_request_gets_what_the_attach_left(monkeypatch):
    clock = Clock()
    sessions = Sessions()
    client = FakeClient(clock)

    def get(pid, timeout=None):
        assert timeout == 30.0  # the attach may use the whole deadline
        clock.now += 2.5  # attaching took 2.5 s
        return client

    monkeypatch.setattr(sessions, "get", get)
    d = Deadline(30.0, clock=clock)
    assert sessions.request(7, "watch", {"x": 1}, d, budget_arg="duration_s", margin=10.0) == {"ok": True}
    assert client.calls == [("watch", {"x": 1, "duration_s": 27.5}, 37.5)]
    sessions.request(7, "stack", {"async_tasks": False}, Deadline(30.0, clock=clock))
    assert client.calls[-1] == ("stack", {"async_tasks": False}, 27.5)


READ = {"pid": 7, "threads": [{"ident": None, "name": "t", "native_id": 8, "daemon": None, "main": False,
                               "frames": [], "note": None}], "notes": [], "pending_agents": 0, "ms": 1.0}


@pytest.fixture
def outside(monkeypatch):
    seen = {}

    def read(pid, *, native, timeout):
        seen.update(pid=pid, native=native, timeout=timeout)
        if "error" in seen:
            raise seen["error"]
        return dict(READ, threads=[dict(t, holds_gil=seen.get("holds_gil", False)) for t in READ["threads"]],
                    pending_agents=seen.get("pending", 0))

    monkeypatch.setattr(session_stack.external_stack, "read", read)
    monkeypatch.setattr(session_stack.external_stack, "expected_seconds", lambda pid: 1.5)
    monkeypatch.setattr(session_stack.procfs, "identity", lambda pid: (pid, "start"))
    return seen


def agent_says(monkeypatch, answer):
    asked = []

    def ask(sessions, pid, args, budget, cancelled):
        asked.append((args, budget))
        if isinstance(answer, FlightError):
            raise answer
        return answer

    monkeypatch.setattr(session_stack, "_ask_agent", ask)
    return asked


def test_the_agent_answers_within_the_deadline_less_the_outside_reserve(monkeypatch, outside):
    asked = agent_says(monkeypatch, {"pid": 7, "threads": []})
    r = session_stack.read(Sessions(), 7, {"async_tasks": True}, Deadline(10.0), native=False)
    assert r.source == "agent" and r.facts == {"pid": 7, "threads": []} and not outside
    args, budget = asked[0]
    # a third of a 10 s deadline is kept for a reading from outside (more than one takes on an idle machine)
    assert args == {"async_tasks": True} and 6.6 < budget.seconds <= 6.7
    # a short one keeps what a reading takes on an idle machine (1.5 s here), at most half
    session_stack.read(Sessions(), 7, {"async_tasks": True}, Deadline(3.0), native=False)
    session_stack.read(Sessions(), 7, {"async_tasks": True}, Deadline(2.0), native=False)
    assert 1.4 < asked[1][1].seconds < 1.6 and 0.9 < asked[2][1].seconds < 1.1


def test_fallback_reads_from_outside_with_the_rest_and_keeps_the_agents_error(monkeypatch, outside):
    agent_says(monkeypatch, FlightError("agent_timeout", "no answer"))
    r = session_stack.read(Sessions(), 7, {"async_tasks": False}, Deadline(10.0), native=False)
    assert r.source == "external" and r.agent_error.code == "agent_timeout"
    assert outside["native"] is False and 1.4 < outside["timeout"] <= 10.0


def test_errors_the_outside_cannot_cure_are_raised(monkeypatch, outside):
    agent_says(monkeypatch, FlightError("no_such_process", "gone"))
    with pytest.raises(FlightError) as e:
        session_stack.read(Sessions(), 7, {"async_tasks": False}, Deadline(10.0), native=False)
    assert e.value.code == "no_such_process" and not outside


def test_one_cause_is_said_once_two_are_said_both(monkeypatch, outside):
    agent_says(monkeypatch, FlightError("permission_denied", "not allowed (agent)"))
    outside["error"] = FlightError("permission_denied", "not allowed (outside)")
    with pytest.raises(FlightError) as e:
        session_stack.read(Sessions(), 7, {"async_tasks": False}, Deadline(10.0), native=False)
    assert e.value.message == "not allowed (agent)"
    outside["error"] = FlightError("external_failed", "reader crashed")
    with pytest.raises(FlightError) as e:
        session_stack.read(Sessions(), 7, {"async_tasks": False}, Deadline(10.0), native=False)
    assert e.value.code == "permission_denied" and e.value.message.endswith("failed too: reader crashed")


def test_a_pending_agent_is_not_asked_again(monkeypatch, outside):
    asked = agent_says(monkeypatch, {"pid": 7, "threads": []})
    sessions = Sessions()
    monkeypatch.setattr(sessions, "agent_listening", lambda pid: False)
    outside.update(pending=1, holds_gil=True)
    r = session_stack.read(sessions, 7, {"async_tasks": False}, Deadline(10.0), native=True)
    assert r.source == "external" and sessions.pending_agents == {(7, "start"): 1}
    r = session_stack.read(sessions, 7, {"async_tasks": False}, Deadline(10.0), native=False)
    assert r.pending == "waiting" and not asked  # a thread still holds the GIL
    outside["holds_gil"] = False  # nobody holds it: the agent gets it any moment, asked at once
    r = session_stack.read(sessions, 7, {"async_tasks": False}, Deadline(10.0), native=False)
    assert r.source == "agent" and len(asked) == 1
    sessions.pending_agents[(7, "start")] = 1
    outside["pending"] = 0  # its payload thread got the GIL and the agent is starting: asked at once
    r = session_stack.read(sessions, 7, {"async_tasks": False}, Deadline(10.0), native=False)
    assert r.source == "agent" and sessions.pending_agents == {} and len(asked) == 2


def test_a_pending_agent_gone_that_does_not_answer_leaves_the_outside_reading(monkeypatch, outside):
    asked = agent_says(monkeypatch, FlightError("agent_timeout", "no answer"))
    sessions = Sessions()
    monkeypatch.setattr(sessions, "agent_listening", lambda pid: False)
    sessions.pending_agents[(7, "start")] = 1
    outside["pending"] = 0
    r = session_stack.read(sessions, 7, {"async_tasks": False}, Deadline(10.0), native=False)
    assert r.source == "external" and r.pending == "gone" and len(asked) == 1 and sessions.pending_agents == {}


def test_names_from_a_running_agent_apply_by_native_id(monkeypatch, outside):
    sessions = Sessions()

    def names(sessions_, pid, args, out):
        assert args == {"async_tasks": False}
        out[8] = {"name": "worker-1", "ident": 99, "daemon": True}

    monkeypatch.setattr(session_stack, "_names_from_running_agent", names)
    r = session_stack.read(sessions, 7, {"async_tasks": False}, Deadline(10.0), native=True)
    assert r.named == 1 and r.facts["threads"][0]["name"] == "worker-1" and r.facts["threads"][0]["ident"] == 99
