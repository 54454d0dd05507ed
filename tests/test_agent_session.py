"""An agent's whole first session on a live service, through the official MCP SDK client."""
import anyio
import pytest

from .agent_session import run_session
from .conftest import version_params
from .mcp_client import text_of

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))
def test_list_attach_stack_trace_watch_detach(spawn, version):
    t = spawn(version, "demo")
    steps = {name: result for name, _, result in anyio.run(run_session, t.pid)}
    assert not any(r.is_error for r in steps.values()), {n: text_of(r) for n, r in steps.items() if r.is_error}
    assert t.pid in [p["pid"] for p in steps["list_processes"].structured_content["processes"]]
    assert steps["attach"].structured_content["python_version"].startswith(version)
    assert "order-worker" in text_of(steps["stack"])
    tree = text_of(steps["trace"])
    assert "process_order" in tree and "save_to_db" in tree and "<built-in>" in tree
    watch = steps["watch"].structured_content
    assert watch["captured"] == 2 and len(watch["records"]) == 2
    assert steps["detach"].structured_content["detached"] is True
    assert t.alive()
