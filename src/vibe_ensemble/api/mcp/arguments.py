"""Tool arguments are never silently misread.

The SDK validates a call's arguments against the tool's signature but drops names it does
not know, so `claim_issue(issue=3)` used to claim the best ready issue instead and report
success. This middleware refuses, before the tool runs, any argument the tool does not
accept (naming it and listing the accepted ones), and turns a type error into one readable
line naming the field, instead of pydantic's multi-line dump, followed by the same
`{"field", "rule"}` JSON a service's refusal carries.

The lengths the tool's schema publishes (`maxLength`, `maxItems`, and a list's entries'
`maxLength`) are enforced here too, for every argument, so a filter or a project name gets the same
refusal as a title, and an entry is named by its index (`labels[2]`) as the services name it.

A tool name this server does not have is refused here too, naming `name` and the nearest tool
names, with at most `MAX_SHOWN` characters of what was sent (the SDK's own refusal echoed the
whole name, however long).

Arguments are checked as the JSON they arrived as, strictly: the schema says `integer`, so
`true` or `"3"` is refused rather than read as 1 or 3 (the SDK's own check, which runs after,
would coerce them); `"yes"` is not a boolean.
"""

from __future__ import annotations

import difflib
import json
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent
from mcp_types import INVALID_PARAMS
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, to_json

from vibe_ensemble.domain import rules

MAX_SHOWN = 80  # characters of a refused value shown back


NOT_UNICODE = "must be valid Unicode text (no lone surrogates such as \\ud800)"


def _not_unicode(value: Any, path: str = "") -> str | None:
    """The path of the first string in `value` (an argument's name or text, at any depth) that is not
    valid Unicode (`title`, `labels[2]`, `meta.note`), or None."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return path or "arguments"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            key_path = f"{path}.{key}" if path else str(key)
            found = _not_unicode(key, "arguments") or _not_unicode(item, key_path)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _not_unicode(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _refusal(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _accepted(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _null_means_default(model: type[BaseModel]) -> frozenset[str]:
    """The optional arguments whose type has no null (`timeout_s`, `limit`): a `null` sent for one is
    taken as not sent, its default, as `null` is for the arguments whose type has it (`title`). A
    client that fills every optional argument with `null` was refused on some and not others."""
    return frozenset(
        info.alias or name
        for name, info in model.model_fields.items()
        if not info.is_required() and not _admits_none(info.annotation)
    )


def _admits_none(annotation: Any) -> bool:
    return annotation is None or type(None) in typing.get_args(annotation) or annotation is Any


def _invalid(tool: str, problems: list[str], details: list[dict[str, str]]) -> str:
    """`[invalid_input] tool: problem; problem {"field": …, "rule": …}` (and every one under `errors`)."""
    shown: dict[str, Any] = dict(details[0])
    if len(details) > 1:
        shown["errors"] = details
    return f"[invalid_input] {tool}: " + "; ".join(problems) + " " + json.dumps(shown)


def _no_such_tool(name: str, tools: Iterable[str]) -> str:
    """`[invalid_input] no tool named 'x' here; did you mean …` for a `tools/call` of a name this
    server (this token's tool profile) does not have."""
    from vibe_ensemble.api.mcp.profiles import PROFILES  # (on this refusal only: profiles imports the tools)

    near = difflib.get_close_matches(name[:MAX_SHOWN], sorted(tools), n=3, cutoff=0.75)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    if name in {fn.__name__ for fn in PROFILES["full"]} - set(tools):
        hint = (
            "; it is in the `full` tool profile, and this token's is `core`: an admin makes a token "
            "with `vibe-ensemble token create … --tool-profile full` (docs/mcp-tools.md)"
        )
    rule = "must be one of this server's tools (tools/list names them)"
    return f"[invalid_input] no tool named {name[:MAX_SHOWN]!r} here{hint} " + json.dumps(
        {"field": "name", "rule": rule}
    )


def describe(tool: str, exc: ValidationError) -> str:
    """One line: `[invalid_input] claim_issue: id: Input should be a valid integer (got 'abc') {…}`."""
    problems, details = _problems(exc, "arguments")
    return _invalid(tool, problems, details)


def invalid_request(method: str, exc: ValidationError) -> MCPError:
    """The SDK's refusal of a request's params (`Invalid request parameters`, nothing more), made to
    name each field and its rule: `[invalid_input] tools/call: arguments: Input should be a valid
    dictionary (got ['a'])`, with `{"code", "field", "rule"}` (and `errors`) as its data."""
    problems, details = _problems(exc, "params", drop="params")
    data: dict[str, Any] = {"code": "invalid_input", **details[0]}
    if len(details) > 1:
        data["errors"] = details
    return MCPError(INVALID_PARAMS, f"[invalid_input] {method}: " + "; ".join(problems), data)


def _problems(exc: ValidationError, whole: str, drop: str = "") -> tuple[list[str], list[dict[str, str]]]:
    """Each error of `exc` as `field: rule (got …)`, and as `{"field", "rule"}`. `whole` names the
    object itself; a leading `drop` is left out of a field's name. A missing field is only named:
    its "input" is the whole object."""
    problems, details = [], []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        field = rules.field_path(loc[1:] if drop and loc[:1] == [drop] else loc) or whole
        rule = str(err["msg"]).removeprefix("Value error, ")  # a check of ours reads as itself
        problem = f"{field}: {rule}"
        if err["type"] != "missing":
            got = repr(err.get("input"))
            problem += f" (got {got if len(got) <= MAX_SHOWN else got[:MAX_SHOWN] + '…'})"
        problems.append(problem)
        details.append({"field": field, "rule": rule})
    return problems, details


@dataclass(frozen=True)
class Limit:
    """An argument's published bound: at most `most` characters (a text) or entries (a list), and for
    a list of texts, at most `each` characters an entry."""

    most: int | None
    unit: str
    each: int | None = None

    def refused(self, field: str, value: object) -> tuple[str, str] | None:
        """The field (`labels`, `labels[2]`) and the rule `value` breaks, or None."""
        if not isinstance(value, str | list):
            return None
        if self.most is not None and len(value) > self.most:
            return field, f"must be at most {self.most} {self.unit} (got {len(value)})"
        if self.each is not None and isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str) and len(item) > self.each:
                    return f"{field}[{i}]", f"must be at most {self.each} characters (got {len(item)})"
        return None


def published_limits(tool: Tool) -> dict[str, Limit]:
    """Each argument's published bounds, from its schema's maxLength or maxItems (and its entries')."""
    limits = {}
    for field, schema in (tool.parameters.get("properties") or {}).items():
        each = (schema.get("items") or {}).get("maxLength")
        if "maxLength" in schema:
            limits[field] = Limit(int(schema["maxLength"]), "characters")
        elif "maxItems" in schema or each is not None:
            most = schema.get("maxItems")
            limits[field] = Limit(
                None if most is None else int(most), "items", None if each is None else int(each)
            )
    return limits


def strict_arguments(tools: Iterable[Tool]) -> ServerMiddleware[Any]:
    """Middleware for `tools/call` that refuses unknown and ill-typed arguments of `tools`.

    The argument models are the registrations' own (the ones the SDK validates with).
    """
    # Each tool's argument model, the names it accepts and their bounds, listed once, not on every call.
    models = {
        tool.name: (
            tool.fn_metadata.arg_model,
            _accepted(tool.fn_metadata.arg_model),
            published_limits(tool),
            _null_means_default(tool.fn_metadata.arg_model),
        )
        for tool in tools
    }

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        params = ctx.params or {}
        known = models.get(str(params.get("name"))) if ctx.method == "tools/call" else None
        if known is None and ctx.method == "tools/call" and isinstance(params.get("name"), str):
            return _refusal(_no_such_tool(params["name"], models))
        arguments = params.get("arguments") or {}
        if known is None or not isinstance(arguments, dict):
            return await call_next(ctx)
        name = str(params["name"])
        model, accepted, limits, defaulted = known
        if None in arguments.values() and isinstance(params, dict):  # (the dict the SDK reads next)
            arguments = {k: v for k, v in arguments.items() if v is not None or k not in defaulted}
            params["arguments"] = arguments  # a null where null is no value: the default instead
        unknown = sorted(arguments.keys() - accepted)
        if unknown:
            shown = ", ".join(repr(u[:MAX_SHOWN]) for u in unknown[:10])
            rule = f"not an argument of {name}; it accepts: {', '.join(accepted) or 'no arguments'}"
            problem = (
                f"unknown argument{'s' if len(unknown) > 1 else ''} {shown}; "
                f"{name} accepts: {', '.join(accepted) or 'no arguments'}"
            )
            return _refusal(
                _invalid(name, [problem], [{"field": u[:MAX_SHOWN], "rule": rule} for u in unknown[:10]])
            )
        for field, limit in limits.items():
            refused = limit.refused(field, arguments.get(field))
            if refused is not None:
                where, rule = refused
                return _refusal(_invalid(name, [f"{where}: {rule}"], [{"field": where, "rule": rule}]))
        try:
            # as JSON, strictly: JSON's types are the schema's (no "3" for 3, no true for 1)
            model.model_validate_json(to_json(arguments), strict=True)
        except ValidationError as exc:
            return _refusal(describe(name, exc))
        except PydanticSerializationError:  # text that is not Unicode: a lone surrogate (JSON's \ud800)
            field = _not_unicode(arguments) or "arguments"
            problem = f"{field}: {NOT_UNICODE}"
            return _refusal(_invalid(name, [problem], [{"field": field, "rule": NOT_UNICODE}]))
        return await call_next(ctx)

    return middleware
