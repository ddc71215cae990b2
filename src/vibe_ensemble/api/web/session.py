"""Dashboard sessions: a signed cookie naming a credential, and CSRF tokens derived from it.

The cookie holds no secret: `v1.<credential id>.<expires>.<nonce>.<signature>`, signed with
HMAC-SHA256 under the session key (`VIBE_SESSION_SECRET`, or a random key per process). It is
only a pointer: every request looks the credential up again (`TokenService.authenticate_session`),
so revoking or expiring the token ends its sessions at once. A logout writes the session down as
ended (the SHA-256 of the cookie, `TokenService.end_session`), so a copy of the cookie taken before
is refused too, on every replica. A form's CSRF token is an HMAC of the cookie, checked on every
POST; the cookie is also `SameSite=Strict` and `HttpOnly`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.requests import HTTPConnection
from starlette.responses import Response

from vibe_ensemble.domain.errors import Unauthenticated, VibeError
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.services import Services

COOKIE = "vibe_session"
# Over HTTPS the cookie is `__Host-vibe_session`: a browser takes a cookie of that name only from
# this very host, secure, for the whole site, so a page on a sibling subdomain cannot set its own
# session in the overseer's browser ("cookie tossing": the overseer then acts as the attacker). Over
# plain HTTP (a laptop's loopback) the prefix cannot be used, and any page on the same host name,
# whatever its port, can set the cookie (docs/dashboard.md).
SECURE_COOKIE = "__Host-" + COOKIE


def cookie_name(conn: HTTPConnection) -> str:
    """The session cookie's name for this request: prefixed over HTTPS (`SECURE_COOKIE`)."""
    return SECURE_COOKIE if conn.url.scheme in ("https", "wss") else COOKIE


CSRF_FIELD = "csrf"
_VERSION = "v1"


@dataclass(frozen=True)
class Session:
    credential_id: int
    expires: int  # unix time
    value: str  # the cookie as sent

    @property
    def hash(self) -> str:
        """What the server keeps of a session it ended (never the cookie itself)."""
        return hashlib.sha256(self.value.encode()).hexdigest()

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.expires, UTC)


def session_key(settings: Settings) -> bytes:
    """The configured key, or a random one for this process (sessions then end at a restart)."""
    return (settings.session_secret or secrets.token_urlsafe(32)).encode()


def _sign(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def lifetime(ttl_s: int, token_expires_at: datetime | None, now: float | None = None) -> int:
    """Seconds a new session lasts: the configured `ttl_s`, but never past its token's expiry, so
    neither the cookie nor its signed expiry outlives the token (the token is checked on every
    request besides)."""
    if token_expires_at is None:
        return ttl_s
    left = token_expires_at.timestamp() - (time.time() if now is None else now)
    return max(1, min(ttl_s, int(left)))


def issue(key: bytes, credential_id: int, ttl_s: int, now: float | None = None) -> Session:
    expires = int((time.time() if now is None else now) + ttl_s)
    body = f"{_VERSION}.{credential_id}.{expires}.{secrets.token_urlsafe(12)}"
    return Session(credential_id, expires, f"{body}.{_sign(key, body)}")


def read(key: bytes, value: str, now: float | None = None) -> Session | None:
    """The session a cookie stands for; None when it is malformed, forged or past its expiry."""
    if len(value) > 200:
        return None
    body, _, signature = value.rpartition(".")
    parts = body.split(".")
    if (
        len(parts) != 4
        or parts[0] != _VERSION
        or not hmac.compare_digest(signature.encode(), _sign(key, body).encode())
    ):
        return None
    try:
        credential_id, expires = int(parts[1]), int(parts[2])
    except ValueError:
        return None
    if expires <= (time.time() if now is None else now):
        return None
    return Session(credential_id, expires, value)


def csrf_token(key: bytes, session: Session) -> str:
    return _sign(key, f"csrf.{session.value}")


def csrf_ok(key: bytes, session: Session, given: str) -> bool:
    return hmac.compare_digest(given.encode(), csrf_token(key, session).encode())


def same_origin(conn: HTTPConnection) -> bool:
    """False when the browser says the form (or the WebSocket) came from another site (Fetch
    metadata, else Origin).

    Our pages are served with `Referrer-Policy: same-origin`, so a browser sends our own origin
    on a same-origin form and `Origin: null` only for another site (or a sandboxed frame, a
    `data:` page …): `null` counts as cross-origin. This matters on plain-HTTP host names,
    where browsers send no `Sec-Fetch-Site`. A request with neither header is not from a
    browser form, which is all CSRF is about.
    """
    site = conn.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    return origin.partition("://")[2] == conn.headers.get("host", "")


def key_of(conn: HTTPConnection) -> bytes:
    key: bytes = conn.app.state.session_key
    return key


def from_request(conn: HTTPConnection) -> Session | None:
    """The request's valid session cookie, if any (the credential is not checked here)."""
    value = conn.cookies.get(cookie_name(conn))
    return None if not value else read(key_of(conn), value)


async def still_valid(services: Services, session: Session) -> bool:
    """For open feeds: the session has not expired nor been ended, and its token is still good (not
    billed)."""
    if session.expires <= time.time():
        return False
    try:
        await services.tokens.authenticate_session(session.credential_id, session.hash, throttle=False)
    except Unauthenticated:
        return False
    except VibeError:
        return True  # rate limited: the token itself is still good
    return True


def set_cookie(response: Response, conn: HTTPConnection, session: Session, ttl_s: int) -> None:
    response.set_cookie(
        cookie_name(conn),
        session.value,
        max_age=ttl_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=conn.url.scheme == "https",
    )


def clear_cookie(response: Response, conn: HTTPConnection) -> None:
    response.delete_cookie(
        cookie_name(conn), path="/", httponly=True, samesite="strict", secure=conn.url.scheme == "https"
    )
