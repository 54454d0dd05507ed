"""trace's and watch's arguments: one vocabulary with the other tools, the depth rule as a model
validator (in the caller's language), and the request is the Params' own dump, which the agent
reads whole: no defaults, no range checks of its own."""
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from flight_mcp import cmdline
from flight_mcp.errors import FlightError
from flight_mcp.tools.base import validation_problems
from flight_mcp.tools.trace import TOOL as TRACE
from flight_mcp.tools.trace import TraceParams
from flight_mcp.tools.watch import TOOL as WATCH
from flight_mcp.tools.watch import WatchParams

AGENT = Path(__file__).resolve().parents[2] / "flight_mcp" / "agent"


def _parse(cmd):
    return cmdline.parse(cmdline.split(cmd), {"trace": TRACE, "watch": WATCH}, 1)[1]


@pytest.mark.parametrize("depth", [-1, 1, 2, 50])
def test_depth_levels_or_the_full_tree(depth):
    assert TraceParams(pid=1, module="m", method="f", depth=depth).depth == depth


@pytest.mark.parametrize("depth", [0, -2])
def test_depth_rule_names_the_argument_as_the_caller_does(depth):
    with pytest.raises(ValidationError) as e:
        TraceParams(pid=1, module="m", method="f", depth=depth)
    assert validation_problems(e.value, str).startswith("depth must be >= 1")   # over MCP
    with pytest.raises(FlightError) as e:
        _parse(f"trace m f -d {depth}")
    assert "-d/--depth must be >= 1" in e.value.message and "{arg:" not in e.value.message


def test_limit_is_the_shared_name_and_the_cli_keeps_its_spellings():
    for flag in ("-n", "--limits", "--limit"):
        assert _parse(f"trace m f {flag} 3").limit == 3
        assert _parse(f"watch m f {flag} 3").limit == 3
    assert "limits" not in TraceParams.model_fields and "limits" not in WatchParams.model_fields
    with pytest.raises(FlightError) as e:
        _parse("trace m f -n 0")
    assert "-n/--limits/--limit" in e.value.message


def test_watch_expand_starts_at_zero():
    assert _parse("watch m f -x 0").expand == 0
    with pytest.raises(FlightError):
        _parse("watch m f -x -1")


def test_one_name_for_interval_and_entrance_time():
    p = _parse("trace m f -i 2 -et 5")
    assert (p.interval, p.entrance_time) == (2.0, 5.0)
    fields = set(TRACE.result.model_fields)
    assert {"interval", "entrance_time"} <= fields and not {"interval_ms", "entrance_ms"} & fields


def test_descriptions_do_not_restate_defaults():
    for tool in (TRACE, WATCH):
        assert "default" not in tool.description.lower(), tool.description
        for name, field in tool.params.model_fields.items():
            assert "default" not in (field.description or "").lower(), (tool.name, name)


def _read_by_agent(source):
    """The argument names a command reads from its request: args["name"] (args.get is not allowed)."""
    assert "args.get(" not in source, "the agent keeps no defaults: read args[\"name\"]"
    return set(re.findall(r'args\["(\w+)"\]', source))


@pytest.mark.parametrize("params, command", [
    (TraceParams(pid=1, module="m", method="f"), "cmd_trace.py"),
    (WatchParams(pid=1, module="m", method="f"), "cmd_watch.py"),
])
def test_the_agent_reads_exactly_the_request(params, command):
    # what Call.request adds: the read-only gate, and the capture's own deadline (budget_arg)
    sent = set(params.agent_args()) | {"allow_mutating", "timeout_s"}  # may_change_target: not read by captures
    assert _read_by_agent((AGENT / command).read_text()) == sent
    assert "int_arg" not in (AGENT / "capture.py").read_text() and "float_arg" not in (AGENT / "capture.py").read_text()
