"""Set a few keys of one table (strings, numbers) in a TOML file's text, leaving every other byte as it was.

Python reads TOML (`tomllib`) but does not write it, and a person's Codex config must keep its
comments, order and layout. So this reads the text just far enough to find where a table's keys
are: each statement's key (relative to the `[table]` above it) and the span of its value. The table
may be written in any of TOML's layouts: a `[a.b]` table (its sub-tables are left alone), dotted keys
(`a.b.key = …`, under `[a]`, …), or an inline table (`b = { key = … }`). A key found is given its new
value in place; a missing one is added beside the table's first key (or after its header), and a
table not there is appended. The text must already parse (the caller checks it before, and checks
the result after).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# A number, boolean or date-time; a local date-time may have a space before its time.
_SCALAR = re.compile(r"[^\s,\]}#]+(?: \d\d:[^\s,\]}#]+)?")


def _string(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, and characters beyond ASCII are written as
    they are (JSON's `\\ud83d\\ude00` surrogate pairs are not TOML)."""
    return json.dumps(value, ensure_ascii=False)


Value = str | int | float


def _value(value: Value) -> str:
    """A string as a basic string (`_string`), a number as TOML writes it (`90`, `90.5`)."""
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, bool) or value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"not a value these edits write: {value!r}")
    return repr(value)


class Unmergeable(ValueError):
    """The table is written in a way these edits cannot reach; the message says which."""


@dataclass(frozen=True)
class _KeyValue:
    key: list[str]  # from the document's root
    header: int  # how many of its parts the `[table]` above it names
    value_start: int
    value_end: int
    end: int  # after the statement's line (its comment and newline)


def _skip_blank(text: str, i: int, *, newlines: bool = False) -> int:
    """Past spaces and tabs (and, with `newlines`, newlines and comments)."""
    while i < len(text):
        if text[i] in " \t" or (newlines and text[i] in "\r\n"):
            i += 1
        elif newlines and text[i] == "#":
            i = _line_end(text, i)
        else:
            break
    return i


def _line_end(text: str, i: int) -> int:
    """The index of the newline ending the line at `i` (or the end of the text)."""
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _key(text: str, i: int) -> tuple[list[str], int]:
    """The dotted key starting at `i` (`a."b c".d`), and the index after it."""
    parts: list[str] = []
    while True:
        i = _skip_blank(text, i)
        if text[i] in "\"'":
            end = _string_end(text, i)
            parts.append(tomllib.loads(f"k = {text[i:end]}")["k"])
        else:
            found = _BARE_KEY.match(text, i)
            if found is None:
                raise Unmergeable(f"unexpected {text[i]!r} in a key")
            parts.append(found.group())
            end = found.end()
        i = _skip_blank(text, end)
        if i < len(text) and text[i] == ".":
            i += 1
            continue
        return parts, i


def _string_end(text: str, i: int) -> int:
    """The index after the string starting at `i` (basic, literal, or either multi-line)."""
    quote = text[i : i + 3] if text.startswith(('"""', "'''"), i) else text[i]
    j = i + len(quote)
    while not text.startswith(quote, j):
        j += 2 if text[j] == "\\" and quote[0] == '"' else 1
    j += len(quote)
    if len(quote) == 3:  # up to two quotes just before the closing three belong to the string
        extra = 0
        while extra < 2 and j < len(text) and text[j] == quote[0]:
            j, extra = j + 1, extra + 1
    return j


def _value_end(text: str, i: int) -> int:
    """The index after the value starting at `i`."""
    if text[i] in "\"'":
        return _string_end(text, i)
    if text[i] == "[":
        j = i + 1
        while True:
            j = _skip_blank(text, j, newlines=True)
            if text[j] == "]":
                return j + 1
            j = _value_end(text, j)
            j = _skip_blank(text, j, newlines=True)
            if text[j] == ",":
                j += 1
    if text[i] == "{":
        return _inline_items(text, i)[1]
    found = _SCALAR.match(text, i)
    if found is None:
        raise Unmergeable(f"unexpected {text[i]!r} in a value")
    return found.end()


def _inline_items(text: str, i: int) -> tuple[list[tuple[list[str], int, int]], int]:
    """The items of the inline table at `i` (key, value start, value end), and the index after it."""
    items: list[tuple[list[str], int, int]] = []
    j = i + 1
    while True:
        j = _skip_blank(text, j, newlines=True)
        if text[j] == "}":
            return items, j + 1
        key, j = _key(text, j)
        j = _skip_blank(text, j + 1)  # past "="
        end = _value_end(text, j)
        items.append((key, j, end))
        j = _skip_blank(text, end, newlines=True)
        if text[j] == ",":
            j += 1


def _statements(text: str) -> tuple[list[_KeyValue], dict[tuple[str, ...], int]]:
    """Every key/value statement, and where each `[table]` header's line ends."""
    found: list[_KeyValue] = []
    headers: dict[tuple[str, ...], int] = {}
    table: list[str] = []
    i = 0
    while i < len(text):
        i = _skip_blank(text, i, newlines=True)
        if i >= len(text):
            break
        if text[i] == "[":
            array = text.startswith("[[", i)
            table, i = _key(text, i + (2 if array else 1))
            i = _line_end(text, i)
            if not array:
                headers.setdefault(tuple(table), min(i + 1, len(text)))
            continue
        key, i = _key(text, i)
        start = _skip_blank(text, i + 1)  # past "="
        end = _value_end(text, start)
        line_end = _line_end(text, end)
        found.append(_KeyValue([*table, *key], len(table), start, end, min(line_end + 1, len(text))))
        i = line_end
    return found, headers


def set_keys(text: str, table: list[str], values: dict[str, Value]) -> str:
    """`text` with the keys `values` set in `table`, nothing else changed; a table the text
    does not define (or defines only sub-tables of) is appended at its end."""
    statements, headers = _statements(text)
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), none overlapping
    missing = dict(values)
    insert_at: tuple[int, str] | None = None  # where a missing key goes, and the key prefix it needs
    if tuple(table) in headers:
        insert_at = (headers[tuple(table)], "")
    for statement in statements:
        key = statement.key
        if key == table:  # `name = { … }`: the table is an inline table
            items, _ = _inline_items(text, statement.value_start)
            edits += _inline_edits(text, statement.value_start, items, missing)
            break
        if key == table[: len(key)]:  # an inline table above ours (`a = { b = { … } }`)
            raise Unmergeable(f"{'.'.join(key)} is an inline table holding it")
        if key[: len(table)] != table:
            continue
        name = key[len(table)]
        if len(key) == len(table) + 1 and name in missing:
            edits.append((statement.value_start, statement.value_end, _value(missing.pop(name))))
        if insert_at is None and statement.header <= len(table):
            # a dotted key of ours (`[a]` then `b.key = …`): the missing keys go after it, alike
            prefix = "".join(part + "." for part in table[statement.header :])
            insert_at = (statement.end, prefix)
    if missing and insert_at is not None:
        at, prefix = insert_at
        lines = "".join(f"{prefix}{name} = {_value(value)}\n" for name, value in missing.items())
        edits.append((at, at, lines if at == 0 or text[at - 1] == "\n" else "\n" + lines))
    elif missing:  # the table is not in the text, or only its sub-tables are: it gets its header
        header = ".".join(k if _BARE_KEY.fullmatch(k) else _string(k) for k in table)
        lines = "".join(f"{name} = {_value(value)}\n" for name, value in missing.items())
        gap = ("\n" if text and not text.endswith("\n") else "") + ("\n" if text.strip() else "")
        edits.append((len(text), len(text), f"{gap}[{header}]\n{lines}"))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _inline_edits(
    text: str, start: int, items: list[tuple[list[str], int, int]], missing: dict[str, Value]
) -> list[tuple[int, int, str]]:
    """The edits that set `missing` in the inline table at `start` (removing those it sets)."""
    edits = []
    for key, value_start, value_end in items:
        if len(key) == 1 and key[0] in missing:
            edits.append((value_start, value_end, _value(missing.pop(key[0]))))
    if missing:
        _, end = _inline_items(text, start)
        close = end - 1
        added = ", ".join(f"{name} = {_value(value)}" for name, value in missing.items())
        inside = text[start + 1 : close]
        before = inside.rstrip()
        separator = ", " if before.strip() else " "
        edits.append((start + 1 + len(before), close, f"{separator}{added} "))
        missing.clear()
    return edits
