"""One agent-style session on the demo target through the official MCP SDK client:
list_processes -> attach -> stack -> trace -> watch -> detach. Run it to see the transcript:
`python -m tests.agent_session`; tests/test_agent_session.py checks it."""
from __future__ import annotations

import json
import subprocess
import sys

import anyio

from flight_mcp.demo import TARGET

from .mcp_client import mcp_session, text_of

STEPS = [
    ("list_processes", {"filter": "demo_target"}),
    ("attach", {}),
    ("stack", {}),
    ("trace", {"module": "__main__", "cls": "OrderService", "method": "process_order", "limit": 1,
               "filter_expr": "args[0] > 0"}),  # every 7th order is invalid and raises early
    ("watch", {"module": "__main__", "cls": "OrderService", "method": "apply_discount",
               "expr": "args, return_obj, cost", "limit": 2}),
    ("detach", {}),
]


async def run_session(pid: int) -> list[tuple[str, dict, object]]:
    transcript = []
    async with mcp_session() as s:
        for name, args in STEPS:
            args = dict(args) if name == "list_processes" else {"pid": pid, **args}
            result = await s.call_tool(name, args)
            transcript.append((name, args, result))
    return transcript


def main() -> int:
    proc = subprocess.Popen([sys.executable, "-u", TARGET], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        for name, args, result in anyio.run(run_session, proc.pid):
            print(f">>> tools/call {name} {json.dumps(args)}")
            print(text_of(result))
            print(f"    (isError={result.is_error}; structuredContent keys: "
                  f"{sorted((result.structured_content or {}).keys())})\n")
    finally:
        proc.kill()
        proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
