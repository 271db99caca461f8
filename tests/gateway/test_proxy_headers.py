"""What crosses the gateway: bodies untouched but for `model`, keys never."""

from __future__ import annotations

import contextlib

import httpx
import openai

from tests.conftest import GATEWAY_KEY, PROVIDER_KEY, last_upstream_request
from tests.processes import Running


def test_unknown_fields_reach_the_upstream_and_only_model_changes(
    client: openai.OpenAI, simulator: Running
) -> None:
    extra = {"gateway_test_field": {"nested": [1, 2.5, None, "x"]}, "metadata": {"team": "a"}}
    client.chat.completions.create(
        model="support-bot",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.3,
        extra_body=extra,
    )
    body = last_upstream_request(simulator)["body"]
    assert body["gateway_test_field"] == extra["gateway_test_field"]
    assert body["metadata"] == {"team": "a"}
    assert body["temperature"] == 0.3
    assert body["model"] == "ft:gpt-4o-mini:acme::s1"


def test_authorization_is_replaced_by_the_providers_key(
    client: openai.OpenAI, simulator: Running
) -> None:
    client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-gateway-user": "u-1", "x-custom-header": "kept"},
    )
    headers = last_upstream_request(simulator)["headers"]
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert GATEWAY_KEY not in str(headers)
    assert "x-gateway-user" not in headers
    assert headers["x-custom-header"] == "kept"


def test_no_key_appears_in_the_log(
    client: openai.OpenAI, gateway: Running, simulator: Running
) -> None:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": []},
        headers={"authorization": "Bearer sk-guess-123"},
    )
    with_fault = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    with contextlib.suppress(openai.APIStatusError):
        with_fault.chat.completions.create(
            model="unreachable-model", messages=[{"role": "user", "content": "hi"}]
        )
    log = gateway.log.read_text()
    assert log, "the gateway wrote no log at all"
    for secret in (GATEWAY_KEY, PROVIDER_KEY, "sk-guess-123"):
        assert secret not in log
