"""Gateway keys: checked on every /v1 call, kept only as sha256 digests, never forwarded."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from gateway.errors import AuthenticationFailed
from gateway.settings import KeyAuth


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the name of the key, never the key."""

    name: str
    key_digest: str | None
    allow_variant_override: bool


ANONYMOUS = Principal(name="anonymous", key_digest=None, allow_variant_override=True)


class Authenticator:
    def __init__(self, auth: Literal["none"] | KeyAuth) -> None:
        self.required = auth != "none"
        self._by_digest: dict[str, Principal] = {}
        if isinstance(auth, KeyAuth):
            for key in auth.keys:
                digest = key.digest()
                self._by_digest[digest] = Principal(key.name, digest, key.allow_variant_override)

    def authenticate(self, authorization: bytes | None) -> Principal:
        """The caller behind an ``Authorization`` header value, or AuthenticationFailed."""
        if not self.required:
            return ANONYMOUS
        if not authorization:
            raise AuthenticationFailed(
                "Missing gateway key: send it as 'Authorization: Bearer <key>'.",
                code="missing_api_key",
            )
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise AuthenticationFailed("Malformed Authorization header: expected 'Bearer <key>'.")
        principal = self._by_digest.get(hashlib.sha256(token.strip()).hexdigest())
        if principal is None:
            # The key itself is never echoed or logged.
            raise AuthenticationFailed("Incorrect gateway key provided.")
        return principal
