"""The outputSchema every tool publishes over MCP (mcp_schema.compact of pydantic's): it must accept and refuse
exactly what pydantic's own schema does, for every tool, while giving the client's validator fewer steps."""
from __future__ import annotations

import json

import pytest
from jsonschema.validators import validator_for
from pydantic import TypeAdapter
from referencing import Registry

from flight_mcp import fleet, mcp_schema
from flight_mcp.tools import all_tools

PROBES = [None, "x", 1.5, {}]   # null, and values of other types than most fields have


def typical(schema: dict, defs: dict, depth: int = 0):
    """A value the schema accepts, or its closest try (nested models down to a few levels)."""
    if "$ref" in schema:
        return typical(defs[schema["$ref"].split("/")[-1]], defs, depth + 1) if depth < 4 else None
    if "anyOf" in schema:
        return typical(schema["anyOf"][0], defs, depth)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {k: typical(props[k], defs, depth) for k in schema.get("required", []) if k in props}
    if kind == "array":
        return [typical(schema.get("items", {}), defs, depth)] if depth < 2 else []
    return {"string": "x", "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kind)


def instances(schema: dict, defs: dict, depth: int = 0):
    """The typical value of an object schema, then that value with each property (given or not, nested
    models included, a few levels down) set to each probe in turn."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].split("/")[-1]]
    base = typical(schema, defs, depth)
    yield base
    if not isinstance(base, dict) or depth > 1:
        return
    for name, prop in schema.get("properties", {}).items():
        for value in PROBES + [typical(prop, defs, depth + 1)]:
            yield dict(base, **{name: value})
        for branch in prop.get("anyOf", [prop]):
            target = branch.get("items", branch) if branch.get("type") == "array" else branch
            if "$ref" in target or target.get("type") == "object":
                for inner in instances(target, defs, depth + 1):
                    yield dict(base, **{name: [inner] if target is not branch else inner})


def published(tool) -> dict:
    schema = TypeAdapter(fleet.output_model(tool)).json_schema()
    return schema


@pytest.mark.parametrize("name", sorted(all_tools()))
def test_the_compact_output_schema_accepts_exactly_what_pydantics_does(name):
    tool = all_tools()[name]
    original = published(tool)
    compact = mcp_schema.compact(original)
    assert json.dumps(compact).count('"anyOf"') < json.dumps(original).count('"anyOf"')
    before = validator_for(original)(original, registry=Registry())
    after = validator_for(compact)(compact, registry=Registry())
    after.check_schema(compact)
    tried = [x for root in original.get("anyOf", [original])   # a fleet tool answers its Result or a FleetResult
             for x in instances(root, original.get("$defs", {}))]
    verdicts = []
    for instance in tried[::max(1, len(tried) // 200)]:   # a spread of them: jsonschema takes ~1-3 ms each
        verdicts.append(before.is_valid(instance))
        assert after.is_valid(instance) == verdicts[-1], json.dumps(instance)[:500]
    assert True in verdicts and False in verdicts   # both kinds were tried


def test_nullable_types_enums_and_consts_merge_refs_and_conflicts_stay():
    null = {"type": "null"}
    assert mcp_schema.compact({"anyOf": [{"type": "string"}, null], "default": None, "description": "d"}) == \
        {"type": ["string", "null"], "default": None, "description": "d"}
    assert mcp_schema.compact({"anyOf": [{"enum": ["a", "b"], "type": "string"}, null]}) == \
        {"enum": ["a", "b", None], "type": ["string", "null"]}
    assert mcp_schema.compact({"anyOf": [null, {"const": "a", "type": "string"}]}) == \
        {"enum": ["a", None], "type": ["string", "null"]}
    assert mcp_schema.compact({"anyOf": [{"items": {"anyOf": [{"type": "integer"}, null]}, "type": "array"}, null]}) \
        == {"items": {"type": ["integer", "null"]}, "type": ["array", "null"]}
    for kept in ({"anyOf": [{"$ref": "#/$defs/X"}, null]},
                 {"anyOf": [{"type": "string", "description": "inner"}, null], "description": "outer"},
                 {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                 {"anyOf": [{"type": "string"}, {"type": "integer"}, null]}):
        assert mcp_schema.compact(kept) == kept
