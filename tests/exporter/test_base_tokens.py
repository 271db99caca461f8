"""Token counts per base model: a local model's own tokenizer and chat template (a tiny one the
test trains itself), hosted open-weight families by name, and each destination's limits
(context length, system role, tools) in validation and export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from exporter.base_models import family_of, hosted, normalised
from exporter.check_file import validate_file
from exporter.cli import main
from exporter.errors import BadFilter
from exporter.tokens import ApproxCounter, LocalCounter, TokenCounter, counter_for
from tests.exporter.factory import chat_call, questions, store_calls
from tests.exporter.helpers import export

SPECIALS = ["<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{{ bos_token }}"
    "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] %}{{ message['content'] }}{% endif %}"
    "{% for call in message.get('tool_calls') or [] %}"
    "<tool_call>{{ call['function']['name'] }} {{ call['function']['arguments'] }}</tool_call>"
    "{% endfor %}<|im_end|>\n{% endfor %}"
)
NO_SYSTEM = (  # Gemma 2's rule, in its words
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}<start_of_turn>{{ message['role'] }}\n{{ message['content'] }}<end_of_turn>\n"
    "{% endfor %}"
)


def _corpus() -> list[str]:
    return [*questions(300, seed=3), "The order ships today.", "Sure, here is the answer."] * 3


def _tokenizer_dir(
    root: Path, name: str, template: str | None, context: int = 96, as_file: bool = False
) -> Path:
    """A directory as ``save_pretrained`` writes one: a BPE tokenizer trained here on the
    test's own questions, its special tokens, a chat template and a config."""
    directory = root / name
    directory.mkdir()
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    config: dict[str, Any] = {"bos_token": "<|bos|>", "eos_token": {"content": "<|eos|>"}}
    if template is not None and as_file:
        (directory / "chat_template.jinja").write_text(template)
    elif template is not None:
        config["chat_template"] = template
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    (directory / "config.json").write_text(json.dumps({"max_position_embeddings": context}))
    return directory


SYSTEM = {"role": "system", "content": "You are Acme's support agent."}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
    }
]


def _row(question: str, answer: str = "The order ships today.", system: bool = True) -> Any:
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": [SYSTEM, *messages] if system else messages}


def _tool_row(question: str) -> Any:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_order", "arguments": '{"order_id": "A-17"}'},
    }
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ],
        "tools": TOOLS,
    }


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def test_a_local_tokenizer_counts_the_rendered_template(tmp_path: Path) -> None:
    directory = _tokenizer_dir(tmp_path, "chatml", CHATML)
    counter = counter_for("anything", directory)
    assert isinstance(counter, LocalCounter)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    row = _row("How do I reset my password today?")
    expected_text = (
        "<|bos|><|im_start|>system\nYou are Acme's support agent.<|im_end|>\n"
        "<|im_start|>user\nHow do I reset my password today?<|im_end|>\n"
        "<|im_start|>assistant\nThe order ships today.<|im_end|>\n"
    )
    expected = len(tokenizer.encode(expected_text, add_special_tokens=False).ids)
    counted = counter.example(row["messages"])
    assert counted.total == expected
    assert counted.assistant == len(tokenizer.encode("The order ships today.").ids)
    # not what cl100k (or the guide's estimate with this tokenizer) would say
    assert counted.total != TokenCounter("cl100k_base").example(row["messages"]).total
    assert counted.total != counter.estimated(row["messages"]).total
    # tools are rendered by this template: their JSON is counted
    with_tools = counter.example(_tool_row("Where is order A-17?")["messages"], TOOLS)
    without = counter.example(_tool_row("Where is order A-17?")["messages"])
    assert with_tools.total > without.total
    described = counter.describe()
    assert described["context"] == 96 and described["estimate"] is False
    assert described["system_role"] == "yes" and described["tools"] is True
    # a template in chat_template.jinja is read the same way
    from_file = counter_for("x", _tokenizer_dir(tmp_path, "file", CHATML, as_file=True))
    assert from_file.example(row["messages"]).total == expected


def test_the_count_is_what_transformers_renders(tmp_path: Path) -> None:
    """The same template and tokenizer through transformers' apply_chat_template."""
    transformers = pytest.importorskip("transformers")
    directory = _tokenizer_dir(tmp_path, "chatml", CHATML)
    reference = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"), bos_token="<|bos|>", eos_token="<|eos|>"
    )
    reference.chat_template = CHATML
    counter = counter_for("x", directory)
    rows = [_row(q) for q in questions(5, seed=4)] + [_tool_row("Where is order A-17?")]
    for row in rows:
        ids = reference.apply_chat_template(row["messages"], tools=row.get("tools"), tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert counter.example(row["messages"], row.get("tools")).total == len(ids)


def test_validation_with_a_local_tokenizer_uses_its_context(tmp_path: Path) -> None:
    directory = _tokenizer_dir(tmp_path, "chatml", CHATML, context=128)
    rows = [_row(q) for q in questions(12, seed=5)] + [_row("word " * 60)]
    path = _write(tmp_path / "train.jsonl", rows)
    built = validate_file(path, "my-local-model", tokenizer=directory)
    assert built["token_limit"] == 128
    assert built["tokenizer"]["destination"] == str(directory)
    assert built["over_limit"]["count"] == 1 and built["over_limit"]["examples"] == ["line 13"]
    assert built["encoding"] == f"tokenizer.json of {directory}"
    # the base model given as the local directory itself: the same count
    same = validate_file(path, str(directory))
    assert same["tokens"] == built["tokens"] and same["token_limit"] == 128


def test_a_template_without_system_role_or_tools_is_an_error_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _tokenizer_dir(tmp_path, "gemma-like", NO_SYSTEM, context=4096)
    counter = counter_for("x", directory)
    assert counter.describe()["system_role"] == "no" and counter.describe()["tools"] is False
    rows = [_row(q) for q in questions(12, seed=6)] + [_tool_row("Where is A-17?")]
    path = _write(tmp_path / "train.jsonl", rows)
    built = validate_file(path, "x", tokenizer=directory)
    errors = "\n".join(built["errors"])
    assert "12 row(s) have a system message" in errors and "--system-prompt drop" in errors
    assert "1 row(s) use tools" in errors and "renders tools" in errors
    assert "refused by" in errors and "System role not supported" in errors
    # without system prompts, only the template's own rule is left: roles must alternate
    plain = [_row(q, system=False) for q in questions(12, seed=6)]
    first, second = plain[0]["messages"], plain[1]["messages"]
    plain.append({"messages": [first[0], *second]})  # user, user, assistant
    built = validate_file(_write(tmp_path / "plain.jsonl", plain), "x", tokenizer=directory)
    assert built["errors"] == [
        f"1 row(s) refused by {directory}'s chat template: Conversation roles must alternate "
        "user/assistant/user/assistant/... (fix the rows, or give another --tokenizer)"
    ]
    capsys.readouterr()
    assert main(["validate", str(path), "--tokenizer", str(directory)]) == 1
    out = capsys.readouterr().out
    assert f"tokens counted for {directory} with {directory}: its tokenizer.json" in out
    assert "error: 12 row(s) have a system message" in out


def test_no_template_falls_back_to_the_guide_with_its_tokenizer(tmp_path: Path) -> None:
    directory = _tokenizer_dir(tmp_path, "bare", None)
    counter = counter_for("x", directory)
    assert isinstance(counter, LocalCounter) and counter.describe()["estimate"] is True
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    messages = _row("Reset it?", "Done.", system=False)["messages"]
    text = sum(
        len(tokenizer.encode(part, add_special_tokens=False).ids)
        for m in messages
        for part in (m["role"], m["content"])
    )
    assert counter.example(messages).total == 3 + 3 * len(messages) + text


def test_without_the_tokenizers_library_it_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _tokenizer_dir(tmp_path, "chatml", CHATML, context=96)
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if not installed
    counter = counter_for("x", directory)
    assert not isinstance(counter, LocalCounter) and counter.encoding == "o200k_base"
    assert "pip install .[train]" in (counter.note or "")
    assert counter.token_limit("x") == 96
    with pytest.raises(BadFilter, match="no such directory"):
        counter_for("x", tmp_path / "missing")
    with pytest.raises(BadFilter, match=r"no tokenizer\.json"):
        counter_for("x", tmp_path)


@pytest.mark.parametrize(
    ("model", "family", "context"),
    [
        ("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "Llama 3.1-3.3", 131_072),
        ("accounts/fireworks/models/llama-v3p1-8b-instruct", "Llama 3.1-3.3", 131_072),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "Llama 3", 8_192),
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "Llama 4", 131_072),
        ("Qwen/Qwen2.5-7B-Instruct", "Qwen 2.5", 32_768),
        ("accounts/fireworks/models/qwen2p5-7b-instruct", "Qwen 2.5", 32_768),
        ("Qwen/Qwen3-8B", "Qwen 3", 40_960),
        ("mistralai/Mistral-7B-Instruct-v0.2", "Mistral 7B v0.1/v0.2, Mixtral 8x7B", 32_768),
        ("mistralai/Mistral-7B-Instruct-v0.3", "Mistral 7B v0.3", 32_768),
        ("mistralai/Mistral-Nemo-Instruct-2407", "Mistral NeMo", 131_072),
        ("google/gemma-2-9b-it", "Gemma 1/2", 8_192),
        ("google/gemma-3-12b-it", "Gemma 3", 131_072),
        ("microsoft/Phi-3-mini-128k-instruct", "Phi-3", 131_072),
        ("microsoft/phi-4", "Phi-4", 16_384),
    ],
)
def test_hosted_families_by_name(model: str, family: str, context: int) -> None:
    destination = hosted(model)
    assert destination is not None and destination.name == family
    assert destination.context == context and destination.estimate
    counter = counter_for(model)
    assert isinstance(counter, ApproxCounter) and counter.token_limit(model) == context
    assert counter.describe()["method"].endswith("an estimate")


def test_hosted_counts_follow_the_measured_rules() -> None:
    cl100k = TokenCounter("cl100k_base")
    llama = counter_for("meta-llama/Meta-Llama-3.1-8B-Instruct")
    qwen = counter_for("Qwen/Qwen2.5-7B-Instruct")
    mistral = counter_for("mistralai/Mistral-7B-Instruct-v0.3")
    text = "Your order ships on Friday from our Berlin warehouse."
    assert llama.text(text) == qwen.text(text) == cl100k.text(text)
    assert mistral.text(text) == round(cl100k.text(text) * 1.2)
    # digits: one token each for Qwen, in threes for cl100k (and so Llama 3)
    assert cl100k.text("1234567") == 3 and llama.text("1234567") == 3
    assert qwen.text("1234567") == 7
    assert qwen.text("order 1234567") == cl100k.text("order 1234567") - 3 + 7
    assert normalised("accounts/fireworks/models/llama-v3p1-8b-instruct") == (
        "llama-v3.1-8b-instruct"
    )
    assert family_of("gpt-4o-mini") is None and hosted("acme-private-7b") is None
    # OpenAI models keep their own encodings and limits; unknown names an o200k estimate
    assert counter_for("gpt-4o-mini").describe()["estimate"] is False
    assert counter_for("gpt-4o-mini").token_limit("gpt-4o-mini") == 65_536
    unknown = counter_for("acme-private-7b")
    assert unknown.encoding == "o200k_base" and unknown.describe()["estimate"] is True


def test_hosted_destination_limits_in_validation(tmp_path: Path) -> None:
    rows = [_row(q) for q in questions(12, seed=8)] + [_tool_row("Where is order A-17?")]
    path = _write(tmp_path / "train.jsonl", rows)
    gemma = validate_file(path, "google/gemma-2-9b-it")
    assert any("Gemma 1/2's chat template refuses" in e for e in gemma["errors"])
    assert any("1 row(s) use tools" in e for e in gemma["errors"])
    assert gemma["token_limit"] == 8_192 and gemma["tokenizer"]["estimate"] is True
    gemma3 = validate_file(path, "google/gemma-3-12b-it")
    assert any("trained as part of the first user turn" in w for w in gemma3["warnings"])
    assert not any("system" in e for e in gemma3["errors"])
    qwen = validate_file(path, "Qwen/Qwen2.5-7B-Instruct")
    assert qwen["errors"] == [] and qwen["token_limit"] == 32_768
    llama3 = validate_file(path, "meta-llama/Meta-Llama-3-8B-Instruct")
    assert any("use tools" in e for e in llama3["errors"])
    # a validation file: no minimum count, but the destination's limits still hold
    valid = validate_file(path, "google/gemma-2-9b-it", side="valid")
    assert any("refuses" in e for e in valid["errors"])


def test_export_counts_with_the_tokenizer_and_says_so(tmp_path: Path) -> None:
    directory = _tokenizer_dir(tmp_path, "chatml", CHATML, context=128)
    calls = [chat_call(q) for q in questions(30, seed=9)]
    calls.append(chat_call("word " * 80))
    url = store_calls(tmp_path / "capture.db", calls)
    result = export(url, tmp_path / "out", tokenizer=directory)
    built = result.report
    assert built["token_limit"] == 128 and built["dropped"]["over the token limit"] == 1
    assert built["tokenizer"]["destination"] == str(directory)
    manifest = orjson.loads((tmp_path / "out" / "manifest.json").read_bytes())
    assert manifest["tokenizer"] == str(directory)
    hosted_report = export(url, None, base_model="google/gemma-2-9b-it").report
    assert any("--system-prompt drop" in e for e in hosted_report["errors"])
    dropped = export(url, None, base_model="google/gemma-2-9b-it", system_prompt=_drop()).report
    assert not any("system message" in e for e in dropped["errors"])


def _drop() -> Any:
    from exporter.system_prompt import SystemPrompt

    return SystemPrompt("drop")
