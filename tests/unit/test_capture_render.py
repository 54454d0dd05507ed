"""trace's and watch's text, from hand-made Results: the exact layout the end-to-end tests read
(flight_profiler's), the sentences the host writes from the agent's facts (expression failures,
empty captures, progress), and each in the caller's language: argument names over MCP, flags on
the CLI. No process is started."""
from flight_mcp.render import wall_time
from flight_mcp.tools import trace, watch
from flight_mcp.tools.base import Call
from flight_mcp.tools.capture_common import ExpressionFailure, Progress, empty_hint, failure_warning, progress_line
from flight_mcp.tools.trace import TraceParams, TraceResult
from flight_mcp.tools.watch import WatchParams, WatchResult

SEP = "─" * 60
STARTED, AT = 1700000000.25, 1700000000.5
SUMMARY = dict(target="m.Svc.f", kind="function", file="/srv/m.py", line=3, mechanism="sys.monitoring",
               started=STARTED, duration_s=1.5, seen=4, matched=3, captured=1, limit=1, stopped="limit")
CLI = Call(None, on_cli=True)
MCP = Call(None)


def _trace(**kw) -> TraceResult:
    root = dict(name="f", qualname="Svc.f", file="/srv/m.py", line=3, cost_ms=12.346, children=[
        dict(name="sleep", qualname="sleep", file="", kind="builtin", cost_ms=10.0),
        dict(name="[await]", qualname="[await]", file="", kind="gap", cost_ms=1.5),
        dict(name="g", qualname="g", file="/srv/m.py", line=9, cost_ms=0.8, children=[
            dict(name="len", qualname="len", file="", kind="builtin", cost_ms=0.01)])])
    inv = dict(time=AT, thread="w", tid=7, daemon=True, cost_ms=12.3456, hidden_nodes=2, root=root,
               exception={"type": "ValueError", "message": "bad"})
    return TraceResult.model_validate({**SUMMARY, "depth": -1, "interval": 0.1, "entrance_time": 0,
                                       "invocations": [inv], **kw})


def test_trace_text_layout():
    assert trace.TOOL.text(_trace(), False).splitlines() == [
        SEP,
        f"🔍 {wall_time(AT)} thread=w tid=7 daemon=True cost=12.346ms",
        "[12.346ms] Svc.f m.py:3",   # the qualified name, on every Python
        "├─ [10.0ms] sleep <built-in>",
        "├─ [1.5ms] [await]",
        "└─ [0.8ms] g m.py:9",
        "   └─ [0.01ms] len <built-in>",
        "  raised ValueError: bad",
        SEP,
        "trace m.Svc.f: 1 of 1 captured; 4 calls seen, 3 matched; stopped because the limit of 1 was reached.",
        "Sub-calls under 0.1ms are hidden (interval 0 shows them).",
    ]


def test_wall_time_is_flight_profilers_stamp():
    import re
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:500", wall_time(AT))


def test_trace_hints_speak_the_callers_language():
    r = _trace(invocations=[{**_trace().invocations[0].model_dump(), "elided_nodes": 3, "dropped_nodes": 1}])
    mcp = trace.TOOL.text(r.spoken_in(TraceParams, MCP), False)
    assert "  ... 4 more sub-calls not shown (size bound): narrow with depth or interval" in mcp
    assert "(interval 0 shows them)" in mcp and "-i/" not in mcp and "-d/" not in mcp
    cli = trace.TOOL.text(r.spoken_in(TraceParams, CLI), False)
    assert "narrow with -d/--depth or -i/--interval" in cli and "(-i/--interval 0 shows them)" in cli


def test_trace_recorder_and_profiler_notes():
    text = trace.TOOL.text(_trace(recorder="python", recorder_fallback="why not", profiler_busy=2), False)
    assert "Recorded by the Python recorder" in text and "why not." in text
    assert "2 calls were not recorded: their thread runs another profiler" in text


def test_trace_node_is_a_frame_and_unknown_facts_are_refused():
    import pytest
    from pydantic import ValidationError

    from flight_mcp.models import Frame
    node = _trace().invocations[0].root
    assert isinstance(node, Frame) and node.children[0].kind == "builtin" and node.children[1].kind == "gap"
    with pytest.raises(ValidationError):
        TraceResult.model_validate({**_trace().model_dump(), "surprise": 1})
    with pytest.raises(ValidationError):
        trace.Node.model_validate({"name": "f", "file": "", "cost_ms": 1.0, "colour": "red"})


def _watch(records, **kw) -> WatchResult:
    return WatchResult.model_validate({**SUMMARY, "captured": len(records), "expr": "args", "records": records, **kw})


VIEW = {"type": "tuple", "kind": "sequence", "repr": "(1, 'a')", "len": 2, "children": [
    {"view": {"type": "int", "kind": "leaf", "repr": "1"}}, {"view": {"type": "str", "kind": "leaf", "repr": "'a'"}}]}
EXC = {"type": "ValueError", "message": "negative order id -7", "frames": [
    {"file": "/srv/m.py", "line": 12, "name": "process", "source": "self.validate(oid)"},
    {"file": "/srv/m.py", "line": 20, "name": "validate", "source": "raise ValueError(...)"}]}


def test_watch_text_layout_value_failure_and_exception():
    ok = {"time": AT, "cost_ms": 1.5, "is_exp": False, "thread": "w", "tid": 7, "daemon": True, "view": VIEW}
    failed = {**ok, "view": None, "expr_error": {"type": "NameError", "message": "name 'x' is not defined"}}
    raised = {**ok, "is_exp": True, "exception": EXC}
    lines = watch.TOOL.text(_watch([ok, failed, raised], limit=3), False).splitlines()
    title = f"{wall_time(AT)} method=m.Svc.f cost=1.500000ms"
    assert lines == [
        SEP, f"✓ {title} is_exp=False thread=w result={{",
        "  EXPR:   args",
        "  TYPE:   <class 'tuple'>",
        "  VALUE:  (",
        "            1,",
        "            \"a\"",
        "          )",
        "}",
        SEP, f"✓ {title} is_exp=False thread=w result={{",
        "  EXPR:               args",
        "  WATCH_FAIL_INFO:    NameError: name 'x' is not defined",
        "}",
        SEP, f"✗ {title} is_exp=True thread=w result={{",
        "  EXPR:       args",
        "  TYPE:       <class 'tuple'>",
        "  VALUE:      (",
        "                1,",
        "                \"a\"",
        "              )",
        "  EXCEPTION:  Traceback (most recent call last):",
        "                File \"/srv/m.py\", line 12, in process",
        "                  self.validate(oid)",
        "                File \"/srv/m.py\", line 20, in validate",
        "                  raise ValueError(...)",
        "              ValueError: negative order id -7",
        "}",
        SEP,
        "watch m.Svc.f: 3 of 3 captured; 4 calls seen, 3 matched; stopped because the limit of 3 was reached.",
    ]


def test_expression_failures_become_warnings_in_the_callers_language():
    flt = ExpressionFailure(arg="filter_expr", expr="1 / args[0]", failures=3,
                            error={"type": "ZeroDivisionError", "message": "division by zero"})
    expr = ExpressionFailure(arg="expr", expr="nosuch", failures=1, error={"type": "NameError", "message": "no"})
    refused = ExpressionFailure(arg="filter_expr", expr="target.x", failures=1, refused=True,
                                error={"type": "ReadOnlyRefused", "message": "read-only mode refused a property"})
    assert failure_warning(flt) == ("{arg:filter_expr} expression '1 / args[0]' raised ZeroDivisionError: division "
                                    "by zero (3 calls). Those calls were treated as not matching; the application "
                                    "was not affected.")
    assert failure_warning(expr).endswith("raised NameError: no. Those calls are shown without a value; the "
                                          "application was not affected.")
    assert failure_warning(refused).startswith("{arg:filter_expr} expression 'target.x': read-only mode refused")
    r = _watch([], expression_failures=[flt, expr])
    mcp = watch.TOOL.text(r.spoken_in(WatchParams, MCP), False).splitlines()
    assert [x for x in mcp if x.startswith("warning: ")] == [
        "warning: " + failure_warning(flt).replace("{arg:filter_expr}", "filter_expr"),
        "warning: " + failure_warning(expr).replace("{arg:expr}", "expr")]
    cli = watch.TOOL.text(r.spoken_in(WatchParams, CLI), False)
    assert "warning: -f/--filter_expr/--filter expression '1 / args[0]' raised" in cli
    assert "warning: --expr expression 'nosuch' raised NameError" in cli


def test_empty_capture_hints_name_arguments_as_the_caller_does():
    nothing = dict(captured=0, stopped="deadline")
    cases = [(dict(seen=0, matched=0), "watch", "raise timeout_s", "raise --timeout"),
             (dict(seen=9, matched=0), "watch", "the filter (filter_expr/exception)",
              "the filter (-f/--filter_expr/--filter/-e/--exception)"),
             (dict(seen=9, matched=0), "trace", "the filter (filter_expr)", "the filter (-f/--filter_expr/--filter)"),
             (dict(seen=9, matched=4, skipped=4), "trace", "lower entrance_time",
              "lower -et/--entrance_time/--entrance-time")]
    for facts, what, mcp, cli in cases:
        if what == "trace":
            r = TraceResult.model_validate({**SUMMARY, **nothing, **facts, "depth": -1, "interval": 0.1,
                                            "entrance_time": 5, "invocations": []})
            params, tool = TraceParams, trace.TOOL
        else:
            r, params, tool = _watch([], **nothing, **facts), WatchParams, watch.TOOL
        assert mcp in empty_hint(r.spoken_in(params, MCP), what)
        text = tool.text(r.spoken_in(params, CLI), False)
        assert cli in text and mcp not in text, text
    assert "below -et/--entrance_time/--entrance-time;" in trace.TOOL.text(r, False)


def test_progress_line_from_the_agents_facts():
    assert progress_line(Progress(captured=1, limit=3, target="m.f", cost_ms=12.3456, thread="w")) == \
        "m.f 12.346ms on w"
    assert progress_line(Progress(captured=1, limit=3, target="m.f", cost_ms=1.0, exception="ValueError")) == \
        "m.f 1.000ms raised ValueError"
