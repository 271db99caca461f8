"""A captured call as a fine-tuning example: the prompt's messages plus the answer.

Chat Completions calls: the request's ``messages`` are kept with only the keys OpenAI's
fine-tuning format knows (role, content, name, tool_calls, tool_call_id); ``developer``
messages become ``system`` ones (the format has no developer role); content given as text
parts is joined into one string. The answer is the first choice's message: its text, or its
tool calls with ``content`` null. The request's ``tools`` and ``parallel_tool_calls`` go along.

Responses API calls (``endpoint`` "responses") become the same chat example: ``instructions``
a leading system message, ``input`` (a string, or message, ``function_call`` and
``function_call_output`` items) the messages, function tools reshaped to the chat format, and
the answer the response's ``output`` (its text, its function calls as tool calls). A prompt
that lives partly at the provider (``previous_response_id``, a stored ``prompt`` or a
``conversation``) or that uses built-in tools cannot be rebuilt, and is dropped.

Calls in Anthropic's dialect become the same chat example, from the normalised chat view the
capture stores with them (``normalized``: ``{"request": <chat request>, "response":
<chat.completion>}``): Anthropic Messages calls (``endpoint`` "messages", whatever answered
them) and chat calls answered by an Anthropic upstream (``upstream_api`` "anthropic", whose
stored response is an Anthropic Message). From there they take the chat path above: the
same messages, tools, tool calls and system prompts as the OpenAI call that says the same. A
side already in OpenAI's format may be left out of the view (None): the stored body is used.
Such a call without a view is dropped ("no normalized view"), and one whose view says it failed
(an ``error``, or a side missing) is dropped too ("normalization failed").

A call that cannot make a sound example is dropped with a reason the export reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]

KEPT_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")
ROLES = {"system", "user", "assistant", "tool"}
CHAT_TEXT_PARTS = ("text", "input_text")
RESPONSES_TEXT_PARTS = ("text", "input_text", "output_text")
RESPONSES_ROLES = {"user", "system", "developer", "assistant"}


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


def _text(content: Any, kinds: tuple[str, ...] = CHAT_TEXT_PARTS) -> str | None:
    """A message content as one string; None when it is absent; Dropped for non-text parts.

    ``kinds``: the part types that are text.
    """
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in kinds:
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
    if row.get("endpoint") == "responses":
        return example_from_responses_call(row)
    request, response = chat_parts(row)
    return _chat_example(row, request, response)


def _anthropic_sides(row: dict[str, Any]) -> tuple[bool, bool]:
    """Whether the stored request and the stored response are in Anthropic's dialect."""
    response = row.get("response")
    return (
        row.get("endpoint") == "messages" or row.get("dialect") == "anthropic",
        row.get("upstream_api") == "anthropic"
        or (isinstance(response, dict) and response.get("type") == "message"),
    )


def chat_parts(row: dict[str, Any]) -> tuple[Any, Any]:
    """The chat request and ``chat.completion`` of a stored chat-like call: its own bodies, or
    for a call in Anthropic's dialect, its normalised view's. Dropped when the view is missing
    or failed."""
    anthropic_request, anthropic_response = _anthropic_sides(row)
    if not (anthropic_request or anthropic_response):
        return row.get("request"), row.get("response")
    view = row.get("normalized")
    if not isinstance(view, dict):
        raise Dropped("no normalized view")
    if view.get("error"):
        raise Dropped("normalization failed")
    request = view.get("request")
    if request is None and not anthropic_request:
        request = row.get("request")
    response = view.get("response")
    if response is None and not anthropic_response:
        response = row.get("response")
    if response is None and row.get("response") is None:
        raise Dropped("no answer recorded")
    if not isinstance(request, dict) or not isinstance(response, dict):
        raise Dropped("normalization failed")
    return request, response


def example_from_chat_call(row: dict[str, Any]) -> Example:
    """The example a stored Chat Completions call makes (its own bodies, as stored)."""
    return _chat_example(row, row.get("request"), row.get("response"))


def _chat_example(row: dict[str, Any], request: Any, response: Any) -> Example:
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
        messages=[*prompt, answer_of(response)],
        tools=tools if isinstance(tools, list) and tools else None,
        parallel_tool_calls=parallel if isinstance(parallel, bool) else None,
        feedback=row.get("feedback_score"),
    )


# --- the Responses API ------------------------------------------------------------------------


def _kind(value: Any) -> str:
    """An item or part type for a drop reason (short, whatever was sent)."""
    return str(value)[:40]


def _responses_tool_call(item: dict[str, Any]) -> dict[str, Any]:
    """A ``function_call`` item as a chat tool call."""
    return {
        "id": item.get("call_id"),
        "type": "function",
        "function": {"name": item.get("name"), "arguments": item.get("arguments")},
    }


def _responses_tools(tools: Any) -> list[Any] | None:
    """Function tools in the chat format (Responses' are flat); Dropped for built-in tools."""
    if not isinstance(tools, list) or not tools:
        return None
    converted: list[Any] = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise Dropped("built-in tools")
        function = {
            key: tool[key]
            for key in ("name", "description", "parameters", "strict")
            if tool.get(key) is not None
        }
        converted.append({"type": "function", "function": function})
    return converted


def responses_messages(request: dict[str, Any]) -> list[Message]:
    """The chat messages of a Responses API request's ``instructions`` and ``input``."""
    messages: list[Message] = []
    instructions = request.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            messages.append({"role": "system", "content": instructions})
    elif instructions is not None:
        raise Dropped("malformed instructions")
    given = request.get("input")
    if isinstance(given, str):
        if not given:
            raise Dropped("no messages")
        messages.append({"role": "user", "content": given})
        return messages
    if not isinstance(given, list) or not given:
        raise Dropped("no messages")
    for item in given:
        if not isinstance(item, dict):
            raise Dropped("malformed message")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in RESPONSES_ROLES:
                raise Dropped("unsupported role")
            messages.append(
                {
                    "role": "system" if role == "developer" else role,
                    "content": _text(item.get("content"), RESPONSES_TEXT_PARTS),
                }
            )
        elif kind == "function_call":
            last = messages[-1] if messages else None
            call = _responses_tool_call(item)
            if last is not None and last["role"] == "assistant":
                # one assistant turn: its text and its calls, or several calls in a row
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": _text(item.get("output"), RESPONSES_TEXT_PARTS),
                }
            )
        elif kind != "reasoning":
            raise Dropped(f"unsupported input item ({_kind(kind)})")
    return messages


def responses_answer_of(response: Any) -> Message:
    """The assistant message of a Responses API ``response`` object's ``output``."""
    if not isinstance(response, dict):
        raise Dropped("no answer recorded")
    if response.get("status", "completed") != "completed":
        raise Dropped("incomplete response")
    output = response.get("output")
    if not isinstance(output, list) or not output:
        raise Dropped("no answer recorded")
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for item in output:
        if not isinstance(item, dict):
            raise Dropped("no answer recorded")
        kind = item.get("type")
        if kind == "message":
            content = item.get("content")
            if isinstance(content, str):
                texts.append(content)
                continue
            for part in content if isinstance(content, list) else ():
                part_kind = part.get("type") if isinstance(part, dict) else None
                if part_kind == "refusal":
                    raise Dropped("refusal")
                if part_kind != "output_text":
                    raise Dropped("non-text content")
                texts.append(str(part.get("text") or ""))
        elif kind == "function_call":
            tool_calls.append(_responses_tool_call(item))
        elif kind != "reasoning":
            raise Dropped(f"unsupported output item ({_kind(kind)})")
    text = "".join(texts)  # as the SDK's ``response.output_text``
    answer: Message = {"role": "assistant", "content": text or None}
    if tool_calls:
        answer["tool_calls"] = tool_calls
    elif not text:
        raise Dropped("empty answer")
    return answer


def example_from_responses_call(row: dict[str, Any]) -> Example:
    """The example a stored Responses API call makes."""
    request = row.get("request")
    if not isinstance(request, dict):
        raise Dropped("request not recorded")
    if request.get("previous_response_id"):
        raise Dropped("previous_response_id")
    if request.get("conversation"):
        raise Dropped("conversation")
    if request.get("prompt"):
        raise Dropped("stored prompt")
    tools = _responses_tools(request.get("tools"))
    prompt = responses_messages(request)
    parallel = request.get("parallel_tool_calls")
    return Example(
        call_id=str(row.get("id")),
        messages=[*prompt, responses_answer_of(row.get("response"))],
        tools=tools,
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
