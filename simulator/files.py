"""The Files API, in memory: what a fine-tuning job reads and writes.

POST   /v1/files                 multipart upload (``file``, ``purpose``) -> file object
GET    /v1/files                 list, newest first (``purpose`` filters)
GET    /v1/files/{id}            the file object
GET    /v1/files/{id}/content    the bytes as uploaded (or as a job wrote them)
DELETE /v1/files/{id}            {"id", "object": "file", "deleted": true}
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from simulator.exchange import STATE
from simulator.wire import InvalidRequest, OpenAIError, json_response, new_id

PURPOSES = ("fine-tune", "fine-tune-results", "assistants", "batch", "vision", "user_data", "evals")
MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


class FileStore:
    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}

    def add(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile(new_id("file-"), filename, purpose, content)
        self._files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        return self._files.get(file_id)

    def remove(self, file_id: str) -> bool:
        return self._files.pop(file_id, None) is not None

    def all(self) -> list[StoredFile]:
        return sorted(self._files.values(), key=lambda f: (f.created_at, f.id), reverse=True)


FILES = web.AppKey("simulator_files", FileStore)


def record(request: web.Request, body: Any = None, *, raw: bytes | None = None) -> None:
    """Log the request for GET /_sim/requests, as every other /v1 endpoint does: with ``body``,
    or its ``raw`` bytes (parsed when the log is read)."""
    headers = {key.lower(): value for key, value in request.headers.items()}
    log = request.app[STATE].log
    log.add(request.method, request.path, request.query_string, headers, body, raw=raw)


class FileNotFound(OpenAIError):
    def __init__(self, file_id: str) -> None:
        super().__init__(
            404, f"No such File object: {file_id}", "invalid_request_error", "id", "file_not_found"
        )


def _stored(request: web.Request) -> StoredFile:
    file_id = request.match_info["file_id"]
    stored = request.app[FILES].get(file_id)
    if stored is None:
        raise FileNotFound(file_id)
    return stored


async def _read_form(request: web.Request) -> tuple[str | None, str, bytes | None]:
    """(purpose, filename, content) of an upload's multipart form."""
    reader = await request.multipart()
    purpose: str | None = None
    filename = "upload.jsonl"
    content: bytes | None = None
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "purpose":
            purpose = (await part.text()).strip()
        elif part.name == "file":
            filename = part.filename or filename
            content = bytes(await part.read())
            if len(content) > MAX_FILE_BYTES:
                raise InvalidRequest("File is too large.", "file", "file_too_large")
    return purpose, filename, content


async def upload(request: web.Request) -> web.Response:
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequest("Expected a multipart/form-data body with `file` and `purpose`.")
    try:
        purpose, filename, content = await _read_form(request)
    except (ValueError, LookupError, AssertionError) as exc:  # what aiohttp's reader raises
        raise InvalidRequest(f"The multipart body could not be read: {exc}") from None
    if content is None:
        raise InvalidRequest(
            "Missing required parameter: 'file'.", "file", "missing_required_parameter"
        )
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"Invalid 'purpose': expected one of {', '.join(PURPOSES)}.", "purpose", "invalid_value"
        )
    record(request, {"purpose": purpose, "filename": filename, "bytes": len(content)})
    stored = request.app[FILES].add(filename, purpose, content)
    return json_response(stored.describe())


async def list_files(request: web.Request) -> web.Response:
    record(request)
    purpose = request.query.get("purpose")
    files = [f.describe() for f in request.app[FILES].all() if purpose in (None, f.purpose)]
    return json_response({"object": "list", "data": files, "has_more": False})


async def get_file(request: web.Request) -> web.Response:
    record(request)
    return json_response(_stored(request).describe())


async def file_content(request: web.Request) -> web.Response:
    record(request)
    stored = _stored(request)
    return web.Response(body=stored.content, content_type="application/octet-stream")


async def delete_file(request: web.Request) -> web.Response:
    record(request)
    stored = _stored(request)
    request.app[FILES].remove(stored.id)
    return json_response({"id": stored.id, "object": "file", "deleted": True})


def add_file_routes(app: web.Application) -> None:
    app[FILES] = FileStore()
    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files", list_files, allow_head=False)
    app.router.add_get("/v1/files/{file_id}", get_file, allow_head=False)
    app.router.add_get("/v1/files/{file_id}/content", file_content, allow_head=False)
    app.router.add_delete("/v1/files/{file_id}", delete_file)
