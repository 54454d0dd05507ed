"""The request is the Params' own dump, and the agent keeps no defaults: each agent command reads
exactly the arguments its tool sends (plus allow_mutating, which Call adds), never args.get(name,
default). A field renamed on one side only, or a default restated in the agent, fails here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flight_mcp.tools import all_tools

AGENT = Path(__file__).resolve().parents[2] / "flight_mcp" / "agent"
ADDED_BY_CALL = {"allow_mutating", "may_change_target", "timeout_s"}  # Call.request adds these (timeout_s: a capture's deadline)


def _reads(path: Path) -> tuple[set[str], list[str]]:
    """(keys read as args["k"], places that call args.get) in one agent module."""
    keys, gets = set(), []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "args" \
                and isinstance(node.slice, ast.Constant):
            keys.add(node.slice.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and getattr(node.func.value, "id", None) == "args":
            gets.append(f"{path.name}:{node.lineno}")
    return keys, gets


def test_no_agent_command_keeps_a_default():
    gets = [g for p in sorted(AGENT.glob("*.py")) for g in _reads(p)[1]]
    assert not gets, f"args.get in the agent (a default of its own): {gets}"


def _tools_with_commands() -> list:
    return [pytest.param(tool, id=name) for name, tool in sorted(all_tools().items())
            if (AGENT / f"cmd_{name}.py").exists()]


@pytest.mark.parametrize("tool", _tools_with_commands())
def test_agent_reads_exactly_what_the_tool_sends(tool):
    read, _ = _reads(AGENT / f"cmd_{tool.name}.py")
    sent = set(tool.params.model_fields) - set(tool.params.host_only)
    assert read - ADDED_BY_CALL <= sent, f"the agent reads arguments the tool never sends: {read - sent}"
    assert sent <= read, f"the tool sends arguments its agent command never reads: {sent - read}"
