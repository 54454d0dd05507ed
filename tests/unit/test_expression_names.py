"""The host refuses an expression that reads a name nothing defines, before attaching."""
import pytest
from pydantic import ValidationError

from flight_mcp.expressions import CAPTURE_NAMES, unknown_names
from flight_mcp.tools.getglobal import GetGlobalParams
from flight_mcp.tools.trace import TraceParams
from flight_mcp.tools.vmtool import VmtoolParams
from flight_mcp.tools.watch import WatchParams


@pytest.mark.parametrize("source, unknown", [
    ("undefined_var > 1", ["undefined_var"]),
    ("args[0] > limit and kwargs.get(x)", ["limit", "x"]),
    ("[v for v in args if v > 1]", []),
    ("{k: v for k, v in kwargs.items()}", []),
    ("(lambda q, *r, **s: q + len(r) + len(s))(1)", []),
    ("(n := len(args)) > 1 and n < 5", []),
    ("target.undefined_attr", []),           # attributes are the target's business, not names
    ("len(args) + max(cost, 0) + isinstance(return_obj, dict)", []),
    ("args[0] >", []),                        # a syntax error: the agent words it, with a caret
])
def test_free_names(source, unknown):
    assert unknown_names(source, CAPTURE_NAMES) == unknown


def test_each_expression_argument_knows_its_own_names():
    with pytest.raises(ValidationError, match="'args' is not defined: an expression here sees target and"):
        GetGlobalParams(pid=1, module="m", field="X", expr="args[0]")
    with pytest.raises(ValidationError, match="'target' is not defined: an expression here sees instances"):
        VmtoolParams(pid=1, module="m", cls="C", expr="target.x")
    VmtoolParams(pid=1, module="m", cls="C", expr="[i for i in instances]", count_by="target.status")
    with pytest.raises(ValidationError, match="'cfg' is not defined"):
        TraceParams(pid=1, module="m", method="f", filter_expr="cfg.x")
    with pytest.raises(ValidationError, match="'oops' is not defined"):
        WatchParams(pid=1, module="m", method="f", expr="oops")
