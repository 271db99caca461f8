"""Errors from calling an upstream, translated at one boundary.

    UpstreamError                 anything that kept an upstream from answering
    ├── UpstreamUnreachable       no connection could be made (refused, DNS, TLS)
    ├── UpstreamTimeout           connected, but no bytes arrived in time
    └── UpstreamDisconnected      the upstream closed the connection before answering in full

An upstream that answers with an error status is not an UpstreamError: its response is passed
through as it came.
"""

from __future__ import annotations


class UpstreamError(Exception):
    def __init__(self, provider: str, detail: str) -> None:
        super().__init__(f"provider {provider!r}: {detail}")
        self.provider = provider
        self.detail = detail


class UpstreamUnreachable(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamDisconnected(UpstreamError):
    pass
