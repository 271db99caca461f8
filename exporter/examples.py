"""A captured chat call as a fine-tuning example: the prompt's messages plus the answer.

The request's ``messages`` are kept with only the keys OpenAI's fine-tuning format knows
(role, content, name, tool_calls, tool_call_id); ``developer`` messages become ``system``
ones (the format has no developer role); content given as text parts is joined into one
string. The answer is the first choice's message: its text, or its tool calls with ``content``
null. The request's ``tools`` and ``parallel_tool_calls`` go along. A call that cannot make a
sound example is dropped with a reason the export reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]

KEPT_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")
ROLES = {"system", "user", "assistant", "tool"}


@dataclass(slots=True)
class Example:
    call_id: str
    messages: list[Message]
    """The prompt and, last, the answer."""
    tools: list[Any] | None = None
    parallel_tool_calls: bool | None = None
    feedback: float | None = None

    @property
    def prompt(self) -> list[Message]:
        return self.messages[:-1]

    @property
    def answer(self) -> Message:
        return self.messages[-1]

    def row(self) -> dict[str, Any]:
        """The JSONL row of OpenAI's chat fine-tuning format."""
        row: dict[str, Any] = {"messages": self.messages}
        if self.tools:
            row["tools"] = self.tools
            if self.parallel_tool_calls is not None:
                row["parallel_tool_calls"] = self.parallel_tool_calls
        return row


class Dropped(Exception):
    """Why a call makes no example; ``reason`` is a short fixed name for the counts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _text(content: Any) -> str | None:
    """A message content as one string; None when it is absent; Dropped for non-text parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                texts.append(str(part.get("text", "")))
            else:
                raise Dropped("non-text content")
        return "\n".join(texts)
    raise Dropped("malformed message")


def clean_message(message: Any) -> Message:
    if not isinstance(message, dict):
        raise Dropped("malformed message")
    role = message.get("role")
    if role == "developer":
        role = "system"
    if role not in ROLES:
        raise Dropped("unsupported role")
    if "function_call" in message or role == "function":
        raise Dropped("legacy function calling")
    clean: Message = {"role": role}
    for key in KEPT_MESSAGE_KEYS[1:]:
        if key in message and message[key] is not None:
            clean[key] = message[key]
    clean["content"] = _text(message.get("content"))
    if role == "assistant" and clean.get("tool_calls"):
        clean["tool_calls"] = [_clean_tool_call(call) for call in clean["tool_calls"]]
    return clean


def _clean_tool_call(call: Any) -> dict[str, Any]:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise Dropped("malformed tool call")
    function = call["function"]
    return {
        "id": call.get("id"),
        "type": call.get("type", "function"),
        "function": {"name": function.get("name"), "arguments": function.get("arguments")},
    }


def answer_of(response: Any) -> Message:
    choices = response.get("choices") if isinstance(response, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise Dropped("no answer recorded")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise Dropped("no answer recorded")
    if message.get("refusal"):
        raise Dropped("refusal")
    answer: Message = {"role": "assistant", "content": _text(message.get("content"))}
    tool_calls = message.get("tool_calls")
    if tool_calls:
        answer["tool_calls"] = [_clean_tool_call(call) for call in tool_calls]
    elif not answer["content"]:
        raise Dropped("empty answer")
    return answer


def example_from_call(row: dict[str, Any]) -> Example:
    """The example a stored call makes; Dropped when it makes none."""
    request = row.get("request")
    if not isinstance(request, dict):
        raise Dropped("request not recorded")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Dropped("no messages")
    if request.get("functions"):
        raise Dropped("legacy function calling")
    prompt = [clean_message(message) for message in messages]
    tools = request.get("tools")
    parallel = request.get("parallel_tool_calls")
    return Example(
        call_id=str(row.get("id")),
        messages=[*prompt, answer_of(row.get("response"))],
        tools=tools if isinstance(tools, list) and tools else None,
        parallel_tool_calls=parallel if isinstance(parallel, bool) else None,
        feedback=row.get("feedback_score"),
    )


def weight_last_answer(example: Example) -> None:
    """Train on the captured answer only: earlier assistant turns get ``weight: 0``.

    Earlier turns came from the app's history (whatever model wrote them); the last one is
    the answer that was selected (the teacher's, with its feedback).
    """
    for message in example.prompt:
        if message["role"] == "assistant":
            message["weight"] = 0
    example.answer["weight"] = 1
