"""OpenAI chat completions request -> Anthropic Messages request: ``openai_chat_to_anthropic``.

The rules (what is mapped, dropped and refused, and why) are in ``dialects.requests``.
"""

from __future__ import annotations

from typing import Any

import orjson

from dialects.errors import Untranslatable
from dialects.fields import integer, number

# ---------------------------------------------------------------- OpenAI -> Anthropic

_OPENAI_DROPPED = frozenset(
    {
        "model",
        "store",
        "metadata",
        "service_tier",
        "prediction",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "stream_options",
        "seed",
        "safety_identifier",  # read below when there is no `user`
    }
)
_OPENAI_REFUSED = {
    "functions": "the legacy functions API is not translated; use tools",
    "function_call": "the legacy functions API is not translated; use tool_choice",
    "verbosity": "Anthropic Messages has no verbosity setting",
    "web_search_options": "web search is not available through Anthropic Messages here",
    "moderation": "Anthropic Messages has no moderation option",
    "audio": "Anthropic Messages cannot answer with audio",
    "logit_bias": "Anthropic Messages has no logit bias",
}
_OPENAI_HANDLED = frozenset(
    {
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "reasoning_effort",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "user",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "n",
        "logprobs",
        "top_logprobs",
        "modalities",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
    }
)
_THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}
_MIN_THINKING_BUDGET = 1024


def openai_chat_to_anthropic(
    body: dict[str, Any], *, model: str, default_max_tokens: int
) -> dict[str, Any]:
    """An OpenAI chat completions request as an Anthropic Messages request for ``model``."""
    if not isinstance(body, dict):
        raise Untranslatable("body", "the request body must be a JSON object")
    for key, value in body.items():
        if value is None or key in _OPENAI_DROPPED or key in _OPENAI_HANDLED:
            continue
        refused = _OPENAI_REFUSED.get(key)
        if refused is not None:
            if value in ([], {}) and key in ("functions", "logit_bias"):
                continue  # an empty list of functions, an empty logit_bias: nothing asked
            raise Untranslatable(key, refused)
        raise Untranslatable(key, "this field has no equivalent in Anthropic Messages")

    _refuse_unanswerable(body)
    system, messages = _openai_messages(body.get("messages"))
    out: dict[str, Any] = {"model": model}

    limit = _openai_max_tokens(body)
    effort = body.get("reasoning_effort")
    budget = 0
    if effort is not None and effort != "none":
        if not isinstance(effort, str) or effort not in _THINKING_BUDGETS:
            raise Untranslatable(
                "reasoning_effort", f"unknown reasoning effort {effort!r} (low, medium or high)"
            )
        budget = _THINKING_BUDGETS[effort]
        if limit is not None:
            budget = min(budget, limit - 1)
            if budget < _MIN_THINKING_BUDGET:
                raise Untranslatable(
                    "reasoning_effort",
                    f"Anthropic thinking needs a budget of at least {_MIN_THINKING_BUDGET} "
                    "tokens below max_tokens; raise max_completion_tokens or drop "
                    "reasoning_effort",
                )
    if limit is None:
        limit = default_max_tokens + budget
    out["max_tokens"] = limit
    out["messages"] = messages
    if system is not None:
        out["system"] = system
    if budget:
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}

    temperature = body.get("temperature")
    if temperature is not None:
        number(temperature, "temperature")
        if temperature > 1:
            raise Untranslatable(
                "temperature",
                f"Anthropic's temperature ranges from 0 to 1; {temperature} cannot be sent",
            )
        out["temperature"] = temperature
    top_p = body.get("top_p")
    if top_p is not None:
        out["top_p"] = number(top_p, "top_p")
    top_k = body.get("top_k")
    if top_k is not None:
        out["top_k"] = integer(top_k, "top_k")
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            out["stop_sequences"] = [stop]
        elif isinstance(stop, list) and all(isinstance(item, str) for item in stop):
            if stop:
                out["stop_sequences"] = list(stop)
        else:
            raise Untranslatable("stop", "must be a string or a list of strings")
    user = body.get("user")
    if user is None:
        user = body.get("safety_identifier")
    if user is not None:
        if not isinstance(user, str):
            raise Untranslatable("user", "must be a string")
        out["metadata"] = {"user_id": user}
    stream = body.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise Untranslatable("stream", "must be a boolean")
        out["stream"] = stream

    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise Untranslatable("tools", "must be a list")
        if tools:
            out["tools"] = [_openai_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    choice = _openai_tool_choice(body.get("tool_choice"))
    parallel = body.get("parallel_tool_calls")
    if parallel is False and "tools" in out and (choice is None or choice["type"] != "none"):
        choice = dict(choice) if choice is not None else {"type": "auto"}
        choice["disable_parallel_tool_use"] = True
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _refuse_unanswerable(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise Untranslatable("n", "Anthropic Messages answers with one choice only")
    if body.get("logprobs"):
        raise Untranslatable("logprobs", "Anthropic Messages does not return log probabilities")
    if body.get("top_logprobs"):
        raise Untranslatable("top_logprobs", "Anthropic Messages does not return log probabilities")
    modalities = body.get("modalities")
    if modalities is not None and (
        not isinstance(modalities, list) or any(m != "text" for m in modalities)
    ):
        raise Untranslatable("modalities", "Anthropic Messages answers with text only")
    for penalty in ("presence_penalty", "frequency_penalty"):
        value = body.get(penalty)
        if value is not None and value != 0:
            raise Untranslatable(penalty, "Anthropic Messages has no repetition penalties")
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict) or response_format.get("type") != "text"
    ):
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        raise Untranslatable(
            "response_format",
            f"response_format {kind!r} is not translated to Anthropic Messages; only 'text' is",
        )


def _openai_max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None:
            value = integer(value, key)
            if value < 1:
                raise Untranslatable(key, "must be at least 1")
            return value
    return None


def _openai_messages(messages: Any) -> tuple[str | list[dict[str, Any]] | None, list[Any]]:
    """(Anthropic's system, merged turns) for OpenAI's messages."""
    if not isinstance(messages, list) or not messages:
        raise Untranslatable("messages", "must be a non-empty list")
    system: list[dict[str, Any]] = []
    system_messages = 0
    plain_system: str | None = None
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        if not isinstance(message, dict):
            raise Untranslatable(path, "each message must be an object")
        role = message.get("role")
        content = message.get("content")
        if role == "system" or role == "developer":
            system_messages += 1
            if isinstance(content, str):
                plain_system = content
            system.extend(_openai_parts(content, path, system_only=True))
            continue
        if role == "user":
            blocks = _openai_parts(content, path)
        elif role == "assistant":
            blocks = _openai_assistant(message, path)
            if not blocks:
                continue
        elif role == "tool":
            role = "user"
            blocks = [_openai_tool_result(message, path)]
        elif role == "function":
            raise Untranslatable(
                f"{path}.role", "the legacy function role is not translated; use tool"
            )
        else:
            raise Untranslatable(f"{path}.role", f"unknown role {role!r}")
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        content = turn["content"]
        if not content:
            turn["content"] = ""  # Anthropic answers for an empty user message itself
        elif len(content) == 1 and content[0]["type"] == "text" and len(content[0]) == 2:
            turn["content"] = content[0]["text"]
    if system_messages == 1 and plain_system:
        return plain_system, turns
    return system or None, turns


def _openai_parts(content: Any, path: str, *, system_only: bool = False) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if content is None:
        return []
    if not isinstance(content, list):
        raise Untranslatable(f"{path}.content", "must be a string or a list of content parts")
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        part_path = f"{path}.content[{j}]"
        if not isinstance(part, dict):
            raise Untranslatable(part_path, "each content part must be an object")
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise Untranslatable(f"{part_path}.text", "must be a string")
            if text:
                blocks.append({"type": "text", "text": text})
            continue
        if system_only:
            raise Untranslatable(
                f"{part_path}.type", f"a system message can only hold text, not {kind!r}"
            )
        if kind == "image_url":
            blocks.append(_openai_image(part.get("image_url"), f"{part_path}.image_url"))
        elif kind == "file":
            blocks.append(_openai_file(part.get("file"), f"{part_path}.file"))
        elif kind == "refusal":
            refusal = part.get("refusal")
            if isinstance(refusal, str) and refusal:
                blocks.append({"type": "text", "text": refusal})
        else:
            raise Untranslatable(
                f"{part_path}.type", f"content part {kind!r} has no equivalent in Anthropic"
            )
    return blocks


def _openai_image(image: Any, path: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise Untranslatable(f"{path}.url", "must be a URL")
    if url.startswith("data:"):
        media_type, data = _split_data_url(url, f"{path}.url")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise Untranslatable(f"{path}.url", "must be an http(s) or data: URL")


def _openai_file(file: Any, path: str) -> dict[str, Any]:
    if not isinstance(file, dict):
        raise Untranslatable(path, "must be an object")
    if file.get("file_id") is not None:
        raise Untranslatable(
            f"{path}.file_id", "files uploaded to OpenAI cannot be read by Anthropic"
        )
    data = file.get("file_data")
    if not isinstance(data, str) or not data:
        raise Untranslatable(f"{path}.file_data", "must be a base64 PDF or data: URL")
    if data.startswith("data:"):
        media_type, data = _split_data_url(data, f"{path}.file_data")
    else:
        media_type = "application/pdf"
    if media_type != "application/pdf":
        raise Untranslatable(
            f"{path}.file_data", f"Anthropic reads PDF documents, not {media_type!r}"
        )
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": data},
    }
    filename = file.get("filename")
    if isinstance(filename, str) and filename:
        block["title"] = filename
    return block


def _split_data_url(url: str, path: str) -> tuple[str, str]:
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise Untranslatable(path, "a data: URL must be base64 (data:<type>;base64,<data>)")
    media_type = header[5:-7]
    if ";" in media_type:  # data:image/png;charset=x;base64
        media_type = media_type.split(";", 1)[0]
    return media_type, data


def _openai_assistant(message: dict[str, Any], path: str) -> list[dict[str, Any]]:
    if message.get("function_call") is not None:
        raise Untranslatable(
            f"{path}.function_call", "the legacy functions API is not translated; use tool_calls"
        )
    if message.get("audio") is not None:
        raise Untranslatable(f"{path}.audio", "Anthropic cannot take an audio answer back")
    blocks = _openai_parts(message.get("content"), path)
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        blocks.append({"type": "text", "text": refusal})
    tool_calls = message.get("tool_calls")
    if tool_calls is None:
        return blocks
    if not isinstance(tool_calls, list):
        raise Untranslatable(f"{path}.tool_calls", "must be a list")
    for k, call in enumerate(tool_calls):
        call_path = f"{path}.tool_calls[{k}]"
        if not isinstance(call, dict):
            raise Untranslatable(call_path, "must be an object")
        if call.get("type", "function") != "function":
            raise Untranslatable(
                f"{call_path}.type", f"tool call type {call.get('type')!r} is not translated"
            )
        function = call.get("function")
        if not isinstance(function, dict):
            raise Untranslatable(f"{call_path}.function", "must be an object")
        call_id, name = call.get("id"), function.get("name")
        if not isinstance(call_id, str) or not call_id:
            raise Untranslatable(f"{call_path}.id", "must be a non-empty string")
        if not isinstance(name, str) or not name:
            raise Untranslatable(f"{call_path}.function.name", "must be a non-empty string")
        blocks.append(
            {
                "type": "tool_use",
                "id": call_id,
                "name": name,
                "input": _arguments(function.get("arguments"), f"{call_path}.function.arguments"),
            }
        )
    return blocks


def _arguments(arguments: Any, path: str) -> dict[str, Any]:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        raise Untranslatable(path, "must be a JSON string")
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise Untranslatable(
            path, "is not valid JSON; Anthropic needs tool input as a JSON object"
        ) from None
    if not isinstance(parsed, dict):
        raise Untranslatable(path, "must encode a JSON object; Anthropic tool input is an object")
    return parsed


def _openai_tool_result(message: dict[str, Any], path: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise Untranslatable(f"{path}.tool_call_id", "must be a non-empty string")
    content = message.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if isinstance(content, str):
        block["content"] = content
    elif content is not None:
        parts = _openai_parts(content, path)
        if not parts:
            block["content"] = ""
        elif len(parts) == 1 and parts[0]["type"] == "text":
            block["content"] = parts[0]["text"]
        else:
            block["content"] = parts
    else:
        block["content"] = ""
    return block


def _openai_tool(tool: Any, path: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise Untranslatable(path, "must be an object")
    kind = tool.get("type", "function")
    if kind != "function":
        raise Untranslatable(f"{path}.type", f"tool type {kind!r} has no equivalent in Anthropic")
    function = tool.get("function")
    if not isinstance(function, dict):
        raise Untranslatable(f"{path}.function", "must be an object")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise Untranslatable(f"{path}.function.name", "must be a non-empty string")
    parameters = function.get("parameters")
    if parameters is None or parameters == {}:
        parameters = {"type": "object", "properties": {}}
    elif not isinstance(parameters, dict):
        raise Untranslatable(f"{path}.function.parameters", "must be a JSON schema object")
    out: dict[str, Any] = {"name": name}
    description = function.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise Untranslatable(f"{path}.function.description", "must be a string")
        out["description"] = description
    out["input_schema"] = parameters
    if function.get("strict") is True:
        out["strict"] = True
    return out


def _openai_tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return {"type": "tool", "name": name}
        raise Untranslatable("tool_choice.function.name", "must be a non-empty string")
    raise Untranslatable(
        "tool_choice", "only auto, required, none and a named function are translated"
    )
