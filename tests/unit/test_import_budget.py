"""What a one-shot command imports and builds: its own tool module and nothing of the MCP server, psutil or
the other tools; the validators of its own models only (issue 13: a warm CLI command's time is mostly
imports). No clock is read: the tests assert on which modules are imported and which models are built.

Each test imports flight_mcp afresh (with pydantic, psutil and the MCP stack forgotten first) and puts
sys.modules back afterwards, so the rest of the suite keeps the modules it had. pydantic_core stays: a
PyO3 extension cannot be initialised twice in one process (and it is loaded by pydantic in any case).
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

import pytest

# Forgotten before each test and looked for after it. Listed by top-level package.
FORGOTTEN = ("flight_mcp", "pydantic", "psutil", "mcp", "anyio", "starlette", "uvicorn", "httpx", "jsonschema",
             "sse_starlette")
# Never on a command's path: the MCP stack and the HTTP server, psutil (process listings only), the
# agent's socket server (it runs in targets; the host reads agent.codes alone), every other tool.
NOT_FOR_A_COMMAND = ("mcp", "anyio", "starlette", "uvicorn", "httpx", "jsonschema", "psutil",
                     "flight_mcp.server", "flight_mcp.http_server", "flight_mcp.skills", "flight_mcp.interactive",
                     "flight_mcp.agent.server", "flight_mcp.agent.registry", "flight_mcp.demo")


def _forgotten(name: str, also=()) -> bool:
    return name.split(".")[0] in FORGOTTEN or any(name == a or name.startswith(a + ".") for a in also)


@contextmanager
def fresh_imports(also=()):
    """sys.modules without FORGOTTEN (and the modules also names) for the block; yields the set of module
    names imported in it."""
    saved = dict(sys.modules)
    for name in [n for n in sys.modules if _forgotten(n, also)]:
        del sys.modules[name]
    before = set(sys.modules)
    imported: set[str] = set()
    try:
        yield imported
    finally:
        imported.update(set(sys.modules) - before)
        sys.modules.clear()
        sys.modules.update(saved)


def _offending(imported: set[str], prefixes) -> list[str]:
    return sorted(n for n in imported if any(n == p or n.startswith(p + ".") for p in prefixes))


class _AnsweringSessions:
    """The connection layer only (a canned agent answer instead of a socket): the command's own parsing,
    validation, Result model and rendering run for real."""

    def __init__(self, answer: dict):
        self.answer = answer
        self.requests: list[tuple[int, str, dict]] = []

    def request(self, pid, cmd, args, deadline, **_):
        self.requests.append((pid, cmd, args))
        return self.answer


GETGLOBAL_ANSWER = {"mode": "value", "owner": "__main__", "field": "CONFIG", "expr": "target",
                    "view": {"type": "dict", "kind": "mapping", "repr": "{'retries': 3}", "len": 1}}


def _run(words: list[str], answer: dict, capsys) -> tuple[int, str]:
    from flight_mcp import cli
    sessions = _AnsweringSessions(answer)
    rc = cli.run_command(4242, words, color=False, as_json=False, allow_mutating=False, sessions=sessions,
                         cmd=" ".join(words))
    assert sessions.requests and sessions.requests[0][:2] == (4242, words[0])
    return rc, capsys.readouterr().out


def test_a_command_imports_its_own_tool_and_nothing_of_the_server(capsys):
    with fresh_imports() as imported:
        rc, out = _run(["getglobal", "__main__", "CONFIG"], GETGLOBAL_ANSWER, capsys)
    assert rc == 0 and "'retries': 3" in out.replace('"', "'")
    assert "flight_mcp.tools.getglobal" in imported and "pydantic" in imported   # the check sees imports
    assert _offending(imported, NOT_FOR_A_COMMAND) == []
    tools = sorted(n for n in imported if n.startswith("flight_mcp.tools.") and n.count(".") == 2)
    shared = {"flight_mcp.tools.base", "flight_mcp.tools.fields", "flight_mcp.tools.gil_wait"}
    assert [t for t in tools if t not in shared] == ["flight_mcp.tools.getglobal"]


def test_the_agent_package_is_not_started_by_the_host():
    """errors.py reads the catalogue agent/codes.py: that must not import the agent's server (sockets,
    json, its threads' machinery) into every command."""
    with fresh_imports() as imported:
        import flight_mcp.errors  # noqa: F401
    assert "flight_mcp.agent.codes" in imported
    assert _offending(imported, ("flight_mcp.agent.server", "flight_mcp.agent.registry",
                                 "flight_mcp.agent.atfork", "flight_mcp.agent.native", "pydantic")) == []


def test_the_version_and_the_parser_need_no_pydantic(capsys):
    with fresh_imports() as imported:
        from flight_mcp import cli
        with pytest.raises(SystemExit):
            cli.main(["--version"])
    assert "flight-mcp" in capsys.readouterr().out
    imported.discard("pydantic.plugin._loader")   # cli's stand-in for pydantic's plugin loader, imports nothing
    assert _offending(imported, ("pydantic", "flight_mcp.tools", "flight_mcp.session", "flight_mcp.attach",
                                 *NOT_FOR_A_COMMAND)) == []


def test_importing_tools_builds_no_validator():
    """Every model defers its validator to its first use (defer_build): importing every tool, as help and
    the MCP server do, builds none of their Params or Result models."""
    with fresh_imports():
        from pydantic import BaseModel

        from flight_mcp.tools import all_tools
        tools = all_tools()
        built = sorted({f"{m.__module__}.{m.__qualname__}" for t in tools.values()
                        for m in (t.params, t.result, t.result.__bases__[0])
                        if issubclass(m, BaseModel) and m.__pydantic_complete__})
    assert len(tools) > 10
    assert built == []


def test_a_command_builds_the_validators_it_uses_only(capsys):
    with fresh_imports():
        from flight_mcp import models
        rc, _ = _run(["getglobal", "__main__", "CONFIG"], GETGLOBAL_ANSWER, capsys)
        from flight_mcp.tools import getglobal
        built = {name for name, m in (("GetGlobalParams", getglobal.GetGlobalParams),
                                      ("GetGlobalResult", getglobal.GetGlobalResult),
                                      ("Entry", getglobal.Entry), ("Frame", models.Frame),
                                      ("ExceptionFact", models.ExceptionFact))
                 if m.__pydantic_complete__}
    assert rc == 0
    # Params and Result are validated; a listing's Entry, frames and exceptions are not part of this answer
    assert built == {"GetGlobalParams", "GetGlobalResult"}


def test_a_command_does_not_look_for_pydantic_plugins(monkeypatch, capsys):
    """The CLI disables pydantic's plugins (it uses none) and then skips their search, importlib.metadata
    and all: a command whose arguments are refused has built its Params validator, with the same error."""
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
    with fresh_imports(also=("importlib.metadata",)) as imported:
        from flight_mcp import cli
        rc = cli.main(["4242", "--cmd", "getglobal __main__ CONFIG -x many"])
    err = capsys.readouterr().err
    assert rc == 2 and "-x/--expand: Input should be a valid integer" in err and "Usage: getglobal" in err, err
    assert "pydantic.plugin._loader" in imported and "flight_mcp.tools.getglobal" in imported
    assert _offending(imported, ("importlib.metadata", *NOT_FOR_A_COMMAND)) == []


def test_plugins_stay_with_pydantic_when_the_user_chose_them(monkeypatch):
    """Only PYDANTIC_DISABLE_PLUGINS=__all__ (ours by default) skips the search: a user's own choice of
    plugins keeps pydantic's loader."""
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "some_plugin")
    with fresh_imports():
        from flight_mcp import cli
        cli._no_pydantic_plugins()
        from pydantic.plugin import _loader
        assert hasattr(_loader, "entry_points")   # pydantic's own module
