"""The train/validation split hashes the prompt: no prompt on both sides, stable re-exports."""

from __future__ import annotations

from pathlib import Path

from exporter.examples import Example
from exporter.normalize import prompt_key
from exporter.split import share_of, side_of
from exporter.system_prompt import SystemPrompt
from tests.exporter.factory import chat_call, questions, store_calls
from tests.exporter.helpers import export, read_rows


def prompts(path: Path) -> set[str]:
    return {row["messages"][-2]["content"] for row in read_rows(path)}


def test_no_prompt_lands_on_both_sides(tmp_path: Path) -> None:
    asked = questions(150, seed=11)
    rows = []
    for i, text in enumerate(asked):  # every prompt three times, with different answers
        rows += [chat_call(text, f"Answer {i}.{k} " + "x" * k * 10) for k in range(3)]
    url = store_calls(tmp_path / "c.db", rows)
    export(url, tmp_path / "out", near_dup=None)
    train, valid = (
        prompts(tmp_path / "out" / "train.jsonl"),
        prompts(tmp_path / "out" / "valid.jsonl"),
    )
    assert train and valid and not train & valid
    assert 0.03 < len(valid) / len(asked) < 0.2  # about the 10% asked for


def test_a_re_export_keeps_old_rows_on_their_side(tmp_path: Path) -> None:
    asked = questions(200, seed=12)
    first = [chat_call(text, f"Answer {i}") for i, text in enumerate(asked[:100])]
    url = store_calls(tmp_path / "c.db", first)
    export(url, tmp_path / "a")
    more = [chat_call(text, f"Answer {i}") for i, text in enumerate(asked[100:])]
    store_calls(tmp_path / "c.db", more)
    export(url, tmp_path / "b", system_prompt=SystemPrompt("drop"))  # another treatment, too
    before_train, before_valid = (
        prompts(tmp_path / "a" / "train.jsonl"),
        prompts(tmp_path / "a" / "valid.jsonl"),
    )
    after_train, after_valid = (
        prompts(tmp_path / "b" / "train.jsonl"),
        prompts(tmp_path / "b" / "valid.jsonl"),
    )
    assert before_train <= after_train and before_valid <= after_valid
    assert len(after_train) + len(after_valid) == 200


def test_the_side_depends_on_the_salt_and_share_only() -> None:
    example = Example(
        "x", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]
    )
    key = prompt_key(example)
    assert side_of(key, 0.0) == "train" and side_of(key, 1.0) == "valid"
    assert share_of(key, "one") != share_of(key, "two")
    assert side_of(key, 0.5) == side_of(key, 0.5)
