"""One catalogue of error codes (agent/codes.py): every code raised anywhere is in it, each has a hint,
and an error names arguments in the caller's language (MCP argument names over MCP, flags on the CLI)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import Field

from flight_mcp.agent.codes import CODES, arg
from flight_mcp.errors import FlightError
from flight_mcp.tools.base import Call, Cli, Params, Tool, cli_name
from flight_mcp.models import Fact

PACKAGE = Path(__file__).resolve().parents[2] / "flight_mcp"


def _raised_codes():
    """(file:line, code or None when computed) of every AgentError/FlightError built in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                    "AgentError", "FlightError") and node.args:
                first = node.args[0]
                code = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
                yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", code, first


def test_every_raised_code_is_in_the_catalogue():
    unknown = [f"{where}: {code!r}" for where, code, _ in _raised_codes() if code is not None and code not in CODES]
    assert not unknown, "codes missing from agent/codes.py: " + ", ".join(unknown)


def test_codes_are_literal_so_the_catalogue_can_be_checked():
    # A code passed on from a caught error (e.code / e.kind) or checked against the catalogue
    # (a name) is fine; one built from text is not.
    computed = [f"{where}: {ast.unparse(node)}" for where, code, node in _raised_codes()
                if code is None and not (isinstance(node, ast.Attribute) and node.attr in ("code", "kind"))
                and not isinstance(node, ast.Name)]
    assert not computed, "codes computed from text: " + ", ".join(computed)


def test_not_found_codes_are_in_the_catalogue():
    from flight_mcp.agent import lookup
    assert all(code in CODES for code, _ in lookup._NOT_FOUND.values())


def test_every_code_has_a_hint():
    assert all(isinstance(h, str) and h.endswith(".") for h in CODES.values())
    assert FlightError("agent_timeout", "x").hint == CODES["agent_timeout"]


class _P(Params):
    depth: int = Field(-1, description="d")
    filter_expr: str | None = Field(None, description="f")


_P.model_fields["depth"].metadata.append(Cli("-d", "--depth"))
_P.model_rebuild(force=True)


def _failing_tool():
    def run(p, call):
        raise FlightError("bad_argument", f"{arg('depth')} must be -1 or >= 1", arg="depth")
    return Tool(name="t", params=_P, result=Fact, run=run, render=lambda r, c: "", description="")


@pytest.mark.parametrize("on_cli, expected", [(False, "depth must be"), (True, "-d/--depth must be")])
def test_errors_speak_the_callers_language(on_cli, expected):
    with pytest.raises(FlightError) as e:
        _failing_tool().invoke(_P(pid=1), Call(None, on_cli=on_cli))
    assert e.value.message.startswith(expected) and e.value.arg == "depth"
    assert "{arg:" not in e.value.message


def test_cli_names():
    assert cli_name(_P, "depth") == "-d/--depth"
    assert cli_name(_P, "timeout_s") == "--timeout"
    assert cli_name(_P, "filter_expr") == "filter_expr"  # no CLI spelling: its own name
