"""The MCP path through the official SDK client spawning `flight-mcp --stdio`, on every Python 3.8-3.13."""
import os

import anyio
import pytest

from flight_mcp.tools import all_tools

from .conftest import version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(180)


def injected_copies(pid):
    """How many payload copies the target has mapped: one per injection."""
    with open(f"/proc/{pid}/maps") as f:
        return len({line.split()[5] for line in f if "/inject-" in line and len(line.split()) >= 6})


def test_tools_list_has_schemas_and_annotations():
    async def main():  # a new interpreter, as a client starts the server (other tests fork it from a zygote)
        async with mcp_session(fresh_interpreter=True) as s:
            return (await s.list_tools()).tools

    listed = {t.name: t for t in anyio.run(main)}
    tools = all_tools()
    assert set(listed) == set(tools)
    assert {"list_processes", "attach", "detach", "stack", "module", "getglobal"} <= set(listed)
    for name, t in listed.items():
        assert t.description, name
        assert t.output_schema and t.output_schema.get("type") == "object", name
        assert "pid" in t.input_schema["properties"] or name == "list_processes", name
        assert t.annotations is not None, name
        assert t.annotations.read_only_hint is tools[name].read_only, name
    for name in ("list_processes", "attach", "stack", "module", "getglobal"):
        assert listed[name].annotations.read_only_hint is True, name


@pytest.mark.parametrize("version", version_params())
def test_mcp_session_attach_stack_getglobal_module_detach(spawn, version):
    t = spawn(version, "idle")
    sock = f"/tmp/flight-mcp-{os.getuid()}/agent-{t.pid}.sock"

    async def call(s, tool, **args):
        r = await s.call_tool(tool, args)
        assert not r.is_error, text_of(r)
        return r.structured_content, text_of(r)

    async def main():
        async with mcp_session() as s:
            data, text = await call(s, "list_processes", filter=str(t.script))
            mine = [p for p in data["processes"] if p["pid"] == t.pid]
            assert mine and mine[0]["python"] == version and mine[0]["agent_attached"] is False
            assert str(t.pid) in text and str(t.script) in text

            data, text = await call(s, "attach", pid=t.pid)
            assert data["injection"]["method"] == "pyinjector" and data["pid"] == t.pid
            assert f"attached to pid {t.pid}: Python {data['python_version']}" in text
            assert data["python_version"].startswith(version + ".")

            data, text = await call(s, "stack", pid=t.pid)
            assert [th["name"] for th in data["threads"]] == ["MainThread"]
            for th in data["threads"]:
                assert f'Traceback for thread {th["native_id"] or th["ident"]} ({th["name"]})' in text
                for fr in th["frames"]:
                    assert f'line {fr["line"]}, in {fr["qualname"]}' in text and fr["source"] in text

            data, text = await call(s, "getglobal", pid=t.pid, module="__main__")
            entries = {e["name"]: e for e in data["entries"]}
            assert data["mode"] == "listing" and entries["CONFIG"]["type"] == "dict"
            assert all(name in text for name in entries)

            data, text = await call(s, "getglobal", pid=t.pid, module="__main__", field="CONFIG", expand=2)
            assert data["mode"] == "value" and data["view"]["type"] == "dict"
            lines = text.splitlines()  # the seed's EXPR / TYPE / VALUE block
            assert "EXPR:" in lines[0] and "target" in lines[0], text
            assert "TYPE:" in lines[1] and "dict" in lines[1] and "VALUE:" in lines[2] and "5432" in text, text

            data, text = await call(s, "module", pid=t.pid, filepath=str(t.script))
            assert data["modules"] == ["__main__"] and text == "__main__"

            # Sessions are kept per pid: the second attach reuses the connection, no second injection.
            data, _ = await call(s, "attach", pid=t.pid)
            assert data["injection"]["method"] == "already attached"
            assert injected_copies(t.pid) == 1

            err = await s.call_tool("getglobal", {"pid": t.pid, "module": "no_such_mod", "field": "X"})
            assert err.is_error
            assert "module_not_found" in text_of(err) and "not imported in the target" in text_of(err)
            assert "'__main__'" in text_of(err)  # the fix: the name the target imported it under
            fact = err.structured_content["error"]  # the error as data: code, the argument at fault, a hint
            assert fact["code"] == "module_not_found" and fact["argument"] == "module" and fact["hint"], fact

            # A rule between arguments speaks MCP: the argument's name, never the CLI flag.
            err = await s.call_tool("trace", {"pid": t.pid, "module": "__main__", "method": "f", "depth": 0})
            assert err.is_error and err.structured_content["error"]["code"] == "usage", text_of(err)
            assert "depth" in text_of(err) and "-d" not in text_of(err), text_of(err)

            data, text = await call(s, "detach", pid=t.pid)
            assert data["detached"] is True and "socket closed" in text
            assert not os.path.exists(sock)

            data, _ = await call(s, "attach", pid=t.pid)  # after detach: a fresh injection
            assert data["injection"]["method"] == "pyinjector"
            assert injected_copies(t.pid) == 2
            await call(s, "detach", pid=t.pid)

    anyio.run(main)
    assert t.alive()


def test_mcp_error_result_names_cause_and_fix():
    async def main():
        async with mcp_session() as s:
            return await s.call_tool("stack", {"pid": 2 ** 22 + 1})

    r = anyio.run(main)
    assert r.is_error
    assert "no_such_process" in text_of(r) and "is not running" in text_of(r)
    assert "list_processes" in text_of(r)  # how to find a right pid
