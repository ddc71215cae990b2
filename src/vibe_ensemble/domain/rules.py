"""Pure rules of the domain: validation, names, the dependency graph."""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Iterable, Mapping, Sequence, Sized
from datetime import UTC, datetime

from vibe_ensemble.domain.errors import InvalidInput

MAX_TITLE = 200
MAX_BODY = 65_536
MAX_NAME = 64
MAX_LABELS = 32
MAX_LABEL = 64  # each label, tag or capability
MAX_LIST_LIMIT = 500
MAX_LINE = 200  # other one-line texts: names of things, programs, models, thread ids, keys, labels
MAX_NOTE = 1000  # a short note: an activity, a reason, a repository path or URL
MAX_DEPENDENCIES = 100
MAX_PATTERN = 256  # each lease pattern: a path, a glob or a named resource (domain/globs.py)
MAX_CURSOR = 100  # an opaque page cursor
MAX_EVENT_PAGE = 1000  # events per page
MAX_ID = 2**53 - 1  # ids fit a JavaScript number and a 64-bit column; the doors refuse larger ones
# Backups: how long one run of pg_dump or pg_restore may take unless VIBE_PG_TOOL_TIMEOUT_S says
# otherwise (docs/backups.md); below the backup Jobs' activeDeadlineSeconds (3600), so a hung one is
# reported by the command itself
PG_TOOL_TIMEOUT_S = 1800.0
# JSON-RPC's rule for a request's id, as /mcp and the stdio servers name it when they refuse one (a
# message with an id of another type was taken for a notification, and went unanswered)
JSONRPC_ID_RULE = "a request's id must be a string or an integer (JSON-RPC 2.0, MCP); a notification has none"
# What /mcp and REST say of a body sent as something else than JSON (text/plain, a form, none)
JSON_BODY_RULE = "the body must be JSON, sent with Content-Type: application/json"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# C0 and C1 controls, DEL and the Unicode line and paragraph separators: a newline, a tab, an
# escape sequence have no place in one line
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def field_path(parts: Iterable[object]) -> str:
    """A field inside a request, written as refusals name it everywhere: `depends_on[0]`,
    `notifications.resourceSubscriptions[2]` (an item of a list by its index in brackets)."""
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _invisible(value: str) -> bool:
    """Whether `value` shows nothing: only spaces and format characters (zero-width spaces and
    joiners, direction marks and overrides), which a title cannot be made of."""
    return all(c.isspace() or unicodedata.category(c) == "Cf" for c in value)


def text(field: str, value: str, *, max_len: int, required: bool = True) -> str:
    """Strip `value` and check it is non-empty (when required) and within `max_len` characters."""
    stripped = value.strip()
    if required and (not stripped or (not stripped.isascii() and _invisible(stripped))):
        raise InvalidInput(field, "must not be empty")
    if len(value) > max_len:
        raise InvalidInput(field, f"must be at most {max_len} characters (got {len(value)})")
    if "\x00" in value:
        raise InvalidInput(field, "must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(field, "must be valid Unicode (no lone surrogates)") from None
    return stripped if required else value


def line(field: str, value: str, *, max_len: int, required: bool = True) -> str:
    """`text` that is one line: a title, a subject, a label, a thread id. No control characters
    (CR/LF, tab, escape sequences), which would break the line wherever it is shown: at its ends
    too, refused rather than trimmed away unsaid."""
    found = CONTROL.search(value)
    value = text(field, value, max_len=max_len, required=required)
    if found:
        raise InvalidInput(
            field, f"must be one line without control characters (got U+{ord(found.group()):04X})"
        )
    return value


def name(field: str, value: str) -> str:
    value = text(field, value, max_len=MAX_NAME)
    if not _NAME.match(value):
        raise InvalidInput(
            field,
            "must start with an ASCII letter or digit and use only ASCII letters, digits, '_', '.', '-'",
        )
    return value


# names the server writes as an actor itself (sweeps, expiries); no agent may take them
RESERVED_NAMES = frozenset({"system", "server", "overseer", "admin"})


def agent_name(field: str, value: str) -> str:
    """A name an agent may take: `name`'s pattern, and none of the server's own (`RESERVED_NAMES`)."""
    value = name(field, value)
    if value.lower() in RESERVED_NAMES:
        raise InvalidInput(field, f"{value!r} is reserved for the server's own records; choose another name")
    return value


def slug(field: str, value: str) -> str:
    value = text(field, value, max_len=MAX_NAME)
    if not _SLUG.match(value):
        raise InvalidInput(
            field, "must be lowercase letters, digits and '-', starting with a letter or digit"
        )
    return value


def labels(field: str, values: Sequence[str]) -> list[str]:
    """Short, distinct words (labels, tags, capabilities): at most MAX_LABELS entries, counted as
    given (duplicates too) before any is looked at, so a huge list costs nothing to refuse; each of
    at most MAX_LABEL characters, refused naming the entry (`labels[2]`) as every list's items are."""
    count(field, values, MAX_LABELS)
    out: list[str] = []
    for i, v in enumerate(values):
        v = line(f"{field}[{i}]", v, max_len=MAX_LABEL)
        if v not in out:
            out.append(v)
    return out


def duration(seconds: float) -> str:
    """A span as a person says it: `2 minutes`, `90 seconds`, `1 minute`, `0.5 seconds`, `1 hour`,
    `2 days`: the largest unit that divides it whole (a day, an hour, a minute), else seconds."""
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count:,} {unit}{'s' if count != 1 else ''}"
    return (
        f"{round(seconds, 3):,g} second{'s' if seconds != 1 else ''}"
        if seconds < 1e6
        else f"{seconds:,.0f} seconds"
    )


def label_key(value: str) -> str:
    """How a label (or capability) is matched: its Unicode case fold, so `Python` matches `python`
    and `STRASSE` matches `straße`. Labels are kept as written; issues store their keys beside
    them (`issues.label_keys`), so both databases match in SQL exactly as Python folds."""
    return value.casefold()


def label_keys(values: Sequence[str]) -> list[str]:
    """The distinct `label_key`s of `values`, in order of first appearance."""
    return list(dict.fromkeys(label_key(v) for v in values))


def count(field: str, values: Sized, maximum: int, what: str = "entries") -> None:
    """Refuse a caller's list longer than `maximum`, before it is looped over."""
    if len(values) > maximum:
        raise InvalidInput(field, f"at most {maximum} {what} (got {len(values)})")


MOMENT_EXAMPLE = "2030-01-31T12:00:00Z"


def moment(field: str, value: datetime) -> datetime:
    """A time a caller gave, in UTC; one without a timezone is refused (whose 10:00 would it be?),
    and so is one that is no time in UTC (9999-12-31T23:00:00-05:00 is past the last year)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(field, f"must include a timezone, e.g. {MOMENT_EXAMPLE}")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(field, "must be a time between the years 1 and 9999 in UTC") from None


def moment_text(field: str, value: str) -> datetime:
    """A time a caller wrote (a command's option): ISO 8601 with a timezone, in UTC. Text that is
    no ISO 8601 time is refused naming `field` and the rule, as `moment` refuses the rest."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(
            field, f"must be an ISO 8601 time with a timezone, e.g. {MOMENT_EXAMPLE} (got {value!r:.80})"
        ) from None
    return moment(field, parsed)


def limit(field: str, value: int, *, maximum: int = MAX_LIST_LIMIT) -> int:
    if value < 1 or value > maximum:
        raise InvalidInput(field, f"must be between 1 and {maximum}")
    return value


def find_cycle(edges: Mapping[int, Iterable[int]], start: int, new_deps: Iterable[int]) -> list[int] | None:
    """Return the cycle `start -> … -> start` that giving `start` the dependencies `new_deps` would close.

    `edges[x]` are the issues x depends on (the graph before the change).
    Returns the path as a list of ids beginning and ending with `start`, or None.
    One depth-first walk over the edges shared by every new dependency, remembering each
    node's predecessor (not a copy of its path): time and memory linear in the graph's size.
    """
    parent: dict[int, int] = {}
    stack: list[int] = []
    for dep in new_deps:
        if dep == start:
            return [start, start]
        if dep not in parent:
            parent[dep] = start
            stack.append(dep)
    stack.reverse()  # walk the dependencies in the order given
    while stack:
        node = stack.pop()
        for nxt in edges.get(node, ()):
            if nxt == start:
                back = [node]  # node, its predecessor, …, a new dependency, start
                while back[-1] != start:
                    back.append(parent[back[-1]])
                return [*reversed(back), start]
            if nxt not in parent:
                parent[nxt] = node
                stack.append(nxt)
    return None


def cycle_text(cycle: list[int], shown: int = 10) -> str:
    """`#1 -> #2 -> #1`, with the middle of a long cycle elided (it may run to thousands)."""
    ids = [f"#{i}" for i in cycle]
    if len(ids) > 2 * shown:
        ids = [*ids[:shown], f"… ({len(cycle) - 2 * shown} more) …", *ids[-shown:]]
    return " -> ".join(ids)


_ADJECTIVES = (
    "amber",
    "bold",
    "brisk",
    "calm",
    "clever",
    "copper",
    "crimson",
    "deft",
    "eager",
    "fleet",
    "gentle",
    "golden",
    "keen",
    "lucid",
    "merry",
    "nimble",
    "quiet",
    "rapid",
    "silver",
    "steady",
    "swift",
    "tidy",
    "vivid",
    "witty",
)
_NOUNS = (
    "badger",
    "crane",
    "falcon",
    "fox",
    "heron",
    "ibis",
    "lynx",
    "marten",
    "otter",
    "owl",
    "panda",
    "puffin",
    "raven",
    "robin",
    "seal",
    "sparrow",
    "stoat",
    "swan",
    "tern",
    "wren",
)


def memorable_name() -> str:
    """A name like `swift-otter-42` for an agent that did not choose one."""
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.randbelow(90) + 10}"
