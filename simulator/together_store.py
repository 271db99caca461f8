"""The simulated Together account and the wire pieces its endpoints share: the account's
files and jobs, the key check, errors in Together's shape, and checked request values."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulator.together_data import Dataset
from simulator.wire import OpenAIError

if TYPE_CHECKING:
    from simulator.together_job_state import Job

PREFIX = "/together"
STORAGE = "s3://together-sim-finetune"
ACCOUNT = "sim-user"
USER_ID = "sim-user-0001"


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TogetherError(OpenAIError):
    """Together's error body has OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        super().__init__(status, message, kind, param, code, headers)


def bad(message: str, param: str | None = None) -> TogetherError:
    return TogetherError(400, message, param, "invalid_value")


@dataclass(slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    file_type: str
    checksum: str
    created_at: int
    content: bytes | None = None
    status: str = "PENDING"
    report: dict[str, Any] | None = None
    dataset: Dataset | None = None
    upload_id: str | None = None
    parts: dict[int, bytes] = field(default_factory=dict)
    num_parts: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "created_at": self.created_at,
            "filename": self.filename,
            "bytes": len(self.content or b""),
            "purpose": self.purpose,
            "FileType": self.file_type,
            "processing_status": self.status,
            "validation_report": self.report,
        }


@dataclass
class Account:
    """The simulated account's files and jobs; the secret that signs storage URLs."""

    files: dict[str, StoredFile] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    secret: bytes = field(default_factory=lambda: os.urandom(16))

    def sign(self, file_id: str, part: int = 0) -> str:
        return hmac.new(self.secret, f"{file_id}:{part}".encode(), hashlib.sha256).hexdigest()

    def file(self, file_id: Any, param: str = "id") -> StoredFile:
        stored = self.files.get(file_id) if isinstance(file_id, str) else None
        if stored is None or stored.content is None:
            raise TogetherError(404, f"File {str(file_id)[:80]} not found", param, "not_found")
        return stored


ACCOUNT_KEY = web.AppKey("together_account", Account)


def account_of(request: web.Request) -> Account:
    """The account, after the key check every API call makes."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise TogetherError(
            401,
            "Invalid API key provided. You can find your API key at "
            "https://api.together.ai/settings/api-keys.",
            None,
            "invalid_api_key",
        )
    return request.app[ACCOUNT_KEY]


def as_object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def number_in(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise bad(f"{key} must be a number from {low:g} to {high:g}.", key)
    return float(value)


def integer_in(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad(f"{key} must be an integer from {low} to {high}.", key)
    return value
