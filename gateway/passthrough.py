"""Which path a passed-through ``/v1/*`` call goes to upstream: the client's, exactly as it
encoded it, and never outside the provider's ``/v1``.

The ASGI ``path`` is already percent-decoded: forwarding it as if it were encoded turns a
client's ``%3F`` into a query, ``%2F`` into a path separator and ``%00`` into a control
character. So the raw path (``raw_path``) goes upstream, byte for byte, after three checks: it
holds only characters a URL path may hold (anything else must come percent-encoded), no segment
is a dot segment, encoded or not (nor becomes one when a ``%2F`` in it is decoded), and it starts
with ``/v1/`` as written.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from gateway.errors import InvalidRequest
from gateway.types import Scope

# RFC 3986 pchar and '/', with '%' only as the start of an escape.
_PATH = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
_QUERY = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
_DOT_SEGMENTS = frozenset({b".", b".."})
_SEPARATORS = re.compile(rb"[/\\]")


def upstream_target(scope: Scope) -> tuple[str, str]:
    """The path below ``/v1`` and the query string to send upstream, or InvalidRequest."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:  # a server that does not give it: nothing left to check but the decoded path
        raw = scope["path"].encode("utf-8")
    raw = raw.partition(b"?")[0]
    query: bytes = scope.get("query_string", b"")
    if _PATH.fullmatch(raw) is None:
        raise InvalidRequest(
            "The request path holds characters that must be percent-encoded.", code="invalid_path"
        )
    if not raw.startswith(b"/v1/"):
        raise InvalidRequest("The request path must start with /v1/.", code="invalid_path")
    for segment in raw.split(b"/"):
        if (b"." in segment or b"%" in segment) and _is_dot_segment(segment):
            raise InvalidRequest(
                "The request path may not hold `.` or `..` segments.", code="invalid_path"
            )
    if _QUERY.fullmatch(query) is None:
        raise InvalidRequest(
            "The query string holds characters that must be percent-encoded.", code="invalid_path"
        )
    return raw[3:].decode("ascii"), query.decode("ascii")


def _is_dot_segment(segment: bytes) -> bool:
    if segment in _DOT_SEGMENTS:
        return True
    decoded = unquote_to_bytes(segment)
    return any(part in _DOT_SEGMENTS for part in _SEPARATORS.split(decoded))
