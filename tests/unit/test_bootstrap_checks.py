"""The bootstrap's first lines, the checks (trusted_files.py): from the bytecode compiled for the target when
the host has it (compiling them was ~5-10 ms of every attach), else from their source; the same checks."""
import importlib.util
import marshal

import pytest

from flight_mcp.attach import bootstrap

ARGS = dict(module="_flight_mcp_agent_x", agent_dir="/tmp/flight-mcp-0/agent-x", agent_uid=0,
            manifest={"__init__.py": "0" * 64}, sock="/tmp/s", host_uid=0, build="x", errfile="/tmp/e")


def checks_of(script: str) -> dict:
    """The namespace the script's checks leave (what runs before the agent is loaded)."""
    ns = {"__builtins__": __builtins__, "__flight_mcp_bootstrap__": "/tmp/flight-mcp-0/inject-1-x.py"}
    exec(compile(script.split("\ndef _flight_mcp_start():")[0], "<bootstrap>", "exec"), ns)
    return ns


def bytecode(source: str) -> bytes:
    return importlib.util.MAGIC_NUMBER + b"\0" * 12 + marshal.dumps(compile(source, "<checks>", "exec"))


def test_the_checks_run_from_the_recorded_bytecode():
    script = bootstrap.bootstrap_script(**ARGS, checks=bytecode(bootstrap._checks_source() + "\nFROM = 'bytecode'\n"))
    ns = checks_of(script)
    assert ns["FROM"] == "bytecode" and callable(ns["load_agent"]) and "_flight_mcp_checks" not in ns


@pytest.mark.parametrize("checks", [None, b"\0\0\0\0" + bytecode("FROM = 'other'")[4:], b"\xff" * 40,
                                    importlib.util.MAGIC_NUMBER + b"\0" * 12 + marshal.dumps(42)],
                         ids=["none", "another_interpreter", "garbage", "not_code"])
def test_without_usable_bytecode_the_checks_are_compiled_from_their_source(checks):
    ns = checks_of(bootstrap.bootstrap_script(**ARGS, checks=checks))
    assert "FROM" not in ns and callable(ns["load_agent"]) and ns["AgentFiles"].__name__ == "AgentFiles"


def test_the_checks_file_is_part_of_the_agent_build():
    """Its bytecode comes from the agent folder (compiled there for the target's version), so a change of the
    checks is a new build: no agent folder keeps bytecode of older checks."""
    build, files = bootstrap.agent_sources()
    assert dict(files)[bootstrap.CHECKS_FILE] == bootstrap._checks_source().encode()
