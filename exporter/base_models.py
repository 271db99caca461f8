"""What a destination base model takes: how to count its tokens, its context length, whether its
chat template has a system role and renders tools. For hosted open-weight families, known by
name (Together's ``meta-llama/Meta-Llama-3.1-8B-Instruct-Reference``, Fireworks'
``accounts/fireworks/models/llama-v3p1-8b-instruct``, a vLLM or Hugging Face id); a local
model's own tokenizer is read instead where one is given (``exporter.local_tokenizer``).

No tokenizer is downloaded: each family is counted with the nearest tiktoken encoding that
ships with the gateway, corrected where that was measured. The corrections were measured with
the families' real tokenizers as published inside Python packages (``llama-models`` 0.3.0:
Llama 3 and 4; ``dashscope`` 2.0.2: Qwen's ``qwen.tiktoken``; ``mistral-common`` 1.13.1:
Mistral's SentencePiece v1/v3 and Tekken), on 534k characters of English prose (Python's
documentation topics and this repository's markdown), about 400k of Python source (the
exporter's) and 385k of JSON objects with numbers (``tools/calibrate_tokenizers.py``
reproduces it):

- Llama 3.x: cl100k_base counts, 1.000x on prose and code (its 128k vocabulary is cl100k's
  100k merges plus 28k more, with the same pre-tokenizer);
- Llama 4: o200k_base counts, 0.994-1.000x;
- Qwen 2 / 2.5 / 3: cl100k_base with every digit a token of its own (Qwen's pre-tokenizer
  splits digits; the vocabulary extends cl100k's): 1.000x on all three texts;
- Mistral with Tekken (NeMo, Small 3, Ministral, Pixtral, Codestral 2501+): digits apart as
  above, then x1.05 (measured 1.027 prose, 1.049 code, 1.073 JSON);
- Mistral with SentencePiece v1-v3 (7B, Mixtral): digits apart, then x1.2 (measured 1.160
  prose, 1.280 code, 1.179 JSON);
- Gemma and Phi-3 (SentencePiece, digits split): not measured, their tokenizers ship in no
  package; Gemma counted as cl100k with digits apart, Phi-3 (Llama 2's 32k SentencePiece, the
  kind of Mistral's v1) like Mistral's SentencePiece. Phi-4's tokenizer is cl100k's.

Every such count is an estimate, and reports say so. Context lengths are the models' own (the
host may train on less: its fine-tuning limits are its own); roles and tools are what the
family's chat template renders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

SystemRole = Literal["yes", "folded", "no"]
"""yes: rendered as its own turn; folded: prepended to the first user turn; no: refused."""


@dataclass(frozen=True, slots=True)
class Destination:
    """What a base model takes, as far as validation and cost advice go."""

    name: str
    encoding: str
    """The tiktoken encoding counted with (or a local tokenizer's description)."""
    factor: float = 1.0
    split_digits: bool = False
    context: int | None = None
    system: SystemRole = "yes"
    tools: bool = True
    estimate: bool = False
    method: str = ""
    """How the count is made, for the report."""


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    pattern: re.Pattern[str]
    encoding: str
    factor: float
    split_digits: bool
    context: int
    system: SystemRole
    tools: bool
    method: str


def _family(
    name: str,
    pattern: str,
    encoding: str,
    context: int,
    method: str,
    factor: float = 1.0,
    split_digits: bool = False,
    system: SystemRole = "yes",
    tools: bool = True,
) -> Family:
    return Family(
        name,
        re.compile(pattern),
        encoding,
        factor,
        split_digits,
        context,
        system,
        tools,
        method,
    )


_TEKKEN = "Tekken: cl100k_base with digits apart, x1.05 (measured 1.03-1.07)"
_MISTRAL_SP = "SentencePiece: cl100k_base with digits apart, x1.2 (measured 1.16-1.28)"

FAMILIES: Final[tuple[Family, ...]] = (
    # the more specific names first
    _family("Llama 4", r"llama-?v?4", "o200k_base", 131_072, "o200k_base (measured 0.99-1.00)"),
    _family(
        "Llama 3.1-3.3",
        r"llama-?v?3\.[1-3]",
        "cl100k_base",
        131_072,
        "cl100k_base (Llama 3 extends its merges; measured 1.00)",
    ),
    _family(
        "Llama 3",
        r"llama-?v?3(?![.\d])",
        "cl100k_base",
        8_192,
        "cl100k_base (Llama 3 extends its merges; measured 1.00)",
        tools=False,
    ),
    _family(
        "Qwen 3",
        r"qwen-?3",
        "cl100k_base",
        40_960,
        "cl100k_base with digits apart (measured 1.00)",
        split_digits=True,
    ),
    _family(
        "Qwen 2.5",
        r"qwen-?2\.5",
        "cl100k_base",
        32_768,
        "cl100k_base with digits apart (measured 1.00)",
        split_digits=True,
    ),
    _family(
        "Qwen 2",
        r"qwen-?2(?![.\d])",
        "cl100k_base",
        32_768,
        "cl100k_base with digits apart (measured 1.00)",
        split_digits=True,
        tools=False,
    ),
    _family(
        "Mistral NeMo",
        r"mistral-nemo|open-mistral-nemo",
        "cl100k_base",
        131_072,
        _TEKKEN,
        1.05,
        True,
    ),
    _family(
        "Mistral Small 3",
        r"mistral-small-(?:3|24b)",
        "cl100k_base",
        32_768,
        _TEKKEN,
        1.05,
        True,
    ),
    _family(
        "Ministral / Pixtral",
        r"ministral|pixtral",
        "cl100k_base",
        131_072,
        _TEKKEN,
        1.05,
        True,
    ),
    _family(
        "Mistral 7B v0.3",
        r"mistral-7b(?:-instruct)?-v0\.3",
        "cl100k_base",
        32_768,
        _MISTRAL_SP,
        1.2,
        True,
    ),
    _family(
        "Mixtral 8x22B",
        r"mixtral-8x22b",
        "cl100k_base",
        65_536,
        _MISTRAL_SP,
        1.2,
        True,
    ),
    _family(
        "Mistral 7B v0.1/v0.2, Mixtral 8x7B",
        r"mistral-7b|mixtral-8x7b",
        "cl100k_base",
        32_768,
        _MISTRAL_SP,
        1.2,
        True,
        system="folded",
        tools=False,
    ),
    _family(
        "Gemma 3",
        r"gemma-?3",
        "cl100k_base",
        131_072,
        "cl100k_base with digits apart (not measured)",
        split_digits=True,
        system="folded",
        tools=False,
    ),
    _family(
        "Gemma 1/2",
        r"gemma",
        "cl100k_base",
        8_192,
        "cl100k_base with digits apart (not measured)",
        split_digits=True,
        system="no",
        tools=False,
    ),
    _family("Phi-4", r"phi-?4", "cl100k_base", 16_384, "cl100k_base (Phi-4's own)", tools=False),
    _family(
        "Phi-3",
        r"phi-?3",
        "cl100k_base",
        4_096,
        "as Mistral's SentencePiece: cl100k_base with digits apart, x1.2 (not measured)",
        1.2,
        True,
        tools=False,
    ),
)

_DECIMAL_P = re.compile(r"(?<=\d)p(?=\d)")


def normalised(model: str) -> str:
    """The model's own name, lower case: no organisation or account path, Fireworks' ``3p1``
    as ``3.1``, underscores as dashes."""
    name = model.strip().lower().rsplit("/", 1)[-1].replace("_", "-")
    return _DECIMAL_P.sub(".", name)


def family_of(model: str) -> Family | None:
    name = normalised(model)
    for family in FAMILIES:
        if family.pattern.search(name):
            return family
    return None


def hosted(model: str) -> Destination | None:
    """The destination of a hosted open-weight base model known by name; None otherwise."""
    family = family_of(model)
    if family is None:
        return None
    # Phi-3 variants with a long context say so in their names.
    context = 131_072 if family.name == "Phi-3" and "128k" in normalised(model) else family.context
    return Destination(
        name=family.name,
        encoding=family.encoding,
        factor=family.factor,
        split_digits=family.split_digits,
        context=context,
        system=family.system,
        tools=family.tools,
        estimate=True,
        method=f"{family.method}, an estimate",
    )
