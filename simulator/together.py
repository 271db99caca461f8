"""Together AI's files and fine-tuning API, as its official Python SDK (``together``) sends
and reads it, served under ``/together`` so it lives beside OpenAI's ``/v1/files``: give the
SDK ``base_url="http://SIM/together"`` (it adds ``/v1`` itself).

Files (the SDK's upload flow):
POST /v1/files                      form (purpose, file_name, file_type, checksum): 302 to a
                                    presigned PUT URL, with ``X-Together-File-Id``; 409 with
                                    ``file_id`` when the same file is already there
PUT  /_storage/{id}?signature=...   the bytes (no key: the URL is the credential)
POST /v1/files/{id}/preprocess      the server's checks (``processing_status``,
                                    ``validation_report``); the file object
POST /v1/files/multipart/initiate|complete|abort   the SDK's flow for files over 5 GB:
                                    part URLs, ETags (MD5 of each part), the file object
POST /v1/files/upload               the documented one-request form upload (``file``)
GET  /v1/files, /v1/files/{id}, /v1/files/{id}/content; DELETE /v1/files/{id}

Fine-tuning:
GET  /v1/fine-tunes/models/supported           {"models": [...]}
GET  /v1/fine-tunes/models/limits?model_name=  the model's limits; 404 for a model not offered
POST /v1/fine-tunes/estimate-price             price and token estimate
POST /v1/fine-tunes                            create: LoRA (the default) or full, SFT or DPO
GET  /v1/fine-tunes, /v1/fine-tunes/{id}       list (``data``), retrieve (with its events)
POST /v1/fine-tunes/{id}/cancel                cancel_requested, then cancelled
GET  /v1/fine-tunes/{id}/events|checkpoints|metrics

Serving: POST /v1/chat/completions and /v1/completions answer Together's serverless models, the
base models offered for fine-tuning and the account's completed fine-tunes (by ``output_name``,
``sim-user/BASE-SUFFIX-xxxxxx``); any other model is a 404 ``model_not_available``. GET /v1/models
lists them in Together's shape (a JSON array).

A job goes pending -> queued -> running -> uploading -> completed over ``x-sim-ft-seconds``
(a header on the create call, or a default header of the client; 3 s by default, 0 for at
once); ``x-sim-ft-fail-at`` (0..1) makes it end in ``error`` that far into its run. Jobs
advance lazily, when looked at. Every call but the storage PUT needs ``Authorization: Bearer``;
errors have Together's shape, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from typing import Any

from aiohttp import BodyPartReader, web

from simulator.chat import chat_completions
from simulator.completions import completions
from simulator.files import record
from simulator.together_data import DataProblem, inspect_dataset, invalid_report
from simulator.together_jobs import (
    cancel_job,
    create_job,
    estimate_price,
    get_job,
    job_checkpoints,
    job_events,
    job_metrics,
    list_jobs,
    model_limits,
    served_models,
    supported_models,
)
from simulator.together_models import base_model
from simulator.together_store import (
    ACCOUNT_KEY,
    PREFIX,
    Account,
    StoredFile,
    TogetherError,
    account_of,
    bad,
)
from simulator.wire import InvalidRequest, json_object, json_response

MAX_FORM_BYTES = 64 * 1024 * 1024
"""The largest upload in one request (the simulator's own body limit)."""
FILE_PURPOSES = ("fine-tune", "eval", "batch-api", "calibration")
FILE_TYPES = ("jsonl", "parquet", "csv")


def _validate(stored: StoredFile) -> None:
    """The server's checks after an upload (Together runs them once the bytes are in)."""
    content = stored.content or b""
    if stored.file_type != "jsonl" or stored.purpose != "fine-tune":
        stored.status, stored.report = "COMPLETED", None
        return
    try:
        stored.dataset = inspect_dataset(content)
    except DataProblem as problem:
        stored.status, stored.report = "INVALID_FORMAT", invalid_report(stored.id, str(problem))
        return
    stored.status, stored.report = "COMPLETED", stored.dataset.report(stored.id)


async def _form(request: web.Request) -> tuple[dict[str, str], bytes | None, str]:
    """A multipart form's text fields, its ``file`` part (bytes) and that part's file name."""
    if not request.content_type.startswith("multipart/"):
        raise bad("Expected a multipart/form-data body.")
    fields: dict[str, str] = {}
    content: bytes | None = None
    filename = ""
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.name == "file":
                filename = part.filename or ""
                content = bytes(await part.read())
                if len(content) > MAX_FORM_BYTES:
                    raise TogetherError(413, "File is too large.", "file", "file_too_large")
            else:
                fields[part.name] = (await part.text()).strip()
    except (ValueError, LookupError, AssertionError) as exc:  # what aiohttp's reader raises
        raise bad(f"The multipart body could not be read: {exc}") from None
    return fields, content, filename


def _file_fields(fields: dict[str, Any]) -> tuple[str, str, str]:
    """(purpose, file_name, file_type) of an upload request, checked."""
    purpose = fields.get("purpose")
    if purpose not in FILE_PURPOSES:
        raise bad(f"Invalid purpose: expected one of {', '.join(FILE_PURPOSES)}.", "purpose")
    name = fields.get("file_name")
    if not isinstance(name, str) or not name or len(name) > 255:
        raise bad("Missing required parameter: file_name.", "file_name")
    file_type = fields.get("file_type") or name.rsplit(".", 1)[-1]
    if file_type not in FILE_TYPES:
        raise bad(f"Invalid file_type: expected one of {', '.join(FILE_TYPES)}.", "file_type")
    return str(purpose), name, str(file_type)


def _existing(account: Account, name: str, purpose: str, checksum: str) -> StoredFile | None:
    for stored in account.files.values():
        if (stored.checksum, stored.filename, stored.purpose) == (checksum, name, purpose) and (
            stored.content is not None
        ):
            return stored
    return None


def _conflict(stored: StoredFile) -> web.Response:
    """409, as the SDK expects it for a file already uploaded (it then retrieves that file)."""
    body = {
        "file_id": stored.id,
        "error": {
            "message": f"File already exists: {stored.id}",
            "type": "invalid_request_error",
            "param": "file",
            "code": "file_already_exists",
        },
    }
    return json_response(body, status=409, headers={"x-should-retry": "false"})


def _storage_url(request: web.Request, account: Account, stored: StoredFile, part: int = 0) -> str:
    path = f"{PREFIX}/_storage/{stored.id}"
    query = {"signature": account.sign(stored.id, part)}
    if part:
        path += f"/parts/{part}"
    return str(request.url.with_path(path).with_query(query))


async def begin_upload(request: web.Request) -> web.Response:
    """POST /v1/files: where to PUT the bytes (the SDK's presigned flow)."""
    account = account_of(request)
    fields, content, _ = await _form(request)
    record(request, fields)
    if content is not None:
        raise bad("Send the file to /v1/files/upload, or its bytes to the presigned URL.")
    purpose, name, file_type = _file_fields(fields)
    checksum = fields.get("checksum", "")
    existing = _existing(account, name, purpose, checksum) if checksum else None
    if existing is not None:
        return _conflict(existing)
    stored = StoredFile(
        f"file-{uuid.uuid4()}", name, purpose, file_type, checksum, int(time.time())
    )
    account.files[stored.id] = stored
    location = _storage_url(request, account, stored)
    headers = {"Location": location, "X-Together-File-Id": stored.id}
    return json_response({"id": stored.id, "upload_url": location}, status=302, headers=headers)


def _signed(request: web.Request, part: int = 0) -> tuple[Account, StoredFile]:
    account = request.app[ACCOUNT_KEY]
    file_id = request.match_info["file_id"]
    stored = account.files.get(file_id)
    given = request.query.get("signature", "")
    if stored is None or not hmac.compare_digest(given, account.sign(file_id, part)):
        raise TogetherError(403, "The request signature does not match.", None, "access_denied")
    return account, stored


async def put_storage(request: web.Request) -> web.Response:
    """PUT /_storage/{id}: the bytes of a single-request upload."""
    _, stored = _signed(request)
    content = await request.read()
    record(request, {"bytes": len(content)})
    if stored.upload_id is not None:
        raise bad("This file is uploaded in parts.")
    stored.content = content
    stored.status = "PENDING"
    return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(content).hexdigest()}"'})


async def preprocess(request: web.Request) -> web.Response:
    """POST /v1/files/{id}/preprocess: the upload is in; check it and answer the file."""
    account = account_of(request)
    record(request)
    stored = account.files.get(request.match_info["file_id"])
    if stored is None:
        raise TogetherError(404, "File not found", "id", "not_found")
    if stored.content is None:
        raise bad(f"File {stored.id} has no content yet: PUT it to its upload URL first.")
    actual = hashlib.sha256(stored.content).hexdigest()
    if stored.checksum and actual != stored.checksum:
        raise bad(f"Checksum mismatch for {stored.id}: the bytes received are not the file's.")
    stored.checksum = actual
    _validate(stored)
    return json_response(stored.describe())


async def direct_upload(request: web.Request) -> web.Response:
    """POST /v1/files/upload: the whole file in one multipart request."""
    account = account_of(request)
    fields, content, filename = await _form(request)
    if content is None:
        raise bad("Missing required parameter: file.", "file")
    fields.setdefault("file_name", filename)
    record(request, {**fields, "bytes": len(content)})
    purpose, name, file_type = _file_fields(fields)
    checksum = hashlib.sha256(content).hexdigest()
    existing = _existing(account, name, purpose, checksum)
    if existing is not None:
        return json_response(existing.describe())
    stored = StoredFile(
        f"file-{uuid.uuid4()}", name, purpose, file_type, checksum, int(time.time()), content
    )
    account.files[stored.id] = stored
    _validate(stored)
    return json_response(stored.describe())


async def multipart_initiate(request: web.Request) -> web.Response:
    account = account_of(request)
    body = json_object(await request.read())
    record(request, body)
    purpose, name, file_type = _file_fields(body)
    num_parts = body.get("num_parts")
    size = body.get("file_size")
    if not isinstance(num_parts, int) or isinstance(num_parts, bool) or not 1 <= num_parts <= 250:
        raise bad("num_parts must be an integer from 1 to 250.", "num_parts")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise bad("file_size must be a non-negative integer.", "file_size")
    checksum = str(body.get("checksum") or "")
    existing = _existing(account, name, purpose, checksum) if checksum else None
    if existing is not None:
        return _conflict(existing)
    stored = StoredFile(
        f"file-{uuid.uuid4()}", name, purpose, file_type, checksum, int(time.time())
    )
    stored.upload_id = uuid.uuid4().hex
    stored.num_parts = num_parts
    account.files[stored.id] = stored
    parts = [
        {"PartNumber": n, "URL": _storage_url(request, account, stored, n), "Headers": {}}
        for n in range(1, num_parts + 1)
    ]
    return json_response({"upload_id": stored.upload_id, "file_id": stored.id, "parts": parts})


async def put_part(request: web.Request) -> web.Response:
    try:
        part = int(request.match_info["part"])
    except ValueError:
        raise TogetherError(404, "No such part.", None, "not_found") from None
    _, stored = _signed(request, part)
    content = await request.read()
    record(request, {"bytes": len(content)})
    if stored.upload_id is None or not 1 <= part <= stored.num_parts:
        raise bad("No such upload part.")
    stored.parts[part] = content
    return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(content).hexdigest()}"'})


def _upload(account: Account, body: dict[str, Any]) -> StoredFile:
    file_id = body.get("file_id")
    stored = account.files.get(file_id) if isinstance(file_id, str) else None
    if stored is None or stored.upload_id is None or body.get("upload_id") != stored.upload_id:
        raise TogetherError(404, "No such multipart upload.", "upload_id", "not_found")
    return stored


def _part_number(part: Any) -> int:
    number = part.get("part_number") if isinstance(part, dict) else None
    return number if isinstance(number, int) and not isinstance(number, bool) else 0


async def multipart_complete(request: web.Request) -> web.Response:
    account = account_of(request)
    body = json_object(await request.read())
    record(request, body)
    stored = _upload(account, body)
    given = body.get("parts")
    if not isinstance(given, list) or len(given) != stored.num_parts:
        raise bad(f"parts must list all {stored.num_parts} parts.", "parts")
    chunks: list[bytes] = []
    for number, item in enumerate(sorted(given, key=lambda p: _part_number(p)), 1):
        content = stored.parts.get(number)
        etag = item.get("etag") if isinstance(item, dict) else None
        if content is None or etag != hashlib.md5(content).hexdigest():
            raise bad(f"Part {number} is missing or its ETag does not match.", "parts")
        chunks.append(content)
    stored.content = b"".join(chunks)
    stored.parts.clear()
    stored.upload_id = None
    if stored.checksum and hashlib.sha256(stored.content).hexdigest() != stored.checksum:
        raise bad(f"Checksum mismatch for {stored.id}.")
    _validate(stored)
    return json_response({"file": stored.describe()})


async def multipart_abort(request: web.Request) -> web.Response:
    account = account_of(request)
    body = json_object(await request.read())
    record(request, body)
    stored = _upload(account, body)
    account.files.pop(stored.id, None)
    return json_response({"file_id": stored.id, "aborted": True})


async def list_files(request: web.Request) -> web.Response:
    account = account_of(request)
    record(request)
    ready = [f for f in account.files.values() if f.content is not None]
    return json_response({"data": [f.describe() for f in ready]})


async def get_file(request: web.Request) -> web.Response:
    account = account_of(request)
    record(request)
    return json_response(account.file(request.match_info["file_id"]).describe())


async def file_content(request: web.Request) -> web.Response:
    account = account_of(request)
    record(request)
    stored = account.file(request.match_info["file_id"])
    return web.Response(body=stored.content, content_type="application/octet-stream")


async def delete_file(request: web.Request) -> web.Response:
    account = account_of(request)
    record(request)
    stored = account.file(request.match_info["file_id"])
    del account.files[stored.id]
    return json_response({"id": stored.id, "deleted": True})


async def _gated(request: web.Request) -> None:
    account = account_of(request)
    try:
        body = json_object(await request.read())
    except InvalidRequest:
        return  # the endpoint answers that itself, in its own words
    model = body.get("model")
    if isinstance(model, str) and model not in served_models(account):
        raise TogetherError(
            404,
            f"Unable to access model {model[:200]}. Please visit https://api.together.ai/models "
            "to view the list of supported models.",
            "model",
            "model_not_available",
        )


async def together_chat(request: web.Request) -> web.StreamResponse:
    await _gated(request)
    return await chat_completions(request)


async def together_completions(request: web.Request) -> web.StreamResponse:
    await _gated(request)
    return await completions(request)


async def together_models(request: web.Request) -> web.Response:
    account = account_of(request)
    record(request)
    now = int(time.time())
    models = [
        {
            "id": name,
            "object": "model",
            "created": now,
            "type": "chat",
            "display_name": name.split("/")[-1],
            "organization": name.split("/")[0],
            "context_length": base.context if (base := base_model(name)) else 131072,
        }
        for name in served_models(account)
    ]
    return json_response(models)


def add_together_routes(app: web.Application) -> None:
    app[ACCOUNT_KEY] = Account()
    add = app.router.add_route
    v1 = f"{PREFIX}/v1"
    add("POST", f"{v1}/files", begin_upload)
    add("POST", f"{v1}/files/upload", direct_upload)
    add("POST", f"{v1}/files/multipart/initiate", multipart_initiate)
    add("POST", f"{v1}/files/multipart/complete", multipart_complete)
    add("POST", f"{v1}/files/multipart/abort", multipart_abort)
    add("POST", f"{v1}/files/{{file_id}}/preprocess", preprocess)
    add("GET", f"{v1}/files", list_files)
    add("GET", f"{v1}/files/{{file_id}}", get_file)
    add("GET", f"{v1}/files/{{file_id}}/content", file_content)
    add("DELETE", f"{v1}/files/{{file_id}}", delete_file)
    add("PUT", f"{PREFIX}/_storage/{{file_id}}", put_storage)
    add("PUT", f"{PREFIX}/_storage/{{file_id}}/parts/{{part}}", put_part)
    add("GET", f"{v1}/fine-tunes/models/supported", supported_models)
    add("GET", f"{v1}/fine-tunes/models/limits", model_limits)
    add("POST", f"{v1}/fine-tunes/estimate-price", estimate_price)
    add("POST", f"{v1}/fine-tunes", create_job)
    add("GET", f"{v1}/fine-tunes", list_jobs)
    add("GET", f"{v1}/fine-tunes/{{job_id}}", get_job)
    add("POST", f"{v1}/fine-tunes/{{job_id}}/cancel", cancel_job)
    add("GET", f"{v1}/fine-tunes/{{job_id}}/events", job_events)
    add("GET", f"{v1}/fine-tunes/{{job_id}}/checkpoints", job_checkpoints)
    add("GET", f"{v1}/fine-tunes/{{job_id}}/metrics", job_metrics)
    add("POST", f"{v1}/chat/completions", together_chat)
    add("POST", f"{v1}/completions", together_completions)
    add("GET", f"{v1}/models", together_models)
