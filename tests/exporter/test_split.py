"""The train/validation split hashes the prompt: no prompt on both sides, stable re-exports;
similar prompts share a side."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

import orjson

from exporter.database import open_store
from exporter.evaluate.held_out import held_out, trained_keys
from exporter.examples import Example
from exporter.filters import Filters
from exporter.neardup import NearDuplicateIndex, similarity
from exporter.normalize import prompt_key
from exporter.report import render
from exporter.split import (
    DEFAULT_GROUP_THRESHOLD,
    DEFAULT_SALT,
    DEFAULT_VALID_SHARE,
    GroupSplit,
    group_options,
    share_of,
    side_of,
)
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


def trigrams(text: str) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def jaccard(left: str, right: str) -> float:
    a, b = trigrams(left), trigrams(right)
    return len(a & b) / len(a | b)


def edited_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` pairs of a random text and a copy with a few words changed, each pair's word
    3-gram Jaccard in [0.70, 0.85] and every two pairs unrelated."""
    rng = random.Random(seed)
    vocabulary = [f"{rng.choice('bcdfgklmnprstvz')}{rng.randrange(10**6):06d}" for _ in range(5000)]
    pairs: list[tuple[str, str]] = []
    while len(pairs) < count:
        words = [rng.choice(vocabulary) for _ in range(rng.randrange(30, 60))]
        edited = list(words)
        for _ in range(rng.randrange(1, 4)):
            edited[rng.randrange(len(edited))] = rng.choice(vocabulary)
        first, second = " ".join(words), " ".join(edited)
        if 0.70 <= jaccard(first, second) <= 0.85:
            pairs.append((first, second))
    return pairs


def test_similar_prompts_share_a_side(tmp_path: Path) -> None:
    pairs = edited_pairs(150, seed=8)
    assert all(0.70 <= jaccard(a, b) <= 0.85 for a, b in pairs)
    assert max(jaccard(a, c) for (a, _), (c, _) in itertools.pairwise(pairs)) < 0.1
    pair_of = {text: n for n, pair in enumerate(pairs) for text in pair}
    # the first of each pair, then the edited copies, so the index sees them in separate pages
    rows = [chat_call(a, f"Answer {n}.") for n, (a, _) in enumerate(pairs)]
    rows += [chat_call(b, f"Reply {n}.") for n, (_, b) in enumerate(pairs)]
    url = store_calls(tmp_path / "c.db", rows)
    result = export(url, tmp_path / "out", page_size=64)
    sides: dict[int, set[str]] = {}
    count: dict[int, int] = {}
    for side in ("train", "valid"):
        for row in read_rows(tmp_path / "out" / f"{side}.jsonl"):
            n = pair_of[row["messages"][-2]["content"]]
            sides.setdefault(n, set()).add(side)
            count[n] = count.get(n, 0) + 1
    survived = [n for n, kept in count.items() if kept == 2]
    assert len(survived) >= 50  # the near-duplicate threshold (0.8) let many pairs through
    assert [n for n in survived if len(sides[n]) > 1] == []
    assert all(sides[n] for n in sides) and any("valid" in s for s in sides.values())
    split = result.report["split"]
    assert split["groups_merged"] == len(survived)
    assert split["group_threshold"] == DEFAULT_GROUP_THRESHOLD
    assert split["split_groups"] == 0 and split["largest_group"] == 2
    manifest = orjson.loads((tmp_path / "out" / "manifest.json").read_bytes())
    assert manifest["split"]["groups_merged"] == len(survived)
    assert f"{len(survived)} group(s) of 2 or more merged" in render(result.report)


def test_without_groups_each_row_goes_by_its_own_hash(tmp_path: Path) -> None:
    pairs = edited_pairs(150, seed=8)
    rows = [chat_call(text, f"Answer {n}.") for n, pair in enumerate(pairs) for text in pair]
    url = store_calls(tmp_path / "c.db", rows)
    result = export(url, tmp_path / "out", split_groups=None)
    for side in ("train", "valid"):
        for row in read_rows(tmp_path / "out" / f"{side}.jsonl"):
            example = Example("x", row["messages"])
            assert side_of(prompt_key(example)) == side
    assert result.report["split"]["groups_merged"] == 0
    assert result.report["split"]["group_threshold"] is None


def _three_prompts(seed: int) -> tuple[str, str, str]:
    rng = random.Random(seed)
    base = [f"w{rng.randrange(10**6)}" for _ in range(100)]
    fresh = [f"n{rng.randrange(10**6)}" for _ in range(30)]
    left = " ".join(base[:90] + fresh[:10])
    right = " ".join(fresh[10:] + base[20:])
    return left, right, " ".join(base)


def test_a_prompt_similar_to_two_groups_joins_them_and_they_count_as_split() -> None:
    options = group_options(DEFAULT_GROUP_THRESHOLD)
    index = NearDuplicateIndex(options)

    def estimated(one: str, other: str) -> float:
        sketches = index.sketches(index.signatures([one, other]))
        return float(similarity(sketches.small[:1], sketches.small[1:])[0])

    for seed in range(5, 100):  # prompts whose estimates, not only their Jaccards, are apart
        left, right, middle = _three_prompts(seed)
        assert jaccard(left, right) < 0.55
        assert jaccard(left, middle) > 0.8 and 0.65 < jaccard(right, middle) < 0.7
        if (
            estimated(left, right) < DEFAULT_GROUP_THRESHOLD
            and estimated(right, middle) >= DEFAULT_GROUP_THRESHOLD + 0.02
            and estimated(left, middle) > estimated(right, middle)
        ):
            break
    else:
        raise AssertionError("no seed gave such prompts")
    salt = next(  # one where the two outer prompts hash to different sides
        s
        for s in map(str, range(1000))
        if side_of(left.encode(), 0.5, s) != side_of(right.encode(), 0.5, s)
    )
    splitter = GroupSplit(0.5, salt, options)
    outer = splitter.sides([left.encode(), right.encode()], [left, right])
    assert outer[0] != outer[1] and splitter.summary(0.6)["groups_merged"] == 0
    assert splitter.sides([middle.encode()], [middle]) == [outer[0]]  # the more similar one's
    summary = splitter.summary(0.6)
    assert summary["groups_merged"] == 1 and summary["largest_group"] == 3
    assert summary["split_groups"] == 1


def test_eval_holds_out_no_prompt_the_export_moved_to_train(tmp_path: Path) -> None:
    pairs = edited_pairs(150, seed=8)
    rows = [chat_call(text, f"Answer {n}.") for n, pair in enumerate(pairs) for text in pair]
    url = store_calls(tmp_path / "c.db", rows)
    export(url, tmp_path / "out")
    trained = prompts(tmp_path / "out" / "train.jsonl")
    keys = trained_keys(tmp_path / "out" / "train.jsonl", DEFAULT_VALID_SHARE, DEFAULT_SALT)

    async def held(skip: frozenset[bytes]) -> set[str]:
        async with open_store(url) as store:
            items, _ = await held_out(
                store.engine, Filters(), 1000, DEFAULT_VALID_SHARE, DEFAULT_SALT, trained=skip
            )
        return {item.example.prompt[-1]["content"] for item in items}

    assert keys and asyncio.run(held(frozenset())) & trained  # moved ones, by their own hash
    kept = asyncio.run(held(keys))
    assert kept and not kept & trained
