"""The official MCP SDK client, starting `flight-mcp --stdio` for real: a process of its own speaking
MCP over its stdin/stdout pipes. By default the process is forked from a zygote that has imported
flight_mcp and the SDK already (tests/cli_zygote.py), which saves ~1.5 s of imports per session;
`fresh_interpreter=True` (or FLIGHT_TESTS_NO_ZYGOTE=1 in the environment) starts
`python -m flight_mcp.cli` instead."""
from __future__ import annotations

import os
import sys
from contextlib import asynccontextmanager

from mcp import ClientSession, StdioServerParameters, stdio_client

from . import cli_zygote


def server_params(*extra_args: str, fresh_interpreter: bool = False) -> StdioServerParameters:
    args = ["--stdio", *extra_args]
    if fresh_interpreter or os.environ.get("FLIGHT_TESTS_NO_ZYGOTE"):
        return StdioServerParameters(command=sys.executable, args=["-m", "flight_mcp.cli", *args])
    command, argv = cli_zygote.launcher_command(args)
    return StdioServerParameters(command=command, args=argv)


@asynccontextmanager
async def mcp_session(*extra_args: str, fresh_interpreter: bool = False):
    async with stdio_client(server_params(*extra_args, fresh_interpreter=fresh_interpreter)) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")
