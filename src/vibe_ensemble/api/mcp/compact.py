"""Keep the tool list small: every tool's schema costs each agent context on every turn.

Pydantic's JSON schemas are generous: a `title` on every property (the name
again), `anyOf [T, null]` for every optional argument, and output schemas that
spell out every nested record; docstrings keep their indentation.
`compact_tools` rewrites what `tools/list` publishes, once, when the tools'
registrations are made (server.registered_tools):

- input schemas lose the `title`s, and an optional argument whose default is
  null is published as its plain type (omitting it still means null);
- the upper bound on ids (`rules.MAX_ID`, there to keep numbers inside 64-bit
  columns) is enforced but not published: no real id comes near it;
- descriptions lose the docstrings' indentation;
- enums are written in place rather than referenced from `$defs`;
- output schemas keep the top level only (each field with its JSON type, nullable
  where it may be null); the records inside are described by the field names and
  the tools' documentation. Results are still validated against the full model
  on the server before they are sent.

Validation of arguments is unchanged: it uses the tools' pydantic models, not
the published schemas.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from mcp.server.mcpserver.tools import Tool

from vibe_ensemble.domain.rules import MAX_ID

JSON = dict[str, Any]


def compact_tools(tools: Iterable[Tool]) -> None:
    """Rewrite the published input and output schemas of each tool's registration."""
    for tool in tools:
        tool.description = inspect.cleandoc(tool.description)
        tool.parameters = compact_input(inline_enums(tool.parameters))
        metadata = tool.fn_metadata
        if metadata.output_schema is not None:
            metadata.output_schema = shallow_output(metadata.output_schema)
        tool.__dict__.pop("output_schema", None)  # a cached_property on Tool


def inline_enums(schema: JSON) -> JSON:
    """Replace references to enum definitions by the enums themselves, and drop unused `$defs`."""
    defs: JSON = schema.get("$defs", {})
    enums = {f"#/$defs/{name}": d for name, d in defs.items() if "enum" in d}

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        if node.get("$ref") in enums:
            return {**enums[node["$ref"]], **{k: walk(v) for k, v in node.items() if k != "$ref"}}
        return {k: walk(v) for k, v in node.items()}

    out: JSON = walk({k: v for k, v in schema.items() if k != "$defs"})
    kept = {name: walk(d) for name, d in defs.items() if f"#/$defs/{name}" not in enums}
    if kept:
        out["$defs"] = kept
    return out


def compact_input(schema: Any) -> Any:
    if isinstance(schema, list):
        return [compact_input(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out: JSON = {
        k: compact_input(v)
        for k, v in schema.items()
        if not (k == "title" and isinstance(v, str)) and not (k == "maximum" and v == MAX_ID)
    }
    variants = out.get("anyOf")
    if (
        isinstance(variants, list)
        and len(variants) == 2
        and {"type": "null"} in variants
        and out.get("default", 0) is None
    ):
        [kept] = [v for v in variants if v != {"type": "null"}]
        rest = {k: v for k, v in out.items() if k not in ("anyOf", "default")}
        out = {**kept, **rest}
    return out


def shallow_output(schema: JSON) -> JSON:
    """The top level of an output schema: field names and JSON types only."""
    defs: JSON = schema.get("$defs", {})
    properties = {
        name: {"type": _json_type(prop, defs)} for name, prop in schema.get("properties", {}).items()
    }
    return {"type": "object", "properties": properties}


def _json_type(prop: JSON, defs: JSON) -> str | list[str]:
    if "$ref" in prop:
        target = defs.get(prop["$ref"].rsplit("/", 1)[-1], {})
        return _json_type(target, defs)
    if "anyOf" in prop:
        types: list[str] = []
        for variant in prop["anyOf"]:
            found = _json_type(variant, defs)
            for t in found if isinstance(found, list) else [found]:
                if t not in types:
                    types.append(t)
        return types[0] if len(types) == 1 else types
    if "enum" in prop and "type" not in prop:
        return "string"
    kind = prop.get("type", "object")
    return kind if isinstance(kind, str) else list(kind)
