"""Export rows as token ids and labels, rendered by the base model's own chat template.

Supervised rows (``{"messages": [...], "tools": [...]}``): the conversation is rendered by the
tokenizer's chat template with the tools, and only the assistant turns are trained on: the
template's ``{% generation %}`` blocks mark each assistant turn's characters, one block per
assistant message, and a token is labelled (not -100) when it falls in the block of an
assistant message whose ``weight`` is not 0. A template without those markers is swapped for
TRL's training variant of it (Qwen, Llama 3, Gemma, Phi, ... ship one in TRL); another is
refused, naming the fix.

Preference rows (``{"input": {...}, "preferred_output": [...], "non_preferred_output": [...]}``)
become the prompt's ids and each answer's ids, the way TRL's DPO trainer cuts them: the
answer starts where the rendered prompt and the rendered prompt + answer part.

OpenAI's message shapes are turned into the ones Hugging Face templates read: text parts
joined into one string, ``content: null`` as an empty string, tool call arguments parsed from
their JSON string into an object, a tool result given its tool's name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from exporter.errors import InvalidDataset

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE = -100
GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")
"""A ``{% generation %}`` tag, as TRL and transformers find it."""
TEXT_PARTS = ("text", "input_text", "output_text", "refusal")


class TemplateError(InvalidDataset):
    """The base model's chat template cannot render the rows for training."""


@dataclass(frozen=True, slots=True)
class Supervised:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


@dataclass(frozen=True, slots=True)
class Preference:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for every non-blank line; InvalidDataset for one that is not JSON."""
    try:
        with path.open("rb") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise InvalidDataset(f"{path} line {number}: not JSON") from None
                if not isinstance(row, dict):
                    raise InvalidDataset(f"{path} line {number}: not a JSON object")
                yield number, row
    except OSError as exc:
        raise InvalidDataset(f"cannot read {path}: {exc.strerror or exc}") from None


def is_preference(row: dict[str, Any]) -> bool:
    return "input" in row and "preferred_output" in row


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in TEXT_PARTS:
                texts.append(str(part.get(kind if kind == "refusal" else "text") or ""))
            else:
                raise InvalidDataset(
                    f"{where}: {kind or 'unknown'} content parts are not supported by the local "
                    "backend (text only): export with --endpoint chat, or drop those calls"
                )
        return "".join(texts)
    raise InvalidDataset(f"{where}: content is neither text nor a list of parts")


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
        return parsed if isinstance(parsed, dict) else raw
    return raw


def hf_messages(messages: Sequence[Any], where: str = "row") -> list[dict[str, Any]]:
    """OpenAI chat messages as Hugging Face chat templates read them (``weight`` dropped)."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidDataset(f"{where}: message {index} has no role")
        role = message["role"]
        if role == "developer":
            role = "system"
        converted: dict[str, Any] = {
            "role": role,
            "content": _text(message.get("content"), f"{where} message {index}"),
        }
        calls = []
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            name = str(function.get("name", ""))
            if call.get("id"):
                names[str(call["id"])] = name
            calls.append(
                {
                    "id": call.get("id"),
                    "type": "function",
                    "function": {"name": name, "arguments": _arguments(function.get("arguments"))},
                }
            )
        if calls:
            converted["tool_calls"] = calls
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id:
                converted["tool_call_id"] = call_id
            tool_name = message.get("name") or names.get(str(call_id))
            if tool_name:
                converted["name"] = tool_name
        elif message.get("name"):
            converted["name"] = message["name"]
        out.append(converted)
    return out


def training_template(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's chat template, with ``{% generation %}`` markers (TRL's training variant
    when the model's own has none); TemplateError naming the fix when there is none."""
    template: Any = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default")
    if not template:
        raise TemplateError(
            f"{tokenizer.name_or_path}: the base model has no chat template: use its chat "
            "(instruct) version, or add a template to its tokenizer_config.json"
        )
    if GENERATION.search(template):
        return str(template)
    from trl.chat_template_utils import get_training_chat_template

    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError:
        raise TemplateError(
            f"{tokenizer.name_or_path}: its chat template has no {{% generation %}} markers and "
            "TRL has no training variant of it: add {% generation %}...{% endgeneration %} "
            "around the assistant turn in its tokenizer_config.json"
        ) from None
    return str(patched or template)


def _render(
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    messages: list[dict[str, Any]],
    tools: Any,
    *,
    add_generation_prompt: bool = False,
    where: str,
) -> tuple[str, list[tuple[int, int]]]:
    from transformers.utils import chat_template_utils

    # Typed as returning a str; it returns the rendered chats and their generation spans.
    render: Any = chat_template_utils.render_jinja_template
    try:
        rendered, spans = render(
            conversations=[messages],
            tools=tools or None,
            chat_template=template,
            return_assistant_tokens_mask=True,
            add_generation_prompt=add_generation_prompt,
            **tokenizer.special_tokens_map,
        )
    except Exception as exc:  # the template's own raise_exception, or a Jinja error
        raise TemplateError(f"{where}: the chat template cannot render it: {exc}") from None
    return str(rendered[0]), [(int(a), int(b)) for a, b in spans[0]]


def supervised(
    tokenizer: PreTrainedTokenizerBase, template: str, row: dict[str, Any], where: str = "row"
) -> Supervised:
    """One chat row as ids and labels: -100 everywhere but in the trained assistant turns."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidDataset(f"{where}: no messages")
    converted = hf_messages(messages, where)
    text, spans = _render(tokenizer, template, converted, row.get("tools"), where=where)
    weights = [m.get("weight", 1) for m in messages if m.get("role") == "assistant"]
    if len(spans) != len(weights):
        raise TemplateError(
            f"{where}: the chat template marks {len(spans)} assistant spans for {len(weights)} "
            "assistant messages: it needs one {% generation %} block per assistant message"
        )
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    offsets = encoded["offset_mapping"]
    labels = [IGNORE] * len(ids)
    trained = [span for span, weight in zip(spans, weights, strict=True) if weight != 0]
    for index, (start, end) in enumerate(offsets):
        if any(end > a and start < b for a, b in trained):
            labels[index] = ids[index]
    return Supervised(ids, labels)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def preference(
    tokenizer: PreTrainedTokenizerBase, template: str, row: dict[str, Any], where: str = "row"
) -> Preference:
    """One preference row as the ids TRL's DPO trainer takes."""
    given = row.get("input")
    if not isinstance(given, dict) or not isinstance(given.get("messages"), list):
        raise InvalidDataset(f"{where}: no input messages")
    prompt = hf_messages(given["messages"], where)
    tools = given.get("tools")

    def ids(messages: list[dict[str, Any]], generation_prompt: bool) -> list[int]:
        text, _ = _render(
            tokenizer,
            template,
            messages,
            tools,
            add_generation_prompt=generation_prompt,
            where=where,
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    prompt_ids = ids(prompt, True)
    chosen = ids(prompt + hf_messages(row.get("preferred_output") or [], where), False)
    rejected = ids(prompt + hf_messages(row.get("non_preferred_output") or [], where), False)
    cut = min(_common_prefix(prompt_ids, chosen), _common_prefix(prompt_ids, rejected))
    if cut >= len(chosen) or cut >= len(rejected):
        raise InvalidDataset(f"{where}: an answer renders to nothing")
    return Preference(prompt_ids[:cut], chosen[cut:], rejected[cut:])
