"""The MCP Inspector's command-line mode (a real external client, Node.js) drives `flight-mcp --stdio`."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PYTHONS

pytestmark = pytest.mark.timeout(400)

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "inspector"
# npm resolves the newest inspector that runs on Node 20 to 0.15.x (newer ones need Node >= 22.19).
PACKAGE = "@modelcontextprotocol/inspector@0.15"


@pytest.fixture(scope="module")
def inspector():
    exe = CACHE / "node_modules" / ".bin" / "mcp-inspector"
    if not exe.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: the MCP Inspector test needs Node.js and npm")
        CACHE.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), PACKAGE],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    return str(exe)


def run_inspector(exe: str, *args: str) -> dict:
    server = [sys.executable, "-m", "flight_mcp.cli", "--stdio"]
    r = subprocess.run([exe, "--cli", *server, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(r.stdout)


def test_inspector_lists_tools_and_calls_stack_and_trace(inspector, spawn):
    listed = run_inspector(inspector, "--method", "tools/list")
    tools = {t["name"]: t for t in listed["tools"]}
    for name in ("list_processes", "attach", "detach", "stack", "getglobal", "module", "trace", "watch",
                 "reload", "vmtool"):
        assert name in tools, f"{name} missing from tools/list"
        assert "outputSchema" in tools[name] and tools[name]["description"]
    assert tools["stack"]["annotations"]["readOnlyHint"] is True
    assert tools["reload"]["annotations"]["readOnlyHint"] is False

    target = spawn(next(v for v, exe in PYTHONS.items() if exe), "demo")
    stack = run_inspector(inspector, "--method", "tools/call", "--tool-name", "stack",
                          "--tool-arg", f"pid={target.pid}")
    assert not stack.get("isError"), stack
    names = [t["name"] for t in stack["structuredContent"]["threads"]]
    assert "order-worker" in names and "MainThread" in names

    trace = run_inspector(inspector, "--method", "tools/call", "--tool-name", "trace",
                          "--tool-arg", f"pid={target.pid}", "--tool-arg", "module=__main__",
                          "--tool-arg", "cls=OrderService", "--tool-arg", "method=process_order",
                          "--tool-arg", "limit=1",
                          "--tool-arg", "filter_expr=args[0] > 0")  # every 7th demo order raises early
    assert not trace.get("isError"), trace
    text = trace["content"][0]["text"]
    assert "process_order" in text and "save_to_db" in text and "<built-in>" in text
    assert trace["structuredContent"], trace
    assert target.alive()
