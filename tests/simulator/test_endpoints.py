"""Embeddings, models, legacy completions, the Responses API and the /v1 passthrough."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import httpx
from openai import OpenAI
from openai.types.responses import FunctionToolParam

if TYPE_CHECKING:
    from tests.simulator.conftest import RunningSimulator


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(value * value for value in vector))


def test_embeddings_float_and_base64_agree(client: OpenAI) -> None:
    as_float = client.embeddings.create(
        model="text-embedding-3-small", input="hello", encoding_format="float"
    )
    as_base64 = client.embeddings.create(model="text-embedding-3-small", input="hello")

    vector = as_float.data[0].embedding
    assert as_float.object == "list" and as_float.data[0].object == "embedding"
    assert len(vector) == 1536
    assert abs(_norm(vector) - 1.0) < 1e-5
    assert as_base64.data[0].embedding == vector
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == 1


def test_embeddings_batches_dimensions_and_token_input(client: OpenAI) -> None:
    batch = client.embeddings.create(
        model="text-embedding-3-large", input=["one", "two", "one"], dimensions=256
    )
    vectors = [item.embedding for item in batch.data]
    assert [item.index for item in batch.data] == [0, 1, 2]
    assert all(len(vector) == 256 for vector in vectors)
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    cosine = sum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))
    assert abs(cosine) < 0.3

    tokens = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]])
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 5


def test_models_list_and_any_id(client: OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    for expected in ("gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "text-embedding-3-small"):
        assert expected in ids
    custom = client.models.retrieve("ft:gpt-3.5-turbo:acme::abc123")
    assert custom.id == "ft:gpt-3.5-turbo:acme::abc123" and custom.object == "model"


def test_legacy_completions(client: OpenAI) -> None:
    whole = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=["Once upon", "a time"], max_tokens=20
    )
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-")
    assert [choice.index for choice in whole.choices] == [0, 1]
    assert whole.usage and whole.usage.prompt_tokens == 4

    default_cap = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Hi")
    assert default_cap.usage and default_cap.usage.completion_tokens == 16
    assert default_cap.choices[0].finish_reason == "length"

    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Hi",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == default_cap.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage == default_cap.usage


def test_responses_api(client: OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="hi")
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text
    assert response.output[0].type == "message"
    assert response.usage and response.usage.input_tokens == 1 + 3 + 3
    assert response.usage.total_tokens == response.usage.input_tokens + (
        response.usage.output_tokens
    )

    again = client.responses.create(model="gpt-4o", input="hi")
    assert again.output_text == response.output_text

    capped = client.responses.create(model="gpt-4o", input="hi", max_output_tokens=16)
    assert capped.status == "incomplete"
    assert capped.incomplete_details and capped.incomplete_details.reason == "max_output_tokens"


def test_responses_api_stream_and_function_call(client: OpenAI) -> None:
    whole = client.responses.create(model="gpt-4o", input="hello there")
    events = list(client.responses.create(model="gpt-4o", input="hello there", stream=True))
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == whole.output_text

    tool: FunctionToolParam = {
        "type": "function",
        "strict": True,
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    }
    called = client.responses.create(model="gpt-4o", input="find it", tools=[tool])
    item = called.output[0]
    assert item.type == "function_call" and item.name == "lookup"
    assert item.call_id.startswith("call_") and '"query"' in item.arguments


def test_other_v1_paths_answer_for_passthrough(simulator: RunningSimulator) -> None:
    response = httpx.request(
        "PATCH",
        simulator.v1 + "/files/file-1?purpose=x",
        content=b"not json",
        headers=simulator.fast,
    )
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "data": [],
        "path": "/v1/files/file-1",
        "method": "PATCH",
    }
    get_on_post_route = httpx.get(simulator.v1 + "/chat/completions", headers=simulator.fast)
    assert get_on_post_route.json()["method"] == "GET"
