"""Shared pieces of the text renderings: colour, tree glyphs, object views."""
from __future__ import annotations

RESET = "\033[0m"
COLORS = {"red": "\033[31m", "yellow": "\033[33m", "green": "\033[32m", "faint": "\033[2;32m",
          "bold": "\033[1m", "cyan": "\033[36m", "dim": "\033[2m"}


def paint(text: str, color: str | None, enabled: bool) -> str:
    if not enabled or not color:
        return text
    return COLORS[color] + text + RESET


def view_lines(view: dict, indent: str = "") -> list[str]:
    """An objview node (see agent/objview.py) as indented lines."""
    head = view.get("repr", "")
    kids = view.get("children")
    if not kids:
        return [indent + head]
    lines = [f"{indent}{view['type']}" + (f" (len={view['len']})" if "len" in view else "") + " {"]
    for kid in kids:
        sub = view_lines(kid["view"], indent + "    ")
        name = kid["name"]
        prefix = f"{indent}    {name}: " if name else f"{indent}    "
        lines.append(prefix + sub[0].lstrip())
        lines.extend(sub[1:])
    if view.get("elided"):
        lines.append(f"{indent}    ... {view['elided']} more (narrow it with an expression)")
    lines.append(indent + "}")
    return lines


def expr_block(expr: str, view: dict) -> str:
    """The seed's EXPR / TYPE / VALUE layout."""
    value = "\n".join(view_lines(view))
    if view.get("cycle"):
        value += "  (cycle: already shown above)"
    return f"EXPR:  {expr}\nTYPE:  {view['type']}\nVALUE: {value}"
