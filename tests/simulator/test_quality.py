"""Answer quality per model: a weaker model's answers carry defects that format checks and the
simulator's pairwise judge see; a sound model's are unchanged."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from simulator.content import TextReply, ToolCallReply
from simulator.quality import defective, defects, degrade, judged
from tests.processes import start_simulator

PROFILE = {
    "models": {
        "weak-*": {"quality": 0.0},
        "half-*": {"quality": 0.5},
    }
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]
VERDICT = {
    "type": "object",
    "properties": {
        "winner": {"type": "string", "enum": ["A", "B", "tie"]},
        "reason": {"type": "string"},
    },
    "required": ["winner", "reason"],
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAI]:
    running = start_simulator(tmp_path_factory.mktemp("quality"), PROFILE)
    try:
        yield OpenAI(base_url=f"{running.url}/v1", api_key="x", max_retries=0)
    finally:
        running.stop()


def _ask(client: OpenAI, model: str, text: str, **extra: Any) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], **extra
    )


def test_a_weak_model_cuts_its_answers_short_and_breaks_its_formats(sim: OpenAI) -> None:
    for index in range(5):
        sound = _ask(sim, "good-1b", f"question {index}").choices[0].message.content
        weak = _ask(sim, "weak-1b", f"question {index}").choices[0].message.content
        assert sound.endswith(".") and defects(sound) == 0
        assert not weak.endswith(".") and len(weak.split()) <= 3 and defects(weak) == 1
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": VERDICT}}
    weak_json = _ask(sim, "weak-1b", "as JSON", response_format=schema).choices[0].message
    with pytest.raises(json.JSONDecodeError):
        json.loads(weak_json.content)
    sound_json = _ask(sim, "good-1b", "as JSON", response_format=schema).choices[0].message
    assert set(json.loads(sound_json.content)) == {"winner", "reason"}
    weak_call = _ask(sim, "weak-1b", "order 12?", tools=TOOLS).choices[0].message.tool_calls
    assert weak_call and weak_call[0].function.name == "get_order"
    with pytest.raises(json.JSONDecodeError):
        json.loads(weak_call[0].function.arguments)
    sound_call = _ask(sim, "good-1b", "order 12?", tools=TOOLS).choices[0].message.tool_calls
    assert sound_call and "order_id" in json.loads(sound_call[0].function.arguments)


def test_quality_is_a_share_drawn_per_request_and_streams_agree(sim: OpenAI) -> None:
    cut = 0
    for index in range(60):
        text = _ask(sim, "half-7b", f"q{index}").choices[0].message.content
        cut += not text.endswith(".")
    assert 15 <= cut <= 45  # about half
    client = sim
    messages: Any = [{"role": "user", "content": "q3"}]
    whole = client.chat.completions.create(model="half-7b", messages=messages)
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(model="half-7b", messages=messages, stream=True)
        if chunk.choices
    )
    assert streamed == whole.choices[0].message.content


def _judge_prompt(first: str, second: str) -> Any:
    text = (
        "<conversation>\nUSER: hi\n</conversation>\n\n"
        f"<answer_a>\n{first}\n</answer_a>\n\n<answer_b>\n{second}\n</answer_b>"
    )
    return [{"role": "system", "content": "Judge."}, {"role": "user", "content": text}]


def test_the_judge_prefers_the_answer_without_defects(sim: OpenAI) -> None:
    schema: Any = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT}}
    client = sim
    good, cut = "The order ships today.", "the order ships"
    for first, second, winner in ((good, cut, "A"), (cut, good, "B")):
        answer = client.chat.completions.create(
            model="gpt-4o", messages=_judge_prompt(first, second), response_format=schema
        )
        assert json.loads(answer.choices[0].message.content or "")["winner"] == winner
    # equal answers: a draw from the enum, as any structured answer
    seen = set()
    for index in range(12):
        answer = client.chat.completions.create(
            model="gpt-4o",
            messages=_judge_prompt(f"Answer {index}.", "Other answer."),
            response_format=schema,
        )
        seen.add(json.loads(answer.choices[0].message.content or "")["winner"])
    assert len(seen) >= 2


def test_defects_as_the_judge_sees_them() -> None:
    assert defects("Fine.") == 0
    assert defects("[empty]") == 1
    assert defects('{"a": 1}') == 0 and defects('{"a": ') == 1
    assert defects('[calls get_order({"order_id": "1"})]') == 0
    assert defects('[calls get_order({"order_id)]') == 1
    assert defects("Checking.\n[calls f({)]") == 1
    reply = TextReply(["The", " order", ",", " ships", " today", "."], "stop")
    cut = degrade(reply, as_json=False)
    assert isinstance(cut, TextReply) and cut.text == "the order ships"
    call = ToolCallReply("call_1", "f", ["{}"])
    broken = degrade(call, as_json=False)
    assert isinstance(broken, ToolCallReply) and broken.arguments == "{"
    assert not any(defective(seed, 0, 1.0) for seed in range(100))
    assert all(defective(seed, 0, 0.0) for seed in range(100))
    rng = random.Random(0)
    assert judged([{"role": "user", "content": "no answers here"}], VERDICT, rng) is None
    assert judged(_judge_prompt("a.", "b"), {"type": "object"}, rng) is None


def test_quality_must_be_a_share(tmp_path: Path) -> None:
    import pydantic

    from simulator.profile import parse_profile

    assert parse_profile({"models": {"x": {"quality": 0.3}}}).latency_for("x").quality == 0.3
    with pytest.raises(pydantic.ValidationError):
        parse_profile({"models": {"x": {"quality": 1.5}}})
