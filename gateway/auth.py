"""Gateway keys: checked on every /v1 call, kept only as sha256 digests, never forwarded.

Besides the configured and virtual keys there is the gateway's own: the internal client
(gateway/internal.py) calls the /v1 routes in-process with a random per-process key. It counts
only on requests that carry the `InternalKey` in their ASGI scope (``INTERNAL_SCOPE``), which only
the in-process transport sets: the same key sent over the socket is refused like any unknown key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.errors import AuthenticationFailed
from gateway.limits import Limits
from gateway.settings import GatewayKey, KeyAuth


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the name of the key, never the key."""

    name: str
    key_digest: str | None
    allow_variant_override: bool
    routes: frozenset[str] | None = None
    """The model names this key may call; None: all."""
    limits: Limits = field(default_factory=Limits)

    @property
    def key_id(self) -> str:
        """A stable, non-secret id for the key's counters (a prefix of the digest)."""
        return self.key_digest[:24] if self.key_digest else "anonymous"


ANONYMOUS = Principal(name="anonymous", key_digest=None, allow_variant_override=True)

INTERNAL = Principal(name="gateway-internal", key_digest=None, allow_variant_override=True)
"""The gateway's own calls (judges, counterfactuals): every route, no limits, and the only
caller whose ``gateway.*`` tags are kept."""

INTERNAL_SCOPE = "gateway.internal"
"""The ASGI scope key under which the in-process transport puts the `InternalKey`."""


class InternalKey:
    """The per-process key of the internal client; only its digest is compared, never logged."""

    __slots__ = ("_digest", "_token")

    def __init__(self) -> None:
        self._token = secrets.token_urlsafe(32)
        self._digest = hashlib.sha256(self._token.encode()).digest()

    def authorization(self) -> str:
        """The ``Authorization`` header value that carries it."""
        return f"Bearer {self._token}"

    def matches(self, token: bytes) -> bool:
        return hmac.compare_digest(hashlib.sha256(token).digest(), self._digest)

    def __repr__(self) -> str:
        return "InternalKey(...)"


def principal_for(key: GatewayKey) -> Principal:
    return Principal(
        key.name,
        key.digest(),
        key.allow_variant_override,
        frozenset(key.routes) if key.routes is not None else None,
        Limits(key.rpm, key.tpm, key.daily_budget_usd, key.monthly_budget_usd),
    )


class Authenticator:
    """Keys from the config file, and virtual keys (``extra``: the current ones, by sha256)."""

    def __init__(
        self,
        auth: Literal["none"] | KeyAuth,
        extra: Callable[[], Mapping[str, Principal]] | None = None,
    ) -> None:
        self.required = auth != "none"
        self._extra = extra
        self._by_digest: dict[str, Principal] = {}
        if isinstance(auth, KeyAuth):
            for key in auth.keys:
                principal = principal_for(key)
                self._by_digest[principal.key_digest or ""] = principal

    def authenticate(
        self, authorization: bytes | None, internal: InternalKey | None = None
    ) -> Principal:
        """The caller behind an ``Authorization`` header value, or AuthenticationFailed;
        ``internal``: the request came through the in-process transport (its scope's key)."""
        if internal is not None and authorization:
            scheme, _, token = authorization.partition(b" ")
            if scheme.lower() == b"bearer" and internal.matches(token.strip()):
                return INTERNAL
        if not self.required:
            if authorization and self._extra is not None:  # a virtual key brings its limits
                _, _, token = authorization.partition(b" ")
                known = self._extra().get(hashlib.sha256(token.strip()).hexdigest())
                if known is not None:
                    return known
            return ANONYMOUS
        if not authorization:
            raise AuthenticationFailed(
                "Missing gateway key: send it as 'Authorization: Bearer <key>' "
                "(or 'x-api-key: <key>').",
                code="missing_api_key",
            )
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise AuthenticationFailed("Malformed Authorization header: expected 'Bearer <key>'.")
        digest = hashlib.sha256(token.strip()).hexdigest()
        principal = self._by_digest.get(digest)
        if principal is None and self._extra is not None:
            principal = self._extra().get(digest)
        if principal is None:
            # The key itself is never echoed or logged.
            raise AuthenticationFailed("Incorrect gateway key provided.")
        return principal
