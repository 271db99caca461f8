"""Errors raised by the capture package.

CaptureError                   base class
├── SchemaOutOfDate            the database's schema revision is older than the code's;
│   │                          the message names the command that fixes it
│   └── SchemaTooNew           ... or one this code does not know (a newer gateway's)
└── UnknownCall                feedback for a request id that is not in the store
"""

from __future__ import annotations


class CaptureError(Exception):
    """Base class of the capture package's errors."""


class SchemaOutOfDate(CaptureError):
    """The database is not at the revision this code needs (``capture.revision.HEAD_REVISION``)."""

    def __init__(self, current: str | None, needed: str, config_path: str = "FILE") -> None:
        self.current = current
        self.needed = needed
        super().__init__(self.explain(current, needed, config_path))

    @staticmethod
    def explain(current: str | None, needed: str, config_path: str) -> str:
        at = current if current is not None else "none (no capture tables yet)"
        return (
            f"the capture database is at revision {at}, this code needs {needed}: "
            f"run `gateway db upgrade --config {config_path}`"
        )


class SchemaTooNew(SchemaOutOfDate):
    """The database was migrated by a newer version of the code than this one."""

    @staticmethod
    def explain(current: str | None, needed: str, config_path: str) -> str:
        return (
            f"the capture database is at revision {current}, which this code does not know "
            f"(it needs {needed}): it was upgraded by a newer gateway; run that version"
        )


class UnknownCall(CaptureError):
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(f"no captured call has the request id {request_id!r}")
