"""Statements built once and compiled once per dialect, for the hot paths.

A `Prepared` statement skips what SQLAlchemy spends on a small statement at every call
(building it, finding its compiled form, the execution context): on SQLite it runs on the
stdlib driver (store/sqlite.py), on PostgreSQL on asyncpg (store/database.py), with the
type processing SQLAlchemy would apply, and gives back an ordinary `Result`.
"""

from __future__ import annotations

import keyword
from collections import namedtuple
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult, Dialect, IteratorResult, Result
from sqlalchemy.engine.result import SimpleResultMetaData

if TYPE_CHECKING:
    import asyncpg

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None  # one row, or many (executemany)
Statement = sa.Select[Any] | sa.Insert | sa.Update | sa.Delete  # what a `Prepared` may hold


class Prepared:
    """A statement built once (at import, with named `sa.bindparam`s) for the hot paths.

    SQLAlchemy spends most of a small statement's time building it and finding its compiled
    form again (~100-250 us against ~10 us for SQLite itself). A `Prepared` statement is
    compiled once per dialect, then runs straight on the driver (sqlite3; asyncpg, which prepares
    each SQL text once per connection), with the type processing SQLAlchemy would apply, and
    returns an ordinary `Result` (with `rowcount`). SELECT, INSERT, UPDATE and DELETE, with or
    without RETURNING; a list of parameter rows runs as executemany. Expanding `IN` parameters
    (`sa.bindparam(..., expanding=True)`) are filled in per call on SQLite (an empty list runs
    through SQLAlchemy, which knows the SQL for `IN ()`); on PostgreSQL `x IN (list)` is sent as
    `x = ANY($n)` with the list as one array parameter, so asyncpg prepares it once.
    Python-side column defaults are not applied: give every value.
    """

    __slots__ = ("_plans", "statement")

    def __init__(self, statement: Statement) -> None:
        self.statement = statement
        self._plans: dict[str, Plan] = {}

    @classmethod
    def insert_row(cls, table: sa.Table) -> Prepared:
        """INSERT of every column but `id` (each a parameter of the column's name), RETURNING id."""
        values: dict[Any, Any] = {c: sa.bindparam(c.name) for c in table.c if c.name != "id"}
        return cls(table.insert().values(values).returning(table.c.id))

    def plan(self, dialect: Dialect) -> Plan:
        found = self._plans.get(dialect.name)
        if found is None:
            found = self._plans[dialect.name] = Plan(self.statement, dialect)
        return found

    def explain(self, conn: sa.Connection, parameters: Mapping[str, Any]) -> list[str]:
        """SQLite's query plan for this statement with these parameters, step by step (benches and
        tests show and check that a page reads in the order it is asked for)."""
        compiled = self.statement.compile(dialect=conn.dialect)
        values = compiled.construct_params(dict(parameters))
        args = tuple(values[name] for name in compiled.positiontup or [])
        return [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled.string, args)]


class PreparedResult(IteratorResult[Any]):
    """The rows a `Plan` returned, and how many rows its statement changed."""

    def __init__(
        self, metadata: SimpleResultMetaData, rows: list[Any], rowcount: int, record: type | None = None
    ) -> None:
        super().__init__(metadata, iter(rows))
        self.rowcount = rowcount
        self.rows = rows
        self.record = record

    def scalar_one(self) -> Any:
        """The one row's first column, as SQLAlchemy's (which raises unless there is exactly one row)."""
        rows = self.rows
        if len(rows) == 1:  # the common case, without the Result machinery
            self.rows = []
            return rows[0][0]
        return super().scalar_one()


NO_COLUMNS = SimpleResultMetaData([])


def changed(result: Result[Any]) -> int:
    """How many rows an INSERT, UPDATE or DELETE changed (a `Plan`'s result or SQLAlchemy's)."""
    assert isinstance(result, PreparedResult | CursorResult)
    return int(result.rowcount)


def records(result: Result[Any]) -> list[Any]:
    """The rows of `result`, read by column name as attributes (`row.id`), for the hot paths.

    From a `Plan`, they are named tuples: reading a column costs what indexing a tuple does,
    where a SQLAlchemy `Row` costs ten times more (its attributes go through `__getattr__`).
    Any other result gives its `Row`s, which read the same way. Use instead of iterating the
    result, not as well.
    """
    if isinstance(result, PreparedResult) and result.record is not None:
        return list(map(result.record._make, result.rows))  # type: ignore[attr-defined]
    return list(result)


def tuples(result: Result[Any]) -> list[tuple[Any, ...]]:
    """The rows of `result` as plain tuples, read by position: for many narrow rows, where even a
    named tuple per row (`records`) is a cost of its own."""
    if isinstance(result, PreparedResult):
        return result.rows
    return [tuple(row) for row in result]


def first_record(result: Result[Any]) -> Any | None:
    """The first row of `result` (see `records`), or None."""
    if isinstance(result, PreparedResult) and result.record is not None:
        return result.record._make(result.rows[0]) if result.rows else None  # type: ignore[attr-defined]
    return result.first()


def _each(proc: Any) -> Any:
    """A bind processor for one value, applied to each value of a list (None: none to apply)."""
    return None if proc is None else lambda values: [proc(v) for v in values]


def _converted(rows: Sequence[Any], convert: list[tuple[int, Any]]) -> list[tuple[Any, ...]]:
    """`rows` with each column of `convert` through its result processor. NULL stays None without
    a call: SQLAlchemy's processors (and our types') give None for None."""
    out = []
    for row in rows:
        values = list(row)
        for i, proc in convert:
            value = values[i]
            if value is not None:
                values[i] = proc(value)
        out.append(tuple(values))
    return out


class Plan:
    """A compiled `Prepared` for one dialect: SQL, parameter order and type processors."""

    __slots__ = ("binds", "convert", "defaults", "expanding", "keys", "metadata", "record", "results", "sql")

    def __init__(self, statement: Statement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        # Values the statement carries itself (inline literals); the named parameters come per call.
        self.defaults = {n: b.effective_value for n, b in compiled.binds.items() if not b.required}
        self.binds = [
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup or []
        ]
        self.expanding = {name for name, b in compiled.binds.items() if b.expanding}
        if self.expanding and dialect.name == "postgresql":
            self._as_arrays()
        self.keys: list[str] | None = None  # the names the SQL gives its columns, from the first run
        self.record: type | None = None  # a named tuple of those columns (see `records`)
        self.metadata = NO_COLUMNS  # SQLAlchemy's description of those columns, for the results
        self.results = [  # the columns selected, or RETURNING's (none for plain DML)
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in statement.exported_columns
        ]
        # The columns that have a processor, by position: a row costs a step for each of these
        # (an inbox row: 5 of 15 columns), not one for every column.
        self.convert = [(i, proc) for i, proc in enumerate(self.results) if proc is not None]

    def _as_arrays(self) -> None:
        """PostgreSQL: each `IN (list)` becomes `= ANY($n)` (`NOT IN`, `<> ALL($n)`), its list one
        array parameter numbered after the others, so the SQL is the same whatever the list's
        length (an empty list included: ANY of none is false, ALL of none true)."""
        scalars = [(n, proc) for n, proc in self.binds if n not in self.expanding]
        arrays = list(dict.fromkeys((n, proc) for n, proc in self.binds if n in self.expanding))
        sql = self.sql
        for number, (name, _) in enumerate(arrays, start=len(scalars) + 1):
            placeholder = f"__[POSTCOMPILE_{name}]"
            sql = sql.replace(f" NOT IN ({placeholder})", f" <> ALL(${number})")
            sql = sql.replace(f" IN ({placeholder})", f" = ANY(${number})")
        if "__[POSTCOMPILE_" in sql:  # a form not rewritten above: SQLAlchemy runs it
            return
        self.sql = sql
        self.binds = scalars + [(n, _each(proc)) for n, proc in arrays]
        self.expanding = set()

    def arguments(self, parameters: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        """The SQL for these parameters (expanding IN filled in) and its positional arguments."""
        values = {**self.defaults, **parameters} if parameters else self.defaults
        if not self.expanding:
            return self.sql, [values[n] if proc is None else proc(values[n]) for n, proc in self.binds]
        sql, args = self.sql, list[Any]()
        for name, proc in self.binds:
            value: Any = values[name]
            if name in self.expanding:
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join("?" * len(value)))
                args.extend(value if proc is None else [proc(v) for v in value])
            else:
                args.append(value if proc is None else proc(value))
        return sql, args

    def run(self, dbapi: Any, parameters: Params) -> PreparedResult:
        if parameters is not None and not isinstance(parameters, Mapping):
            many = [self.arguments(row) for row in parameters]
            sql = many[0][0] if many else self.sql
            cursor = dbapi.executemany(sql, [args for _, args in many])
            return PreparedResult(NO_COLUMNS, [], cursor.rowcount)
        sql, args = self.arguments(parameters)
        cursor = dbapi.execute(sql, args)
        if cursor.description is None:
            return PreparedResult(NO_COLUMNS, [], cursor.rowcount)
        if self.keys is None:
            self._name_columns([d[0] for d in cursor.description])
        rows: list[Any] = cursor.fetchall()
        if self.convert:
            rows = _converted(rows, self.convert)
        return PreparedResult(self.metadata, rows, cursor.rowcount, self.record)

    async def run_asyncpg(self, conn: asyncpg.Connection, parameters: Params) -> PreparedResult:
        """Run on asyncpg (PostgreSQL), which prepares the SQL once per connection. No expanding IN."""
        if parameters is not None and not isinstance(parameters, Mapping):
            await conn.executemany(self.sql, [self.arguments(row)[1] for row in parameters])
            return PreparedResult(NO_COLUMNS, [], -1)
        sql, args = self.arguments(parameters)
        if not self.results:  # no rows come back: the status line ("UPDATE 3") has the count
            status = await conn.execute(sql, *args)
            count = status.rsplit(" ", 1)[-1]
            return PreparedResult(NO_COLUMNS, [], int(count) if count.isdigit() else -1)
        fetched = await conn.fetch(sql, *args)
        if self.keys is None and fetched:
            self._name_columns(list(fetched[0].keys()))
        rows = _converted(fetched, self.convert) if self.convert else [tuple(r) for r in fetched]
        return PreparedResult(self.metadata, rows, len(rows), self.record)

    def _name_columns(self, keys: list[str]) -> None:
        self.keys = keys
        self.metadata = SimpleResultMetaData(keys)
        if len(set(keys)) == len(keys) and all(
            k.isidentifier() and not keyword.iskeyword(k) and not k.startswith("_") for k in keys
        ):
            self.record = namedtuple("Record", keys)  # type: ignore[misc]
        # else: names a named tuple cannot carry; `records` gives SQLAlchemy's rows instead

    def needs_sqlalchemy(self, parameters: Params) -> bool:
        """An empty expanding list: SQLAlchemy renders its own SQL for `IN ()`."""
        if not self.expanding or not isinstance(parameters, Mapping):
            return False
        return any(not parameters.get(name, self.defaults.get(name)) for name in self.expanding)
