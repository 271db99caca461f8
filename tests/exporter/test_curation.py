"""Curation: exact and near duplicates, the system prompt treatments, weights, leaks."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash  # type: ignore[import-untyped]

from exporter.errors import InvalidDataset
from exporter.minhash import shingle_hashes
from exporter.neardup import NearDuplicateIndex, NearDupOptions
from exporter.system_prompt import SystemPrompt
from tests.exporter.factory import chat_call, questions, store_calls
from tests.exporter.helpers import export, read_rows

LONG_ANSWER = (
    "To change the billing address on an invoice, open Settings, then Billing, choose the "
    "invoice from the list, press Edit address, type the new address and save. The next "
    "invoice uses it; invoices already sent keep the old one, and support can reissue them."
)


def test_exact_duplicates_differ_only_in_case_and_spacing(tmp_path: Path) -> None:
    rows = [
        chat_call("How do I reset my password?", "Open Settings > Security."),
        chat_call("how do I   reset my PASSWORD?", "Open settings > security."),
        chat_call("How do I reset my password?", "Open Settings > Security.", system="Other"),
        chat_call("How do I reset my password?", "A different answer entirely."),
    ]
    url = store_calls(tmp_path / "c.db", rows)
    result = export(url, near_dup=None)
    assert result.report["dropped"] == {"duplicate (exact)": 1}
    assert result.report["kept"] == 3
    # once the system prompt is dropped, the third row is a duplicate too
    result = export(url, near_dup=None, system_prompt=SystemPrompt("drop"))
    assert result.report["dropped"] == {"duplicate (exact)": 2}


def test_tools_are_part_of_the_duplicate_key(tmp_path: Path) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    other = {"type": "function", "function": {"name": "g", "parameters": {"type": "object"}}}
    rows = [chat_call("hi", "hello", tools=[tool]), chat_call("hi", "hello", tools=[other])]
    url = store_calls(tmp_path / "c.db", rows)
    assert export(url, near_dup=None).report["kept"] == 2


def test_near_duplicates_are_removed_and_distinct_rows_kept(tmp_path: Path) -> None:
    rng = random.Random(3)
    vocabulary = LONG_ANSWER.lower().replace(",", "").replace(".", "").split()
    distinct = questions(40, seed=3)
    answers = [" ".join(rng.choice(vocabulary) for _ in range(40)) for _ in distinct]
    rows = [chat_call(q, a) for q, a in zip(distinct, answers, strict=True)]
    for i in range(10):  # the first ten again, one word of the answer changed
        changed = answers[i].split()
        changed[rng.randrange(len(changed))] = "CHANGED"
        rows.append(chat_call(distinct[i], " ".join(changed)))
    url = store_calls(tmp_path / "c.db", rows)
    result = export(url)
    assert result.report["dropped"] == {"near-duplicate": 10}
    assert result.report["kept"] == 40
    assert export(url, near_dup=None).report["kept"] == 50


def test_threshold_and_ngram_are_configurable() -> None:
    base = "the quick brown fox jumps over the lazy dog near the quiet river bank today"
    changed = base.replace("lazy", "sleepy")
    strict = NearDuplicateIndex(NearDupOptions(threshold=0.95))
    assert strict.keep([base, changed]) == [True, True]
    loose = NearDuplicateIndex(NearDupOptions(threshold=0.5, ngram=2))
    assert loose.keep([base, changed]) == [True, False]
    with pytest.raises(ValueError):
        NearDupOptions(threshold=1.5)


def _edited_texts(count: int, seed: int) -> list[str]:
    """Texts where many are one-word edits of an earlier one, some very short or empty."""
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(300)]
    texts: list[str] = []
    for _ in range(count):
        draw = rng.random()
        if texts and draw < 0.3:
            words = rng.choice(texts).split()
            if words:
                words[rng.randrange(len(words))] = rng.choice(vocabulary)
            texts.append(" ".join(words))
        elif draw < 0.35:
            texts.append(" ".join(rng.choices(vocabulary, k=rng.randint(0, 3))))
        else:
            texts.append(" ".join(rng.choices(vocabulary, k=rng.randint(5, 40))))
    return texts


@pytest.mark.parametrize("threshold", [0.8, 0.6])
def test_a_batch_is_decided_as_one_text_at_a_time(threshold: float) -> None:
    """Texts of one batch are compared with each other in bulk; the answers are those of
    giving the texts one by one (each compared with the index only)."""
    texts = _edited_texts(600, seed=int(threshold * 10))
    options = NearDupOptions(threshold=threshold)
    batched, single = NearDuplicateIndex(options), NearDuplicateIndex(options)
    kept = batched.keep(texts[:250]) + batched.keep(texts[250:])
    assert kept == [single.keep([text])[0] for text in texts]
    assert 30 < kept.count(False) < 400
    batched, single = NearDuplicateIndex(options), NearDuplicateIndex(options)
    links = batched.link(texts[:250]) + batched.link(texts[250:])
    assert links == [single.link([text])[0] for text in texts]
    assert sum(1 for near in links if len(near) > 1) > 5


def test_signatures_are_datasketch_minhash_values() -> None:
    index = NearDuplicateIndex()
    texts = ["one two three four five six", "a b", "", "single", "x y z " * 50]
    signatures = index.signatures(texts)
    grams, offsets = shingle_hashes(texts, 3)
    ends = [*offsets[1:], len(grams)]
    for row, text in enumerate(texts):
        reference = MinHash(num_perm=128, seed=1, hashfunc=lambda value: value)
        reference.update_batch([int(v) for v in grams[offsets[row] : ends[row]]])
        assert np.array_equal(reference.hashvalues, signatures[row]), text


def test_system_prompt_keep_replace_drop(tmp_path: Path) -> None:
    rows = [chat_call(q, "ok", system="A very long system prompt " * 20) for q in questions(12)]
    url = store_calls(tmp_path / "c.db", rows)
    for mode, expected in (
        ("keep", "A very long"),
        ("replace", "Be Acme support."),
        ("drop", None),
    ):
        out = tmp_path / mode
        prompt = SystemPrompt("replace", "Be Acme support.") if mode == "replace" else None
        prompt = prompt or SystemPrompt("keep" if mode == "keep" else "drop")
        export(url, out, system_prompt=prompt)
        first = read_rows(out / "train.jsonl", out / "valid.jsonl")[0]["messages"][0]
        if expected is None:
            assert first["role"] == "user"
        else:
            assert first["role"] == "system" and first["content"].startswith(expected)
    kept, dropped = (tmp_path / "keep" / "report.json"), (tmp_path / "drop" / "report.json")
    assert kept.stat().st_size and dropped.stat().st_size


def test_weight_last_trains_on_the_captured_answer_only(tmp_path: Path) -> None:
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Reset my password"},
    ]
    url = store_calls(tmp_path / "c.db", [chat_call(history, "Open Settings > Security.")])
    export(url, tmp_path / "out", weight="last")
    messages = read_rows(tmp_path / "out" / "train.jsonl", tmp_path / "out" / "valid.jsonl")[0][
        "messages"
    ]
    weights = [m.get("weight") for m in messages if m["role"] == "assistant"]
    assert weights == [0, 1]


def test_leak_check_modes(tmp_path: Path) -> None:
    rows = [
        chat_call("My card is 4111 1111 1111 1111", "Thanks"),
        chat_call("Call me on +44 20 7946 0958", "Sure"),
        chat_call("key sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz123456", "Noted"),
        chat_call("Nothing personal here", "Good"),
    ]
    url = store_calls(tmp_path / "c.db", rows)
    report = export(url).report
    assert report["dropped"] == {"leak (card)": 1, "leak (phone)": 1, "leak (secret)": 1}
    assert export(url, leak_check="off").report["kept"] == 4
    with pytest.raises(InvalidDataset, match="looks like"):
        export(url, leak_check="fail")


def test_calls_that_make_no_example_are_dropped_with_a_reason(tmp_path: Path) -> None:
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    refusal = {"choices": [{"message": {"role": "assistant", "content": None, "refusal": "No."}}]}
    rows = [
        chat_call("fine", "ok"),
        chat_call(image, "a cat"),
        chat_call("say no", response=refusal),
        chat_call("empty", response={"choices": []}),
        chat_call("blank", ""),
    ]
    url = store_calls(tmp_path / "c.db", rows)
    dropped = export(url).report["dropped"]
    assert dropped == {
        "non-text content": 1,
        "refusal": 1,
        "no answer recorded": 1,
        "empty answer": 1,
    }
