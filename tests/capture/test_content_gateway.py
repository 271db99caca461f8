"""The content store through a real gateway and simulator: calls with the same system prompt
share its row, and the dashboard's call view shows each call as it was sent and answered."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson

from tests.conftest import GATEWAY_KEY, PROVIDER_KEY_ENV, gateway_config
from tests.processes import Running, start_gateway

ADMIN_KEY = "dash-admin-content-7f3b"
SYSTEM = "You are the support assistant of a large company; answer briefly and politely. " * 20


def _call_view(gateway: Running, call_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    while True:
        response = httpx.get(
            f"{gateway.url}/dashboard/api/calls/{call_id}", headers=headers, timeout=10
        )
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def test_the_gateway_stores_the_prompt_once_and_the_call_view_is_unchanged(
    workdir: Path, simulator: Running, tmp_path: Path
) -> None:
    database = tmp_path / "capture.db"
    config = gateway_config(
        simulator.url,
        capture={
            "database_url": f"sqlite+aiosqlite:///{database}",
            "content_store": True,
            "flush_interval_ms": 10,
        },
        admin={"keys": [{"name": "ops", "key": ADMIN_KEY}]},
    )
    gateway = start_gateway(
        workdir, config, env={"TEST_GATEWAY_KEY": GATEWAY_KEY, **PROVIDER_KEY_ENV}
    )
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
        sent: list[tuple[str, list[dict[str, str]], str]] = []
        for question in ("Where is my parcel?", "How do I return a jacket?"):
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question},
            ]
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o",
                messages=messages,  # type: ignore[arg-type]
            )
            answer = raw.parse().choices[0].message.content or ""
            sent.append((raw.headers["x-request-id"], messages, answer))
        for call_id, messages, answer in sent:
            view = _call_view(gateway, call_id)
            assert view["request"]["messages"] == messages
            assert view["response"]["choices"][0]["message"]["content"] == answer
            assert "content_refs" not in view
    finally:
        gateway.stop()
    connection = sqlite3.connect(database)
    try:
        stored = [row[0] for row in connection.execute("SELECT request FROM calls")]
        parts = connection.execute("SELECT count(*) FROM content").fetchone()[0]
    finally:
        connection.close()
    assert len(stored) == 2 and all('"$ref"' in request for request in stored)
    assert SYSTEM not in "".join(stored)
    # the system prompt once, and each answer long enough to be a part
    long_answers = {answer for _, _, answer in sent if len(orjson.dumps(answer)) >= 256}
    assert parts == 1 + len(long_answers)
