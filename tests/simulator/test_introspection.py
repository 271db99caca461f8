"""/_sim/requests: what reached the simulator, for tests of the gateway in front of it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from openai import OpenAI

from simulator.recorder import RequestLog

if TYPE_CHECKING:
    from tests.simulator.conftest import RunningSimulator


def test_requests_are_recorded_with_headers_and_unknown_fields(
    simulator: RunningSimulator, client: OpenAI
) -> None:
    assert httpx.delete(simulator.base_url + "/_sim/requests").status_code == 200
    assert simulator.recorded() == []

    client.chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Gateway-Trace": "abc"},
        extra_body={"vendor_extension": {"keep": [1, 2]}},
        extra_query={"api-version": "2024-06-01"},
    )
    httpx.post(simulator.v1 + "/uploads", content=b"\x00binary", headers=simulator.fast)

    chat, upload = simulator.recorded()
    assert chat["method"] == "POST" and chat["path"] == "/v1/chat/completions"
    assert chat["query"] == "api-version=2024-06-01"
    headers = chat["headers"]
    assert isinstance(headers, dict)
    assert headers["x-gateway-trace"] == "abc"
    assert headers["authorization"] == "Bearer x"
    body = chat["body"]
    assert isinstance(body, dict)
    assert body["vendor_extension"] == {"keep": [1, 2]}
    assert body["model"] == "gpt-4"
    assert upload["path"] == "/v1/uploads" and upload["body"] is None

    httpx.delete(simulator.base_url + "/_sim/requests")
    assert simulator.recorded() == []


def test_the_log_is_a_bounded_ring() -> None:
    log = RequestLog(maxlen=3)
    for number in range(5):
        log.add("GET", f"/v1/{number}", "", {}, None)
    assert [entry["path"] for entry in log.entries()] == ["/v1/2", "/v1/3", "/v1/4"]
    log.clear()
    assert log.entries() == []
