"""The internal key: accepted only with the in-process scope's key object, under any auth."""

from __future__ import annotations

import pytest

from gateway.auth import ANONYMOUS, INTERNAL, Authenticator, InternalKey
from gateway.errors import AuthenticationFailed
from gateway.settings import KeyAuth

APP_KEY = "sk-app-key-for-internal-tests"


def authenticators() -> list[Authenticator]:
    keys = KeyAuth.model_validate({"keys": [{"name": "app", "key": APP_KEY}]})
    return [Authenticator(keys), Authenticator("none")]


@pytest.mark.parametrize("authenticator", authenticators())
def test_the_internal_key_counts_only_with_its_scope(authenticator: Authenticator) -> None:
    key = InternalKey()
    header = key.authorization().encode()
    assert authenticator.authenticate(header, key) is INTERNAL
    other = InternalKey()  # another process's key (or a guess) is nobody's
    if authenticator.required:
        with pytest.raises(AuthenticationFailed):
            authenticator.authenticate(header)
        with pytest.raises(AuthenticationFailed):
            authenticator.authenticate(header, other)
        app = authenticator.authenticate(f"Bearer {APP_KEY}".encode(), key)
        assert app.name == "app"  # a real key through the in-process path stays itself
    else:
        assert authenticator.authenticate(header) is ANONYMOUS
        assert authenticator.authenticate(header, other) is ANONYMOUS


def test_the_internal_key_hides_itself() -> None:
    key = InternalKey()
    token = key.authorization().split()[1]
    assert len(token) >= 40
    assert token not in repr(key) and token not in str(key)
    assert INTERNAL.name == "gateway-internal" and INTERNAL.routes is None
    assert not INTERNAL.limits
