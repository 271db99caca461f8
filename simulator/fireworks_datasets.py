"""The simulated Fireworks datasets over HTTP: create, list, get and delete, and a file's two
ways in: one multipart ``:upload`` (up to 150 MB), or ``:getUploadEndpoint``'s signed URLs (a PUT
of each file's declared size) and then ``:validateUpload``. Either way the file is checked as
JSON lines and the dataset becomes READY."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import BodyPartReader, web

from simulator.files import record
from simulator.fireworks_request import (
    FIREWORKS,
    account_of,
    authenticate,
    origin_of,
    page_of,
    read_body,
    refuse_unknown,
    resource_id,
    split_rest,
    string_field,
)
from simulator.fireworks_state import (
    DATASET_FIELDS,
    MAX_DATASET_BYTES,
    MAX_UPLOAD_BYTES,
    SIM_PREFIX,
    Dataset,
    FireworksError,
    Store,
    invalid,
)
from simulator.wire import json_response, loads_or_none, new_id


def _dataset(store: Store, account: str, dataset_id: str) -> Dataset:
    dataset = store.datasets.get(f"accounts/{account}/datasets/{dataset_id}")
    if dataset is None:
        raise FireworksError(
            "NOT_FOUND", f'dataset "accounts/{account}/datasets/{dataset_id}" not found'
        )
    return dataset


async def datasets_root(request: web.Request) -> web.Response:
    authenticate(request)
    account = account_of(request)
    store = request.app[FIREWORKS]
    if request.method == "GET":
        record(request)
        mine = [d for d in store.datasets.values() if d.account == account]
        mine.sort(key=lambda d: d.created_at, reverse=True)
        return json_response(page_of([d.describe() for d in mine], request, "datasets"))
    body = await read_body(request)
    refuse_unknown(body, frozenset({"datasetId", "dataset", "sourceDatasetId"}))
    given_id = body.get("datasetId")
    if not isinstance(given_id, str) or not given_id:
        raise invalid("datasetId is required")
    dataset_id = resource_id(given_id, "dataset ID")
    spec = body.get("dataset")
    if not isinstance(spec, dict):
        raise invalid("dataset is required")
    refuse_unknown(spec, DATASET_FIELDS, "dataset.")
    if spec.get("externalUrl"):  # gs:// and s3:// buckets are out of the simulator's reach
        raise invalid("dataset.externalUrl: the simulator takes uploaded datasets only")
    name = f"accounts/{account}/datasets/{dataset_id}"
    if name in store.datasets:
        raise FireworksError("ALREADY_EXISTS", f'dataset "{name}" already exists')
    count = spec.get("exampleCount")
    if count is not None and not (isinstance(count, int | str) and str(count).isdigit()):
        raise invalid("invalid dataset.exampleCount: expected a whole number")
    form = spec.get("format") or "CHAT"
    if form not in ("FORMAT_UNSPECIFIED", "CHAT", "COMPLETION", "RL"):
        raise invalid(f"invalid dataset.format {form!r}")
    display = string_field(spec, "displayName") or dataset_id
    dataset = Dataset(
        account, dataset_id, time.time(), display, None if count is None else str(count), form
    )
    store.datasets[name] = dataset
    return json_response(dataset.describe())


def _check_jsonl(content: bytes, filename: str) -> None:
    for number, line in enumerate(content.splitlines(), 1):
        if line.strip() and not isinstance(loads_or_none(line), dict):
            raise invalid(f"{filename}: line {number} is not a JSON object")
    if not content.strip():
        raise invalid(f"{filename} is empty")


async def _upload(request: web.Request, dataset: Dataset) -> web.Response:
    if not request.content_type.startswith("multipart/"):
        raise invalid("expected a multipart/form-data body with the field 'file'")
    filename, content = "dataset.jsonl", None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "file":
                filename = part.filename or filename
                content = bytes(await part.read())
                if len(content) > MAX_UPLOAD_BYTES:
                    raise invalid(f"{filename} is over 150 MB: upload it through getUploadEndpoint")
    except (ValueError, LookupError, AssertionError) as exc:
        raise invalid(f"the multipart body could not be read: {exc}") from None
    record(request, {"filename": filename, "bytes": None if content is None else len(content)})
    if content is None:
        raise invalid("the field 'file' is required")
    if dataset.state == "READY":
        raise FireworksError("FAILED_PRECONDITION", f'dataset "{dataset.name}" is already READY')
    _check_jsonl(content, filename)
    dataset.content, dataset.state, dataset.updated_at = content, "READY", time.time()
    answer = {
        "id": dataset.name,
        "object": "file",
        "bytes": len(content),
        "created_at": int(dataset.created_at),
        "filename": filename,
        "purpose": "fine-tune",
    }
    return json_response(answer)


def _size(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


async def _upload_endpoint(request: web.Request, store: Store, dataset: Dataset) -> web.Response:
    body = await read_body(request)
    refuse_unknown(body, frozenset({"filenameToSize", "readMask"}))
    sizes = body.get("filenameToSize")
    if not isinstance(sizes, dict) or not sizes:
        raise invalid("filenameToSize is required")
    if dataset.state == "READY":
        raise FireworksError("FAILED_PRECONDITION", f'dataset "{dataset.name}" is already READY')
    expected: dict[str, int] = {}
    for filename, given in sizes.items():
        size = _size(given)
        if size is None or size <= 0 or size > MAX_DATASET_BYTES:
            raise invalid(f"invalid size for {filename!r}: from 1 byte to 1 GiB")
        if "/" in filename or not filename.endswith(".jsonl"):
            raise invalid(f"invalid file name {filename!r}: a .jsonl file name, no folders")
        expected[filename] = size
    dataset.expected, dataset.received = expected, {}
    urls = {}
    for filename in expected:
        token = new_id("")
        store.uploads[token] = (dataset.name, filename)
        urls[filename] = f"{origin_of(request)}{SIM_PREFIX}/uploads/{token}"
    return json_response({"filenameToSignedUrls": urls})


async def _validate_upload(request: web.Request, dataset: Dataset) -> web.Response:
    await read_body(request)
    if dataset.state == "READY":
        return json_response({})
    if not dataset.expected:
        raise FireworksError(
            "FAILED_PRECONDITION", f'dataset "{dataset.name}" has no file: upload one first'
        )
    missing = [name for name in dataset.expected if name not in dataset.received]
    if missing:
        raise FireworksError(
            "FAILED_PRECONDITION", f"{missing[0]} has not been uploaded to its signed URL"
        )
    content = b"".join(
        dataset.received[name].rstrip(b"\n") + b"\n" for name in sorted(dataset.received)
    )
    for name in sorted(dataset.received):
        _check_jsonl(dataset.received[name], name)
    dataset.content, dataset.state, dataset.updated_at = content, "READY", time.time()
    return json_response({})


async def dataset_item(request: web.Request) -> web.Response:
    authenticate(request)
    account = account_of(request)
    store = request.app[FIREWORKS]
    dataset_id, verb = split_rest(request)
    dataset = _dataset(store, account, dataset_id)
    if verb is None and request.method == "GET":
        record(request)
        return json_response(dataset.describe())
    if verb is None and request.method == "DELETE":
        record(request)
        del store.datasets[dataset.name]
        return json_response({})
    if verb == "upload" and request.method == "POST":
        return await _upload(request, dataset)
    if verb == "getUploadEndpoint" and request.method == "POST":
        return await _upload_endpoint(request, store, dataset)
    if verb == "validateUpload" and request.method == "POST":
        return await _validate_upload(request, dataset)
    raise FireworksError("NOT_FOUND", f"no method {request.method} {request.path}")


async def signed_upload(request: web.Request) -> web.Response:
    """The signed URL: a PUT of the file's bytes, without Fireworks' key (as a storage bucket's
    URL is used). A size other than the one declared is refused, as the URL's signed
    content-length range refuses it."""
    store = request.app[FIREWORKS]
    target = store.uploads.get(request.match_info["token"])
    if target is None or request.method != "PUT":
        return web.Response(status=403, text="SignatureDoesNotMatch: the signed URL is invalid")
    content = await request.read()
    record(request, {"bytes": len(content)})
    dataset = store.datasets.get(target[0])
    if dataset is None:
        return web.Response(status=404, text="NoSuchKey")
    expected = dataset.expected.get(target[1])
    if expected != len(content):
        return web.Response(
            status=400,
            text=f"EntityTooLarge: {len(content)} bytes, the URL was signed for {expected}",
        )
    dataset.received[target[1]] = content
    return web.Response(status=200)
