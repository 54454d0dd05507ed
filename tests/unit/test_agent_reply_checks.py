"""No fact from the agent makes the host print a traceback: an unknown line is shown as such, and
a reply that does not fit its Result model becomes an error with its code. The real tools run
here against a stand-in agent that answers what an agent of another version (or a fact we did not
expect) would; the thing under test is the host's handling of that answer."""
import pytest

from flight_mcp.errors import FlightError
from flight_mcp.session import Sessions
from flight_mcp.tools.base import Call
from flight_mcp.tools.getglobal import TOOL as GETGLOBAL
from flight_mcp.tools.stack import TOOL as STACK
from flight_mcp.tools.watch import TOOL as WATCH


class AnsweringSessions(Sessions):
    """Sessions whose agent answers `reply` to every request (stack asks through the session layer)."""

    def __init__(self, reply, call):
        super().__init__()
        self.call = call

    def get(self, pid, timeout=None):
        return None  # already "attached": stack warms the connection before it asks

    def request(self, pid, cmd, args, deadline, **kw):
        return self.call.request(pid, cmd, args)


class AgentAnswering(Call):
    """A Call whose agent answers `reply` to every request."""

    def __init__(self, reply):
        super().__init__(None)
        self.sessions = AnsweringSessions(reply, self)
        self.reply = reply

    def request(self, pid, cmd, args, timeout=10.0, on_event=None, **kw):
        return self.reply

    def client(self, pid, timeout=10.0):
        return None


def _thread(frames):
    return {"ident": 1, "name": "MainThread", "daemon": False, "native_id": 9, "main": True, "frames": frames}


def test_unknown_line_is_shown_as_unknown():
    # Python 3.11 reports f_lineno None at some instructions of a busy thread.
    reply = {"pid": 5, "threads": [_thread([{"file": "/app/busy.py", "line": None, "name": "spin",
                                             "qualname": "spin", "source": ""}])], "event_loops": 0}
    result = STACK.invoke(STACK.params(pid=5), AgentAnswering(reply))
    assert result.threads[0].frames[0].line is None
    text = STACK.text(result, False)
    assert 'File "/app/busy.py", line ?, in spin' in text and "None" not in text


@pytest.mark.parametrize("tool, params, reply, where", [
    (STACK, {"pid": 5}, {"pid": 5, "threads": [_thread([{"file": "f", "line": "x", "name": "n"}])]},
     "frames.0.line"),
    (STACK, {"pid": 5}, {"pid": 5}, "threads: Field required"),
    (STACK, {"pid": 5}, {"pid": 5, "threads": None}, "threads: Input should be a valid list"),
    (STACK, {"pid": 5}, {"pid": 5, "threads": [], "async_note": "asyncio is not imported"}, "async_note"),
    (GETGLOBAL, {"pid": 5, "module": "m"}, {"mode": "nonsense", "owner": "m"}, "mode"),
    (GETGLOBAL, {"pid": 5, "module": "m"}, {"mode": "value", "owner": "m", "surprise": 1, "entries": 3},
     "entries"),
    (WATCH, {"pid": 5, "module": "m", "method": "f"}, {"target": {"label": "m.f"}}, "target"),
])
def test_reply_that_does_not_fit_is_an_error_with_its_code(tool, params, reply, where):
    with pytest.raises(FlightError) as e:
        tool.invoke(tool.params(**params), AgentAnswering(reply))
    assert e.value.kind == "bad_agent_reply"
    assert where in e.value.message and tool.name in e.value.message, e.value.message


def test_flight_errors_pass_through_unchanged():
    class Refusing(AgentAnswering):
        def request(self, *a, **kw):
            raise FlightError("process_stopped", "pid 5 is stopped")

    with pytest.raises(FlightError) as e:
        STACK.invoke(STACK.params(pid=5), Refusing(None))
    assert e.value.kind in ("process_stopped", "agent_failed")
