"""Errors the service layer raises; each front door turns them into its own shape.

Every error carries a stable `code`, a message a person or an agent can act on,
and optional `details` (the field and the rule, the conflicting holder, …).
"""

from __future__ import annotations

import math
from typing import Any


class VibeError(Exception):
    code = "error"
    http_status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(VibeError):
    """Bad input: names the field and the rule it broke."""

    code = "invalid_input"
    http_status = 422

    def __init__(self, field: str, rule: str, **details: Any) -> None:
        super().__init__(f"{field}: {rule}", field=field, rule=rule, **details)
        self.field = field
        self.rule = rule


class NotFound(VibeError):
    code = "not_found"
    http_status = 404


class Conflict(VibeError):
    code = "conflict"
    http_status = 409


class AlreadyClaimed(Conflict):
    code = "already_claimed"


class VersionConflict(Conflict):
    code = "version_conflict"


class Unauthenticated(VibeError):
    code = "unauthenticated"
    http_status = 401
    presented = True  # a credential was sent (and is no good); False: none was


class MissingCredentials(Unauthenticated):
    """No token (nor session) was sent at all."""

    presented = False


class PermissionDenied(VibeError):
    code = "permission_denied"
    http_status = 403


class RateLimited(VibeError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        # tenths of a second, rounded up, as the message says it ("retry in 0.1s" said 0.004)
        super().__init__(message, retry_after_s=math.ceil(retry_after * 10) / 10)
        self.retry_after = retry_after


class TooManyOpen(VibeError):
    """A credential already holds as many long-lived requests of a kind (feeds, waits) as it may."""

    code = "too_many_open"
    http_status = 429


class DatabaseUnavailable(VibeError):
    """The database cannot be reached right now; the same request may well succeed in a moment."""

    code = "database_unavailable"
    http_status = 503

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        super().__init__(
            message
            or f"the database cannot be reached; nothing was changed: retry in {round(retry_after)} s",
            retry_after_s=round(retry_after),
        )
        self.retry_after = retry_after


class DatabaseRestoring(DatabaseUnavailable):
    """A restore (`backup restore --force`) is replacing the database: a credential read now could
    see the restored rows before what the restore keeps (revocations, logouts) is written back into
    them, so none is answered until it is (store/credentials.py)."""

    def __init__(self) -> None:
        super().__init__(1, "a backup restore is replacing the database; nothing was changed: retry in 1 s")


class ShuttingDown(VibeError):
    """The server is shutting down: it opens no new live feed, and a request still waiting its turn when
    the shutdown's grace ran out was not started; reconnect (to another replica) soon."""

    code = "going_away"
    http_status = 503
    retry_after = 1.0

    def __init__(
        self,
        message: str = "the server is shutting down; reconnect (to another replica) to follow the events",
    ) -> None:
        super().__init__(message, retry_after_s=round(self.retry_after))


class StorageFull(VibeError):
    """The disk holding the database is full: reads work, writes are refused until space is freed."""

    code = "storage_full"
    http_status = 507

    def __init__(self) -> None:
        super().__init__(
            "the database's disk is full; nothing was changed. Reads still work; writes resume once an "
            "operator frees space"
        )
