"""Azure OpenAI's URL scheme on the simulator: the official AzureOpenAI client against a
deployment (chat, streaming, completions, embeddings), the openai client against /openai/v1,
Azure's own refusals (key, api-version, unknown paths), and what the recorder keeps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from openai import AzureOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

if TYPE_CHECKING:
    from tests.simulator.conftest import RunningSimulator

FAST = {"x-sim-ttft-ms": "0", "x-sim-token-ms": "0"}
VERSION = "2024-10-21"
DEPLOYMENT = "gpt-4o-prod"
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Summarise the gateway."}]


@pytest.fixture
def azure(simulator: RunningSimulator) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=simulator.base_url,
        api_version=VERSION,
        api_key="azure-key",
        max_retries=0,
        default_headers=FAST,
    )


def azure_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"} and error["code"] == code
    message: str = error["message"]
    return message


def test_chat_against_a_deployment(
    simulator: RunningSimulator, azure: AzureOpenAI, client: OpenAI
) -> None:
    reply = azure.chat.completions.create(model=DEPLOYMENT, messages=ASK)
    assert reply.model == DEPLOYMENT
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    entry = simulator.recorded()[-1]
    assert entry["path"] == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert entry["query"] == f"api-version={VERSION}"
    headers = entry["headers"]
    assert isinstance(headers, dict) and headers["api-key"] == "azure-key"
    # The deployment is the model: the same answer as the OpenAI endpoint gives that model.
    same = client.chat.completions.create(model=DEPLOYMENT, messages=ASK)
    assert same.choices[0].message.content == reply.choices[0].message.content


def test_the_deployment_overrides_the_body_model(simulator: RunningSimulator) -> None:
    url = f"{simulator.base_url}/openai/deployments/{DEPLOYMENT}/chat/completions"
    params = {"api-version": VERSION}
    headers = {"api-key": "k", **FAST}
    without = httpx.post(url, params=params, headers=headers, json={"messages": ASK})
    assert without.status_code == 200 and without.json()["model"] == DEPLOYMENT
    other = httpx.post(url, params=params, headers=headers, json={"model": "x", "messages": ASK})
    assert other.json()["model"] == DEPLOYMENT
    assert other.json()["choices"] == without.json()["choices"]


def test_a_stream_from_a_deployment(azure: AzureOpenAI) -> None:
    reply = azure.chat.completions.create(model=DEPLOYMENT, messages=ASK)
    stream = azure.chat.completions.create(
        model=DEPLOYMENT, messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert {chunk.model for chunk in chunks} == {DEPLOYMENT}
    assert chunks[-1].usage is not None and reply.usage is not None
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_completions_and_embeddings(simulator: RunningSimulator, azure: AzureOpenAI) -> None:
    completion = azure.completions.create(model="instruct", prompt="Say something", max_tokens=5)
    assert completion.model == "instruct" and completion.choices[0].finish_reason == "length"
    vectors = azure.embeddings.create(model="embedder", input=["a", "b"])
    assert vectors.model == "embedder" and len(vectors.data) == 2
    paths = [entry["path"] for entry in simulator.recorded()[-2:]]
    assert paths == [
        "/openai/deployments/instruct/completions",
        "/openai/deployments/embedder/embeddings",
    ]


def test_faults_reach_azure_calls(azure: AzureOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        azure.chat.completions.create(
            model=DEPLOYMENT, messages=ASK, extra_headers={"x-sim-fault": "429"}
        )
    assert limited.value.response.headers["retry-after"] == "1"
    stream = azure.chat.completions.create(
        model=DEPLOYMENT,
        messages=ASK,
        stream=True,
        extra_headers={"x-sim-fault": "drop", "x-sim-fault-after": "2"},
    )
    with pytest.raises(openai.APIConnectionError):
        list(stream)


@pytest.mark.parametrize(
    ("headers", "query", "status", "code"),
    [
        ({}, {"api-version": VERSION}, 401, "401"),
        ({"api-key": ""}, {"api-version": VERSION}, 401, "401"),
        ({"authorization": "Bearer k"}, {"api-version": VERSION}, 401, "401"),
        ({"api-key": "k"}, {}, 404, "404"),
        ({"api-key": "k"}, {"api-version": "someday"}, 400, "BadRequest"),
    ],
)
def test_deployment_calls_need_a_key_and_a_version(
    simulator: RunningSimulator,
    headers: dict[str, str],
    query: dict[str, str],
    status: int,
    code: str,
) -> None:
    url = f"{simulator.base_url}/openai/deployments/{DEPLOYMENT}/chat/completions"
    response = httpx.post(url, params=query, headers=headers, json={"messages": ASK})
    message = azure_error(response, status, code)
    if status == 401:
        assert message.startswith("Access denied due to invalid subscription key")
    assert simulator.recorded()[-1]["path"] == f"/openai/deployments/{DEPLOYMENT}/chat/completions"


def test_the_azure_client_sees_its_errors(azure: AzureOpenAI) -> None:
    with pytest.raises(openai.AuthenticationError) as denied:
        azure.chat.completions.create(model=DEPLOYMENT, messages=ASK, extra_headers={"api-key": ""})
    assert denied.value.status_code == 401
    with pytest.raises(openai.NotFoundError):
        azure.chat.completions.create(
            model=DEPLOYMENT, messages=ASK, extra_query={"api-version": None}
        )


def test_unknown_azure_paths_are_not_found(simulator: RunningSimulator) -> None:
    for path in ("/openai/deployments/x/images/generations", "/openai/other"):
        response = httpx.post(simulator.base_url + path, params={"api-version": VERSION})
        azure_error(response, 404, "404")


def test_bad_bodies_get_openai_errors(simulator: RunningSimulator) -> None:
    url = f"{simulator.base_url}/openai/deployments/{DEPLOYMENT}/chat/completions"
    response = httpx.post(
        url, params={"api-version": VERSION}, headers={"api-key": "k"}, content=b"{not json"
    )
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def v1_client(simulator: RunningSimulator, **kwargs: Any) -> OpenAI:
    return OpenAI(
        base_url=simulator.base_url + "/openai/v1",
        api_key="azure-key",
        max_retries=0,
        default_headers=FAST,
        **kwargs,
    )


def test_the_v1_api(simulator: RunningSimulator) -> None:
    client = v1_client(simulator)
    reply = client.chat.completions.create(model=DEPLOYMENT, messages=ASK)
    assert reply.model == DEPLOYMENT and reply.choices[0].message.content
    entry = simulator.recorded()[-1]
    assert entry["path"] == "/openai/v1/chat/completions" and entry["query"] == ""
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(model=DEPLOYMENT, messages=ASK, stream=True)
        if chunk.choices
    )
    assert text == reply.choices[0].message.content
    answer = client.responses.create(model=DEPLOYMENT, input="Hello")
    assert answer.model == DEPLOYMENT and answer.output_text
    previewed = v1_client(simulator, default_query={"api-version": "preview"})
    assert previewed.chat.completions.create(model=DEPLOYMENT, messages=ASK).model == DEPLOYMENT


def test_the_v1_api_takes_the_api_key_header(simulator: RunningSimulator) -> None:
    url = simulator.base_url + "/openai/v1/chat/completions"
    body = {"model": DEPLOYMENT, "messages": ASK}
    assert httpx.post(url, headers={"api-key": "k", **FAST}, json=body).status_code == 200
    azure_error(httpx.post(url, headers=FAST, json=body), 401, "401")
    dated = httpx.post(url, params={"api-version": VERSION}, headers={"api-key": "k"}, json=body)
    azure_error(dated, 400, "BadRequest")
    missing = httpx.post(url, headers={"api-key": "k"}, json={"messages": ASK})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
