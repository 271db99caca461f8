"""A tiny chat model made from an export, for trying the local backend without downloading
anything: a byte-level BPE tokenizer trained on the export's own text, a ChatML chat template
(tools, tool calls and ``{% generation %}`` markers) and a two-layer Llama with random weights.

    python -m exporter.finetune.local.tiny DATA_DIR OUT_DIR [--hidden 48] [--layers 2]

It learns the export's answers in seconds on a CPU; it knows nothing else. The tests and
``make demo BACKEND=local`` use it as the base model.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
INIT_RANGE = 0.2
"""Weights drawn wider than a real model's 0.02: at 0.02 a 48-wide model's logits are all but
uniform and their gradients tiny, so a LoRA adapter on it learns next to nothing in a few
steps; at 0.2 the logits spread and the loss falls within one epoch."""

CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n' }}"
    "{%- for tool in tools %}{{- (tool.function if tool.function is defined else tool) | tojson"
    " }}{{- '\\n' }}{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first %}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}"
    "{%- if message.content %}{{- message.content }}{%- endif %}"
    "{%- for call in message.tool_calls or [] %}"
    "{%- set fn = call.function if call.function is defined else call %}"
    "{{- '<tool_call>' + ({'name': fn.name, 'arguments': fn.arguments} | tojson)"
    " + '</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>' }}"
    "{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>tool\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""ChatML, as Qwen's models use it, with the tools in the system turn and each tool call as
``<tool_call>{"name": ..., "arguments": ...}</tool_call>``; the assistant turn's end token is
inside its generation block, so the model learns to stop."""


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def texts_of(data_dir: Path) -> list[str]:
    """Every string in the export's train and valid files (contents, names, arguments)."""
    texts: list[str] = []
    for name in ("train.jsonl", "valid.jsonl"):
        path = data_dir / name
        if path.is_file():
            for line in path.read_bytes().splitlines():
                if line.strip():
                    texts.extend(_strings(orjson.loads(line)))
    return texts


def build(
    texts: Iterable[str],
    out: Path,
    *,
    vocab_size: int = 600,
    hidden: int = 48,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """A tiny Llama and its tokenizer, saved to ``out``; ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [*texts, CHAT_TEMPLATE, "assistant user system tool <tool_call></tool_call>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    core.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    fast: Any = PreTrainedTokenizerFast  # its __init__ is untyped
    tokenizer = fast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.finetune.local.tiny")
    parser.add_argument("data", type=Path, help="an export (train.jsonl, valid.jsonl)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--hidden", type=int, default=48)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=600)
    args = parser.parse_args(argv)
    build(
        texts_of(args.data),
        args.out,
        vocab_size=args.vocab_size,
        hidden=args.hidden,
        layers=args.layers,
    )
    print(
        f"a tiny model in {args.out}: "
        f"gateway finetune {args.data} --backend local --base {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
