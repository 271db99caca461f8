"""Quality per slice at run time (``POST /_sim/quality``) and from the start (a profile's
``quality_rules``), through the simulator's own process: a rule makes one model's answers to
matching requests carry defects that format checks and the simulator's judge see, while other
models and other requests are answered as before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from simulator.quality import defects
from tests.processes import Running, start_simulator

STUDENT = "ft:gpt-4o-mini:acme::s1"
TEACHER = "gpt-4o"
VERDICT = {
    "type": "object",
    "properties": {
        "winner": {"type": "string", "enum": ["A", "B", "tie"]},
        "reason": {"type": "string"},
    },
    "required": ["winner", "reason"],
}
JUDGE_FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT}}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_simulator(tmp_path_factory.mktemp("quality-rules"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def rules(sim: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as http:
        assert http.delete("/_sim/quality").json() == {"rules": []}
        yield http
        http.delete("/_sim/quality")


def _client(sim: Running) -> OpenAI:
    return OpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0)


def _answer(client: OpenAI, model: str, text: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content or ""


def _judge(client: OpenAI, first: str, second: str) -> str:
    prompt = f"<answer_a>\n{first}\n</answer_a>\n\n<answer_b>\n{second}\n</answer_b>"
    reply = client.chat.completions.create(
        model=TEACHER,
        messages=[{"role": "system", "content": "Judge."}, {"role": "user", "content": prompt}],
        response_format=JUDGE_FORMAT,
    )
    winner: str = json.loads(reply.choices[0].message.content or "")["winner"]
    return winner


def test_a_rule_degrades_one_models_answers_on_its_slice_only(
    sim: Running, rules: httpx.Client
) -> None:
    client = _client(sim)
    prompts = {task: [f"[task={task}] question {i}" for i in range(12)] for task in ("b", "s")}
    before = {
        (model, p): _answer(client, model, p)
        for model in (STUDENT, TEACHER)
        for task in prompts
        for p in prompts[task]
    }
    assert all(defects(text) == 0 for text in before.values())

    added = rules.post("/_sim/quality", json={"model": STUDENT, "quality": 0.0, "match": "task=b"})
    assert added.status_code == 200, added.text
    assert added.json() == {"rules": [{"model": STUDENT, "quality": 0.0, "match": "task=b"}]}

    for p in prompts["b"]:
        worse = _answer(client, STUDENT, p)
        assert defects(worse) == 1 and worse != before[(STUDENT, p)]
        # the judge sees it: the teacher's sound answer wins, in either position
        teacher = _answer(client, TEACHER, p)
        assert teacher == before[(TEACHER, p)]
        assert _judge(client, teacher, worse) == "A"
        assert _judge(client, worse, teacher) == "B"
    for p in prompts["s"]:  # another slice of the same model: unchanged
        assert _answer(client, STUDENT, p) == before[(STUDENT, p)]

    # the latest matching rule wins: the slice is sound again, then every request is worse
    rules.post("/_sim/quality", json={"model": "ft:*", "quality": 1, "match": "task=b"})
    assert all(_answer(client, STUDENT, p) == before[(STUDENT, p)] for p in prompts["b"])
    rules.post("/_sim/quality", json={"model": STUDENT, "quality": 0.0, "match": None})
    assert all(defects(_answer(client, STUDENT, p)) == 1 for ps in prompts.values() for p in ps)
    assert all(_answer(client, TEACHER, p) == before[(TEACHER, p)] for p in prompts["s"])
    assert len(rules.get("/_sim/quality").json()["rules"]) == 3

    assert rules.delete("/_sim/quality").json() == {"rules": []}
    assert all(_answer(client, STUDENT, p) == before[(STUDENT, p)] for p in prompts["b"])


def test_a_share_of_the_slice_and_text_in_parts_and_streams(
    sim: Running, rules: httpx.Client
) -> None:
    client = _client(sim)
    rules.post("/_sim/quality", json={"model": STUDENT, "quality": 0.5, "match": "refund"})
    cut = sum(defects(_answer(client, STUDENT, f"refund order {i}")) for i in range(60))
    assert 15 <= cut <= 45  # about half
    rules.post("/_sim/quality", json={"model": STUDENT, "quality": 0.0, "match": "invoice"})
    # the match is looked for in every message, string contents and text parts alike
    messages: Any = [
        {"role": "system", "content": [{"type": "text", "text": "You answer about an invoice."}]},
        {"role": "user", "content": "When does it arrive?"},
    ]
    whole = client.chat.completions.create(model=STUDENT, messages=messages)
    text = whole.choices[0].message.content or ""
    assert defects(text) == 1
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(model=STUDENT, messages=messages, stream=True)
        if chunk.choices
    )
    assert streamed == text
    # JSON answers on the slice do not parse
    schema: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": VERDICT}}
    broken = client.chat.completions.create(
        model=STUDENT,
        messages=[{"role": "user", "content": "invoice as JSON"}],
        response_format=schema,
    )
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.choices[0].message.content or "")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"quality": 0.5}, "model"),
        ({"model": "", "quality": 0.5}, "model"),
        ({"model": "m"}, "quality"),
        ({"model": "m", "quality": 1.5}, "quality"),
        ({"model": "m", "quality": -0.1}, "quality"),
        ({"model": "m", "quality": "0.5"}, "quality"),
        ({"model": "m", "quality": True}, "quality"),
        ({"model": "m", "quality": 0.5, "match": ""}, "match"),
        ({"model": "m", "quality": 0.5, "match": 3}, "match"),
        ({"model": "m", "quality": 0.5, "slice": "x"}, "slice"),
    ],
)
def test_bad_rules_are_400_naming_the_field(
    rules: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = rules.post("/_sim/quality", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and field in error["message"]
    assert rules.get("/_sim/quality").json() == {"rules": []}


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"", b'"rule"'])
def test_a_body_that_is_not_an_object_is_400(rules: httpx.Client, raw: bytes) -> None:
    response = rules.post("/_sim/quality", content=raw)
    assert response.status_code == 400
    assert '{"model": str, "quality": 0..1' in response.json()["error"]["message"]


def test_a_profile_makes_a_slice_worse_from_the_start(tmp_path: Path) -> None:
    profile = {
        "default": {"ttft_ms": 0, "token_ms": 0},
        "quality_rules": [{"model": "ft:*", "quality": 0.0, "match": "tenant=acme"}],
    }
    running = start_simulator(tmp_path, profile)
    try:
        client = _client(running)
        for i in range(8):
            assert defects(_answer(client, STUDENT, f"tenant=acme question {i}")) == 1
            assert defects(_answer(client, STUDENT, f"tenant=zeta question {i}")) == 0
            assert defects(_answer(client, TEACHER, f"tenant=acme question {i}")) == 0
        listed = httpx.get(f"{running.url}/_sim/quality").json()
        assert listed == {"rules": [{"model": "ft:*", "quality": 0.0, "match": "tenant=acme"}]}
    finally:
        running.stop()
    bad = {"quality_rules": [{"model": "ft:*", "quality": 2}]}
    with pytest.raises(RuntimeError):
        start_simulator(tmp_path, bad).stop()
