"""Output schemas that say the same in fewer steps for a validator.

An MCP client validates every structuredContent against the tool's outputSchema (the official Python
SDK with jsonschema: ~1-2 ms of a warm call). Pydantic writes every optional field, `X | None`, as
`{"anyOf": [{"type": X}, {"type": "null"}]}`: a validator descends into a branch, and for a null value
builds an error for the first. `{"type": [X, "null"]}` accepts exactly the same values in one keyword
(every other keyword of X's schema applies to X's type only; an enum or const gets null added).
Everything else is left as it is ($refs, descriptions, defaults).
"""
from __future__ import annotations

from typing import Any

_NULL = {"type": "null"}


def compact(schema: Any) -> Any:
    """schema (a JSON schema) with each `anyOf: [S, {"type": "null"}]` whose S names one type and shares
    no keyword with its parent merged into S with the type made nullable."""
    if isinstance(schema, list):
        return [compact(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: compact(v) for k, v in schema.items()}
    branches = out.get("anyOf")
    if not (isinstance(branches, list) and len(branches) == 2 and _NULL in branches):
        return out
    other = branches[1] if branches[0] == _NULL else branches[0]
    if not (isinstance(other, dict) and isinstance(other.get("type"), str) and other["type"] != "null"
            and not set(other) & set(out)):
        return out   # a $ref, a union of its own, or a keyword on both sides: left as pydantic wrote it
    merged = dict(other, type=[other["type"], "null"])
    if "const" in merged:
        merged["enum"] = [merged.pop("const")]
    if "enum" in merged and None not in merged["enum"]:
        merged["enum"] = [*merged["enum"], None]
    del out["anyOf"]
    return {**out, **merged}
