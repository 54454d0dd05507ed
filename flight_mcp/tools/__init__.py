"""Every tool module of this package, found by listing it (a new tool needs no registration here).

Importing this package imports tools/base.py only: a one-shot command imports its own tool module
(cli._tools_for) and all_tools() is for what needs every tool (help, the MCP server, the skills)."""
from __future__ import annotations

import importlib

from .base import Tool


def all_tools() -> dict[str, Tool]:
    import pkgutil
    found: dict[str, Tool] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base":
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for tool in getattr(mod, "TOOLS", ()) or ((mod.TOOL,) if hasattr(mod, "TOOL") else ()):
            found[tool.name] = tool
    return found
