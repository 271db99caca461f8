"""Through a real gateway with capture on: a client's key sent as its user (body ``user`` or
``x-gateway-user``) is redacted in the stored ``user_key`` as it is in the stored request, and
so is every other stored string (tags' keys included)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from tests.capture_support import (
    BACKENDS,
    ENV,
    GATEWAY_KEY,
    Backend,
    BackendKind,
    Rows,
    capture_config,
    open_backend,
    rows_of,
)
from tests.processes import Running, start_gateway

CLIENT_KEY = "sk-proj-Qw81Zx27Er45Ty63Ui09OpLk"


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    kind: BackendKind = request.param
    with open_backend(kind, tmp_path_factory.mktemp(f"capture-user-{kind}"), __name__) as b:
        yield b


@pytest.fixture(scope="module")
def database_url(backend: Backend) -> str:
    return backend.new_url()


@pytest.fixture(scope="module")
def gw(backend: Backend, database_url: str, simulator: Running) -> Iterator[Running]:
    running = start_gateway(backend.workdir, capture_config(simulator.url, database_url), env=ENV)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rows(database_url: str, gw: Running) -> Iterator[Rows]:
    with rows_of(database_url) as reader:
        yield reader


@pytest.fixture
def sdk(gw: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_key_sent_as_the_body_user_is_stored_redacted(
    sdk: openai.OpenAI, rows: Rows, stream: bool
) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="assistant",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=4,
        stream=stream,
        user=CLIENT_KEY,
        metadata={f"token: {CLIENT_KEY}": "x"},
    )
    if stream:
        list(raw.parse())
    else:
        raw.parse()

    row = rows.wait_for_call(raw.headers["x-request-id"])

    assert row["request"]["user"] == "[SECRET]"
    assert row["user_key"] == "[SECRET]"
    assert row["tags"] == {"token: [SECRET]": "x"}
    assert CLIENT_KEY not in json.dumps(row, default=str)


def test_a_key_sent_as_the_user_header_is_stored_redacted(sdk: openai.OpenAI, rows: Rows) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="assistant",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=4,
        extra_headers={"x-gateway-user": f"Bearer {CLIENT_KEY}"},
    )
    raw.parse()

    row = rows.wait_for_call(raw.headers["x-request-id"])

    assert row["user_key"] == "Bearer [SECRET]"
    assert CLIENT_KEY not in json.dumps(row, default=str)


def test_a_route_with_redaction_off_stores_the_user_as_sent(sdk: openai.OpenAI, rows: Rows) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="plain-text",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=4,
        user=CLIENT_KEY,
    )
    raw.parse()

    row = rows.wait_for_call(raw.headers["x-request-id"])

    assert row["request"]["user"] == CLIENT_KEY and row["user_key"] == CLIENT_KEY
