"""The other OpenAI endpoints: embeddings, completions, responses, models, passthrough."""

from __future__ import annotations

import math

import httpx
import openai
import pytest

from tests.conftest import last_upstream_request
from tests.processes import Running


def test_embeddings_match_the_upstream(client: openai.OpenAI, direct: openai.OpenAI) -> None:
    ours = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
    theirs = direct.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
    assert len(ours.data) == 2
    assert ours.data[0].embedding == theirs.data[0].embedding
    assert math.isclose(sum(x * x for x in ours.data[0].embedding), 1.0, rel_tol=1e-3)
    floats = client.embeddings.create(
        model="text-embedding-3-small", input="hello", encoding_format="float", dimensions=8
    )
    assert len(floats.data[0].embedding) == 8


def test_completions_stream_and_not(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="gpt-4o", prompt="Say hi", seed=1, max_tokens=10)
    parts = list(
        client.completions.create(
            model="gpt-4o", prompt="Say hi", seed=1, max_tokens=10, stream=True
        )
    )
    assert "".join(p.choices[0].text for p in parts if p.choices) == whole.choices[0].text
    assert all(p.usage is None for p in parts)


def test_responses_api(client: openai.OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="Write one sentence.")
    assert response.output_text
    assert response.model == "gpt-4o"


def test_models_are_the_configured_routes(client: openai.OpenAI) -> None:
    names = {model.id for model in client.models.list()}
    assert names == {
        "gpt-4o",
        "support-bot",
        "text-embedding-3-small",
        "slow-model",
        "unreachable-model",
    }
    assert client.models.retrieve("support-bot").id == "support-bot"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("not-a-route")


def test_other_v1_paths_pass_through_to_the_default_provider(
    http: httpx.Client, simulator: Running
) -> None:
    response = http.get("/v1/batches", params={"limit": "5"})
    assert response.status_code == 200
    assert response.json()["path"] == "/v1/batches"
    upstream = last_upstream_request(simulator)
    assert upstream["path"] == "/v1/batches"
    assert "limit=5" in upstream["query"]


def test_health_and_readiness(gateway: Running) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/readyz").json() == {"status": "ready"}
    missing = httpx.get(f"{gateway.url}/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
