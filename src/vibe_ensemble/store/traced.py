"""Database spans, only when tracing is on (ops/tracing.py): a span per transaction, and per statement.

`Database.write()` and `Database.read()` pass their transaction through `transaction` when the
database has a tracer (`Database.tracer`, set when the app is built with one); without one they
return their own context manager untouched, so tracing off costs a transaction one attribute
check and a statement nothing.

A transaction is traced only inside a span of ours (an HTTP request, an MCP tool call): the
background duties' transactions are not, so they make no traces of their own every second.

- `db.transaction write` / `db.transaction read` (CLIENT): `db.system.name` (`sqlite` or
  `postgresql`), `vibe.db.statements` (how many ran), and `vibe.db.outcome`: `committed` (a write),
  `ended` (a read), `rolled_back` (its block raised), or `error` (beginning or committing failed);
  on a failure `error.type` is the exception's class name, never its text.
- one span per statement inside it, a child of the transaction's, named `<operation> <table>`
  (`SELECT issues`): `db.operation.name`, `db.collection.name` when the statement has one table,
  `db.operation.batch.size` for an executemany. Read off the SQLAlchemy statement object, never
  off the SQL text: no parameter, no row value, no SQL ever leaves the process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, overload

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.sql.base import Executable

from vibe_ensemble.store.prepared import Params, Prepared

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from vibe_ensemble.store.database import Connection

# A statement's (operation, table), per `Prepared` (made once, at import): bounded all the same.
_DESCRIBED: dict[Prepared, tuple[str | None, str | None]] = {}
_MAX_DESCRIBED = 2000
_TEXT_OPERATIONS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "PRAGMA"})


def describe(statement: Any) -> tuple[str | None, str | None]:
    """The operation (`SELECT`, `INSERT`, …) and the one table a statement acts on, when known."""
    if isinstance(statement, Prepared):
        found = _DESCRIBED.get(statement)
        if found is None:
            if len(_DESCRIBED) >= _MAX_DESCRIBED:
                _DESCRIBED.clear()
            found = _DESCRIBED[statement] = describe(statement.statement)
        return found
    if isinstance(statement, sa.TextClause):  # our own SQL text: its first word only
        word = statement.text.lstrip().split(" ", 1)[0].upper()
        return (word if word in _TEXT_OPERATIONS else None), None
    if isinstance(statement, sa.Insert | sa.Update | sa.Delete):
        operation = "INSERT" if statement.is_insert else "UPDATE" if statement.is_update else "DELETE"
        table = statement.table
        return operation, table.name if isinstance(table, sa.Table) else None
    if isinstance(statement, sa.Select):
        froms = statement.get_final_froms()
        if len(froms) == 1 and isinstance(froms[0], sa.CTE) and isinstance(froms[0].element, sa.UpdateBase):
            return describe(froms[0].element)  # it reads what a WITH wrote (store/events.py): that write
        one = froms[0] if len(froms) == 1 and isinstance(froms[0], sa.Table) else None
        return "SELECT", None if one is None else one.name
    if isinstance(statement, sa.CompoundSelect):
        return "SELECT", None
    return None, None


class TracedConnection:
    """A transaction's connection that makes a span of each statement and counts them."""

    __slots__ = ("_client", "_conn", "_system", "_tracer", "dialect", "statements")

    def __init__(self, conn: Connection, tracer: Tracer, system: str) -> None:
        from opentelemetry.trace import SpanKind

        self._client = SpanKind.CLIENT
        self._conn = conn
        self._tracer = tracer
        self._system = system
        self.dialect = conn.dialect
        self.statements = 0

    @overload
    async def execute(self, statement: Prepared, parameters: Params = None) -> Result[Any]: ...

    @overload
    async def execute(self, statement: Executable, parameters: Params = None) -> CursorResult[Any]: ...

    async def execute(self, statement: Executable | Prepared, parameters: Any = None) -> Result[Any]:
        self.statements += 1
        operation, table = describe(statement)
        attributes: dict[str, str | int] = {"db.system.name": self._system}
        if operation is not None:
            attributes["db.operation.name"] = operation
        if table is not None:
            attributes["db.collection.name"] = table
        if isinstance(parameters, list | tuple):
            attributes["db.operation.batch.size"] = len(parameters)
        name = " ".join(x for x in (operation, table) if x) or self._system
        with self._tracer.start_as_current_span(
            name,
            kind=self._client,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result: Result[Any] = await self._conn.execute(statement, parameters)
            except BaseException as exc:
                _failed(span, exc)
                raise
            return result


def recording() -> bool:
    """Whether a span of ours is current (a request's, a tool call's): database spans go under it."""
    from opentelemetry import trace

    return trace.get_current_span().is_recording()


@asynccontextmanager
async def transaction(
    tracer: Tracer, kind: str, system: str, opened: AbstractAsyncContextManager[Connection]
) -> AsyncIterator[Connection]:
    """`opened` (a `Database` transaction) as a span, its statements as spans under it."""
    if not recording():
        async with opened as conn:
            yield conn
        return
    from opentelemetry.trace import SpanKind

    with tracer.start_as_current_span(
        f"db.transaction {kind}",
        kind=SpanKind.CLIENT,
        attributes={"db.system.name": system},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        outcome = "error"  # what it stays when beginning or committing fails
        traced: TracedConnection | None = None
        try:
            async with opened as conn:
                traced = TracedConnection(conn, tracer, system)
                try:
                    yield traced
                except BaseException:
                    outcome = "rolled_back"
                    raise
            outcome = "committed" if kind == "write" else "ended"
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            span.set_attributes(
                {"vibe.db.outcome": outcome, "vibe.db.statements": traced.statements if traced else 0}
            )


def _failed(span: Span, exc: BaseException) -> None:
    """The span failed with `exc`: its class name only (an exception's text may quote a value)."""
    from opentelemetry.trace import StatusCode

    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(StatusCode.ERROR, type(exc).__qualname__)
