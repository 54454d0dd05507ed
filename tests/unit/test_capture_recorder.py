"""trace's recorder (agent/recording.py) in the test interpreter: the Python recorder and, when it
loads here, the C one record the same tree of a real call, whose facts fit the host's Node model
and render as the CLI shows them; the tree's cuts (depth, interval, size bounds) on hand-made
recordings; and the agent's expression and exception facts, made in-process. No process started."""
import os
import sys
import time

import pytest

from flight_mcp.agent import capture, native, recording, timebox
from flight_mcp.tools import trace
from flight_mcp.tools.capture_common import ExpressionFailure, failure_warning
from flight_mcp.tools.watch import Record

AGENT_DIR = os.path.dirname(recording.__file__)

# The driver stands where the probe stands: in the agent's folder, so its own calls (activate,
# deactivate, suspend) are the agent's and left out of the tree, as they are in a target.
DRIVER = compile('''
def drive(rec, fn, gap=False):
    rec.activate(getprofile())
    fn()
    rec.deactivate()
    if gap:
        rec.suspend()
        sleep(0.002)
        rec.resume()
    return rec.finish()
''', os.path.join(AGENT_DIR, "test_driver.py"), "exec")
_scope = {"getprofile": sys.getprofile, "sleep": time.sleep}
exec(DRIVER, _scope)
drive = _scope["drive"]


def leaf():
    time.sleep(0.002)


def work():
    leaf()
    len([1])
    leaf()


def _recorders():
    found = [pytest.param(recording.PyRecording, id="python")]
    module, why = native.extension()
    found.append(pytest.param(getattr(module, "Recording", None), id="c",
                              marks=pytest.mark.skipif(module is None, reason=str(why))))
    return found


def _record(kind, interval_ms=0.0, depth=-1, gap=False):
    rec = kind(work.__code__, None, "[yield]", recording._kind, sys.setprofile, interval_ms / 1000.0, depth,
               recording.MAX_NODES, False)
    cost = drive(rec, work, gap)
    assert sys.getprofile() is None
    return rec, cost


def _shape(node, level=0):
    out = [(level, node["name"], node["kind"])]
    for child in node["children"]:
        out.extend(_shape(child, level + 1))
    return out


@pytest.mark.parametrize("kind", _recorders())
def test_a_real_calls_tree(kind):
    rec, cost = _record(kind)
    root, hidden, elided = recording.tree_facts(rec, -1, 0.0)
    assert _shape(root) == [(0, "work", "python"), (1, "leaf", "python"), (2, "sleep", "builtin"),
                            (1, "len", "builtin"), (1, "leaf", "python"), (2, "sleep", "builtin")]
    assert (hidden, elided, rec.dropped) == (0, 0, 0)
    assert root["file"] == __file__ and root["line"] == work.__code__.co_firstlineno
    assert root["cost_ms"] >= 4 and cost * 1000 == pytest.approx(root["cost_ms"], abs=0.01)
    node = trace.Node.model_validate(root)   # the agent's facts are the host's model
    lines = trace.render_tree(node, False)
    assert lines[0].endswith("] work test_capture_recorder.py:%d" % work.__code__.co_firstlineno)
    assert lines[2].startswith("│  └─ [") and lines[2].endswith("] sleep <built-in>")
    assert lines[3].startswith("├─ [") and lines[3].endswith("] len <built-in>")


@pytest.mark.parametrize("kind", _recorders())
def test_cuts_by_depth_and_interval_and_the_gap(kind):
    rec, _ = _record(kind, gap=True)
    root, hidden, _ = recording.tree_facts(rec, 2, 0.0)
    assert _shape(root) == [(0, "work", "python"), (1, "leaf", "python"), (1, "len", "builtin"),
                            (1, "leaf", "python"), (1, "[yield]", "gap")]
    assert hidden == 2 and root["children"][-1]["file"] == "" and root["children"][-1]["cost_ms"] >= 1
    root, hidden, _ = recording.tree_facts(rec, -1, 1.0)   # len() costs far less than 1 ms
    assert [n for _, n, _ in _shape(root)] == ["work", "leaf", "sleep", "leaf", "sleep", "[yield]"]
    assert hidden == 1
    assert "[yield]" in trace.render_tree(trace.Node.model_validate(root), False)[-1]


class Made(object):
    """A recording as tree_facts reads one: [label, start, children, cost, raised, type, line] nodes."""
    hidden = 0
    dropped = 0

    def __init__(self, root):
        self.root = root

    def tree(self):
        return self.root


def _node(children=(), cost=0.001, raised=False, exc_type=None, line=None):
    return [work.__code__, 0.0, list(children), cost, raised, exc_type, line]


def test_size_bounds_count_what_they_leave_out():
    wide = Made(_node([_node() for _ in range(recording.MAX_SHOWN + 20)]))
    root, hidden, elided = recording.tree_facts(wide, -1, 0.0)
    assert len(root["children"]) == recording.MAX_SHOWN and elided == 20 and hidden == 0
    deep = node = _node()
    for _ in range(recording.MAX_LEVELS + 4):
        child = _node()
        node[2].append(child)
        node = child
    root, hidden, elided = recording.tree_facts(Made(deep), -1, 0.0)
    levels = len(_shape(root))
    assert levels == recording.MAX_LEVELS and elided == 5


def test_builtin_labels():
    facts = recording._label([].append)
    assert facts == {"name": "append", "qualname": "list.append", "file": "", "line": None, "kind": "builtin"}
    assert recording._label(len)["qualname"] == "len" and recording._label("[await]")["kind"] == "gap"


def test_filter_failures_are_facts_and_the_host_words_them():
    flt = capture.Expression("1 / args[0] > 0", "filter_expr", False)

    class Target(object):
        has_self, posnames = False, ("n",)
    check = flt.caller(Target())
    for n in (1, 0, 0):
        try:
            check((n,), {})
        except Exception as e:
            flt.failed(e)
    fact = flt.report(timebox.Budget())
    assert fact == {"arg": "filter_expr", "expr": "1 / args[0] > 0", "failures": 2, "refused": False,
                    "error": {"type": "ZeroDivisionError", "message": "division by zero"}}
    said = failure_warning(ExpressionFailure.model_validate(fact))
    assert said.startswith("{arg:filter_expr} expression '1 / args[0] > 0' raised ZeroDivisionError: division by "
                           "zero (2 calls). Those calls were treated as not matching")
    assert capture.Expression("args", "expr", False).report(None) is None


def test_a_syntax_error_names_the_argument():
    from flight_mcp.agent.registry import AgentError
    with pytest.raises(AgentError) as e:
        capture.Expression("args[0", "filter_expr", False)
    assert e.value.message.startswith("syntax error in {arg:filter_expr} expression 'args[0'")
    assert e.value.arg == "filter_expr"


def test_a_watch_record_is_the_hosts_record():
    from flight_mcp.agent import cmd_watch

    def fail():
        raise ValueError("negative order id -7")
    try:
        fail()
    except ValueError as e:
        exc = e
    record = {"time": time.time(), "cost_ms": 1.0, "is_exp": True, "tid": 1,
              "_pending": {"exc": (exc, exc.__traceback__), "expr_error": NameError("name 'x' is not defined")}}
    rec = Record.model_validate(cmd_watch.finish(record, {"expand": 1, "verbose": False, "raw": False},
                                                 timebox.Budget()))
    assert rec.expr_error.type == "NameError" and rec.exception.message == "negative order id -7"
    assert rec.exception.frames[-1].name == "fail" and rec.exception.frames[-1].source.startswith("raise ValueError")


def test_a_long_traceback_keeps_its_ends():
    def down(n):
        if n == 0:
            raise RuntimeError("bottom")
        down(n - 1)
    try:
        down(100)
    except RuntimeError as e:
        fact = capture.exception_fact(e, timebox.Budget(), e.__traceback__)
    assert len(fact["frames"]) == capture.TRACEBACK_FRAMES and fact["frames_elided"] == 102 - 60
    assert fact["frames"][0]["name"] == "test_a_long_traceback_keeps_its_ends"
