"""Who may see the dashboard: the holders of an admin key (``admin.keys`` in the config).

The JSON API takes ``Authorization: Bearer <admin key>``, like /admin. A browser cannot send
that header when it opens a page, so the key is exchanged once (the login form, or
``/dashboard?key=...``, or ``/dashboard#key=...``) for a session cookie: HttpOnly, SameSite=Strict,
scoped to /dashboard, Secure over HTTPS. The cookie holds no key: it is
``<expiry>.<HMAC-SHA256(key digest, expiry)>``, so every replica and worker (they share the
config) accepts it without shared state, it expires after ``SESSION_S``, and it stops working
when its key is removed from the config. The key itself is never logged or stored; note that
``?key=`` is part of the URL, which an access log (``server.access_log: true``) or a proxy may
record: the login form and ``#key=`` (never sent to the server) do not have that problem.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from fastapi import Request

from gateway.admin import AdminDenied
from gateway.settings import AdminSettings

COOKIE = "gateway_dashboard"
SESSION_S = 12 * 3600
_CONTEXT = b"gateway-dashboard-session:"


def _sign(digest: str, expires: int) -> str:
    return hmac.new(digest.encode(), _CONTEXT + str(expires).encode(), hashlib.sha256).hexdigest()


class DashboardAccess:
    def __init__(
        self,
        admin: Callable[[], AdminSettings | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._admin = admin
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self._admin() is not None

    def _digests(self) -> list[str]:
        admin = self._admin()
        return [key.digest() for key in admin.keys] if admin is not None else []

    def digest_of(self, key: str) -> str | None:
        """The digest of ``key`` if it is an admin key, else None."""
        digest = hashlib.sha256(key.strip().encode()).hexdigest()
        for known in self._digests():
            if hmac.compare_digest(digest, known):
                return known
        return None

    def session_for(self, digest: str) -> str:
        expires = int(self._clock()) + SESSION_S
        return f"{expires}.{_sign(digest, expires)}"

    def session_valid(self, value: str | None) -> bool:
        if not value:
            return False
        expiry, _, signature = value.partition(".")
        try:
            expires = int(expiry)
        except ValueError:
            return False
        if expires < self._clock() or expires > self._clock() + SESSION_S + 60:
            return False
        return any(hmac.compare_digest(signature, _sign(d, expires)) for d in self._digests())

    def signed_in(self, request: Request) -> bool:
        return self.enabled and self.session_valid(request.cookies.get(COOKIE))

    def require(self, request: Request) -> None:
        """For the JSON API: a bearer admin key or a valid session cookie; else AdminDenied
        (answered with OpenAI's error JSON)."""
        if not self.enabled:
            raise AdminDenied(
                403, "The dashboard is disabled: no admin keys are configured.", "admin_disabled"
            )
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AdminDenied(
                    401, "Missing admin key: send 'Authorization: Bearer <key>'.", "missing_api_key"
                )
            if self.digest_of(token) is None:
                raise AdminDenied(401, "Incorrect admin key provided.", "invalid_api_key")
            return
        if self.session_valid(request.cookies.get(COOKIE)):
            return
        raise AdminDenied(
            401,
            "Missing admin key: send 'Authorization: Bearer <key>' or sign in at /dashboard.",
            "missing_api_key",
        )
