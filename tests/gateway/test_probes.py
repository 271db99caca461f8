"""/healthz, /readyz and /metrics answered before the FastAPI app exists, as that app answered.

A running gateway answers GET of these three itself (gateway/probes.py) and builds its FastAPI
app (admin, dashboard, feedback) on the first request for anything else. These tests hold on
the gateway before that change too: the answers are the ones it always gave.
"""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import Running


def test_probes_answer_as_the_api_did(gateway: Running) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        health = http.get("/healthz")
        ready = http.get("/readyz")
        scrape = http.get("/metrics")
    assert (health.status_code, health.content) == (200, b'{"status":"ok"}')
    assert (ready.status_code, ready.content) == (200, b'{"status":"ready"}')
    for answer in (health, ready):
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["content-length"] == str(len(answer.content))
    assert scrape.status_code == 200
    assert scrape.headers["content-type"] == CONTENT_TYPE_LATEST
    families = {family.name for family in text_string_to_metric_families(scrape.text)}
    assert "gateway_capture_queue_depth" in families


def test_other_methods_and_paths_reach_the_api_built_on_first_use(gateway: Running) -> None:
    async def first_requests() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            asks = [http.head("/healthz") for _ in range(4)]
            asks += [http.get("/no-such-page") for _ in range(4)]
            return await asyncio.gather(*asks)

    answers = asyncio.run(first_requests())
    assert [a.status_code for a in answers] == [405] * 4 + [404] * 4
    missing = answers[-1].json()["error"]
    assert (missing["type"], missing["code"]) == ("invalid_request_error", "not_found")
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        assert http.get("/healthz").content == b'{"status":"ok"}'
