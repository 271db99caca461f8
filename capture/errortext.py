"""One line about an exception, safe to log: ``TypeName: message``, or the type name alone.

Never the whole ``str()`` of a SQLAlchemy statement error: that repeats the statement's
parameters (captured bodies, key digests) and, for a deeply nested one, raises
``RecursionError`` while it is being formatted. Its driver error is described instead.
Whatever ``str()`` raises, the type name still comes out; the text is one line, clipped.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

DEFAULT_LIMIT = 300


def _text(exc: BaseException, limit: int) -> str:
    try:
        text = str(exc)
    except Exception:  # RecursionError included: a message that cannot be built is left out
        return ""
    return " ".join(text[: limit * 2].split())[:limit]


def describe_error(exc: BaseException, limit: int = DEFAULT_LIMIT) -> str:
    """``TypeName: message`` (one line, at most ``limit`` characters of message), or
    ``TypeName`` when the message is empty or cannot be built."""
    name = type(exc).__name__
    if isinstance(exc, sa_exc.StatementError):
        inner = exc.orig
        if inner is None:
            return name
        if type(inner).__name__ != name:
            name = f"{name} ({type(inner).__name__})"
        exc = inner
    text = _text(exc, limit)
    return f"{name}: {text}" if text else name
