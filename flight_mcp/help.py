"""`help` and `help CMD` on the command line, as flight_profiler offers them, from the same sources as
the MCP schema and the skills: each tool's description, its Params (usage, flags, defaults) and the
example command lines of its skill."""
from __future__ import annotations

import re
import textwrap

from .errors import FlightError
from .render import paint
from .tools.base import Tool

WIDTH = 100


def _first_sentence(text: str) -> str:
    m = re.match(r"(.+?[.:])(\s|$)", text)
    return (m.group(1) if m else text).rstrip(":.")


def _names(tools: dict[str, Tool]) -> dict[str, str]:
    return {name: name + "".join(f" ({a})" for a in tool.aliases) for name, tool in tools.items()}


def command_rows(tools: dict[str, Tool], most: int | None = None) -> list[str]:
    """One line per command: its name (aliases) and the first sentence of its description (cut to
    `most` characters)."""
    names = _names(tools)
    width = max(len(n) for n in names.values()) + 2
    rows = [f"{names[name].ljust(width)}{_first_sentence(tools[name].description)}" for name in sorted(tools)]
    return [row if most is None or len(row) <= most else row[:most - 1].rstrip() + "…" for row in rows]


def overview(tools: dict[str, Tool], color: bool) -> str:
    width = max(len(n) for n in _names(tools).values()) + 2
    out = [paint(f"{'NAME'.ljust(width)}DESCRIPTION", "bold", color), *command_rows(tools)]
    out += ["", 'help CMD shows a command\'s usage, options and examples: flight-mcp PID --cmd "help watch"']
    return "\n".join(out)


def _examples(tool: Tool) -> list[str]:
    from .skills import skills_dir
    try:
        text = (skills_dir() / f"flight-mcp-{tool.name}" / "SKILL.md").read_text()
    except OSError:
        return []
    seen: list[str] = []
    for cmd in re.findall(r'--cmd "((?:[^"\\]|\\.)+)"', text):
        if cmd not in seen and cmd.split()[0] in (tool.name, *tool.aliases):
            seen.append(cmd)
    return seen[:6]


def command(tool: Tool, color: bool) -> str:
    from .cmdline import spellings, usage

    def section(title: str) -> str:
        return paint(title, "bold", color)

    out = [section("USAGE"), f"  {usage(tool)}", "", section("SUMMARY")]
    out += textwrap.wrap(tool.description, WIDTH, initial_indent="  ", subsequent_indent="  ")
    rows = []
    for name, slot, flags in spellings(tool.params):
        if name == "pid":
            continue
        field = tool.params.model_fields[name]
        spelled = ", ".join(flags) if slot is None else name.upper() + (f" ({', '.join(flags)})" if flags else "")
        if not spelled:
            continue  # an MCP-only argument
        default = "" if field.is_required() else f" [default: {field.default}]"
        rows.append((spelled, (field.description or "") + default))
    if rows:
        out += ["", section("OPTIONS")]
        width = min(max(len(s) for s, _ in rows) + 2, 34)
        for spelled, meaning in rows:
            lines = textwrap.wrap(meaning, WIDTH - width - 2) or [""]
            out.append(f"  {spelled.ljust(width)}{lines[0]}" if len(spelled) < width else f"  {spelled}")
            if len(spelled) >= width:
                out.append(" " * (width + 2) + lines[0])
            out += [" " * (width + 2) + line for line in lines[1:]]
    examples = _examples(tool)
    if examples:
        out += ["", section("EXAMPLES")] + [f'  flight-mcp PID --cmd "{e}"' for e in examples]
    return "\n".join(out)


def help_text(words: list[str], tools: dict[str, Tool], color: bool) -> str:
    """`help` (every command) or `help CMD`."""
    if len(words) <= 1:
        return overview(tools, color)
    name = words[1]
    tool = tools.get(name) or next((t for t in tools.values() if name in t.aliases), None)
    if tool is None or len(words) > 2:
        raise FlightError("usage", f"help: no command {' '.join(words[1:])!r}; commands: {', '.join(sorted(tools))}.")
    return command(tool, color)
