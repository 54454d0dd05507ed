"""The official MCP SDK client, spawning `flight-mcp --stdio` for real."""
from __future__ import annotations

import sys
from contextlib import asynccontextmanager

from mcp import ClientSession, StdioServerParameters, stdio_client


@asynccontextmanager
async def mcp_session(*extra_args: str):
    params = StdioServerParameters(command=sys.executable, args=["-m", "flight_mcp.cli", "--stdio", *extra_args])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")
