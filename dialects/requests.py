"""Requests between OpenAI chat completions and Anthropic Messages.

Both translators read the parsed body and build a new dict; they never mutate their input.
Every field is looked at: a field that changes the answer and has no equivalent raises
``Untranslatable`` naming the client's path to it (the gateway answers 400), and so does an
unknown field (an upstream of the other dialect would refuse it or, worse, ignore it).
``null`` values count as absent, as both APIs treat them.

OpenAI -> Anthropic
    system and developer messages, wherever they stand, become ``system`` (Anthropic has no
    mid-conversation system turn): a string for one plain message, text blocks otherwise.
    Consecutive messages of one role are merged into one turn (tool results with the user
    turn after them), since Anthropic wants alternating turns; an assistant message with no
    text and no tool calls is left out (Anthropic refuses empty content, and it said nothing).
    Images: ``data:`` URLs become base64 sources, http(s) URLs url sources; a ``file`` part with
    ``file_data`` (PDF) becomes a base64 document. Tool call arguments must be a JSON object
    ("" counts as {}). ``max_completion_tokens`` (else ``max_tokens``, else the provider's
    default) becomes ``max_tokens``. ``reasoning_effort`` becomes ``thinking`` with a budget of
    1024 (minimal, low), 4096 (medium), 16384 (high) or 32768 (xhigh) tokens ("none": no
    thinking); Anthropic counts thinking inside ``max_tokens`` and wants the budget below it,
    so without a client limit ``max_tokens`` is the default plus the budget, and under a
    client limit the budget is cut to fit (below Anthropic's minimum of 1024: Untranslatable).
    ``user`` (else ``safety_identifier``) becomes ``metadata.user_id``; ``top_k`` (an extra
    vLLM and others accept) is passed on.
    Dropped, because they do not change the answer: ``store``, ``metadata`` (stored-completion
    tags; the gateway reads them as tags before translating), ``service_tier``, ``prediction``
    (a latency hint), ``prompt_cache_key``/``prompt_cache_options``/``prompt_cache_retention``
    (Anthropic caches by its own rules), ``stream_options`` (Anthropic streams always carry
    usage), ``seed`` (best-effort determinism on OpenAI's side only; dropping it does not change
    which answers are likely), a content part's ``detail`` and a message's ``name`` (Anthropic
    has no participant names), an assistant message's ``reasoning_content`` (DeepSeek-style
    history: Anthropic takes back only thinking it signed itself). For the same reason a tool
    loop with ``reasoning_effort`` gets Anthropic's own 400 on the second turn (it wants the
    previous turn's signed thinking blocks, which an OpenAI client cannot hold).
    Refused: ``n`` > 1, ``logprobs``, ``top_logprobs``, ``audio``, non-text ``modalities``,
    ``logit_bias``, non-zero ``presence_penalty``/``frequency_penalty``, ``response_format``
    other than text, ``functions``/``function_call`` (the legacy API: its answer shape
    differs), ``verbosity``, ``web_search_options``, ``moderation``, ``temperature`` over 1
    (Anthropic's range is 0..1), audio input, ``file_id`` references, tools other than
    functions, ``tool_choice`` ``allowed_tools``.

Anthropic -> OpenAI
    ``system`` becomes one system message first. Text and images (base64 -> ``data:`` URL,
    an http(s) url -> url: no other scheme, which an OpenAI-format server might read from its
    own disk); documents: a base64 PDF becomes a ``file`` part (title -> filename), a text
    source a text part (its title on the first line); ``tool_use`` blocks become the assistant's
    ``tool_calls`` (input dumped compactly); each ``tool_result`` becomes a ``tool`` message,
    placed before the rest of its user turn as OpenAI requires; its text blocks are kept as text
    parts, and ``is_error: true`` (which OpenAI cannot say) is kept as an "Error: " prefix on the
    text so the model still learns the call failed. Thinking and redacted thinking blocks in the
    history are dropped: OpenAI chat has no place for them and models do not read back earlier
    turns' reasoning. ``max_tokens`` stays ``max_tokens`` (what vLLM, Together, Fireworks and
    OpenAI's non-reasoning models read; a provider needing ``max_completion_tokens`` renames
    it). ``stop_sequences`` -> ``stop``, ``metadata.user_id`` -> ``user``, ``top_k`` is passed
    on as an extra field (vLLM and others honour it; OpenAI itself would refuse it), ``stream``
    asks for ``stream_options.include_usage`` so usage is known. ``thinking`` enabled becomes
    ``reasoning_effort`` (budget <= 2048 low, <= 8192 medium, else high); disabled or adaptive
    thinking sends none (the upstream model decides, as adaptive asks). ``output_config.effort``
    low/medium/high becomes ``reasoning_effort`` too.
    Dropped, because they do not change the answer: ``cache_control`` (top level and on blocks
    and tools), ``service_tier``, ``speed``, ``diagnostics``, citations already in history.
    Refused: server tools (web search, code execution, ...), ``container``, ``mcp_servers``,
    ``context_management``, ``inference_geo`` (a residency promise we cannot keep upstream),
    ``output_config.format``, images by ``file_id``, image ``transformations``, URL or content
    documents, documents with citations enabled or ``context``, search results, images or
    documents inside tool results (OpenAI tool messages carry text only), server tool blocks.
    A final assistant message (Anthropic's prefill) is sent as an ordinary assistant message.
"""

from __future__ import annotations

from typing import Any

import orjson

from dialects.errors import Untranslatable

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
        _number(temperature, "temperature")
        if temperature > 1:
            raise Untranslatable(
                "temperature",
                f"Anthropic's temperature ranges from 0 to 1; {temperature} cannot be sent",
            )
        out["temperature"] = temperature
    top_p = body.get("top_p")
    if top_p is not None:
        out["top_p"] = _number(top_p, "top_p")
    top_k = body.get("top_k")
    if top_k is not None:
        out["top_k"] = _integer(top_k, "top_k")
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
            value = _integer(value, key)
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


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Untranslatable(path, "must be a number")
    return value


def _integer(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Untranslatable(path, "must be an integer")
    return value


# ---------------------------------------------------------------- Anthropic -> OpenAI

_ANTHROPIC_DROPPED = frozenset({"model", "cache_control", "service_tier", "speed", "diagnostics"})
_ANTHROPIC_REFUSED = {
    "container": "containers belong to Anthropic's server tools",
    "mcp_servers": "MCP servers are run by Anthropic's API, not by an OpenAI-format upstream",
    "context_management": "context management is done by Anthropic's API",
    "inference_geo": "an inference region cannot be promised for an OpenAI-format upstream",
}
_ANTHROPIC_HANDLED = frozenset(
    {
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
    }
)
_EFFORTS = frozenset({"low", "medium", "high"})


def anthropic_to_openai_chat(body: dict[str, Any], *, model: str) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat completions request for ``model``."""
    if not isinstance(body, dict):
        raise Untranslatable("body", "the request body must be a JSON object")
    for key, value in body.items():
        if value is None or key in _ANTHROPIC_DROPPED or key in _ANTHROPIC_HANDLED:
            continue
        refused = _ANTHROPIC_REFUSED.get(key)
        if refused is not None:
            if value in ([], {}):
                continue
            raise Untranslatable(key, refused)
        raise Untranslatable(key, "this field has no equivalent in OpenAI chat completions")

    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        system_message = _anthropic_system(system)
        if system_message is not None:
            messages.append(system_message)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise Untranslatable("messages", "must be a non-empty list")
    for i, message in enumerate(raw):
        _anthropic_message(message, f"messages[{i}]", messages)

    out: dict[str, Any] = {"model": model, "messages": messages}
    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        out["max_tokens"] = _integer(max_tokens, "max_tokens")
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise Untranslatable("stop_sequences", "must be a list of strings")
        if stops:
            out["stop"] = list(stops)
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None:
            out[key] = _number(value, key)
    top_k = body.get("top_k")
    if top_k is not None:
        out["top_k"] = _integer(top_k, "top_k")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise Untranslatable("metadata", "must be an object")
        user = metadata.get("user_id")
        if isinstance(user, str) and user:
            out["user"] = user
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    elif body.get("stream") is False:
        out["stream"] = False

    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise Untranslatable("tools", "must be a list")
        if tools:
            out["tools"] = [_anthropic_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is not None:
        _anthropic_tool_choice(choice, out)

    effort = _anthropic_effort(body.get("thinking"), body.get("output_config"))
    if effort is not None:
        out["reasoning_effort"] = effort
    return out


def _anthropic_system(system: Any) -> dict[str, Any] | None:
    if isinstance(system, str):
        return {"role": "system", "content": system} if system else None
    if not isinstance(system, list):
        raise Untranslatable("system", "must be a string or a list of text blocks")
    parts = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, dict) else None
            raise Untranslatable(f"system[{i}].type", f"system blocks are text, not {kind!r}")
        text = block.get("text")
        if not isinstance(text, str):
            raise Untranslatable(f"system[{i}].text", "must be a string")
        parts.append({"type": "text", "text": text})
    if not parts:
        return None
    if len(parts) == 1:
        return {"role": "system", "content": parts[0]["text"]}
    return {"role": "system", "content": parts}


def _anthropic_message(message: Any, path: str, out: list[dict[str, Any]]) -> None:
    if not isinstance(message, dict):
        raise Untranslatable(path, "each message must be an object")
    role = message.get("role")
    content = message.get("content")
    if role not in ("user", "assistant"):
        raise Untranslatable(f"{path}.role", f"role must be user or assistant, not {role!r}")
    if isinstance(content, str):
        out.append({"role": role, "content": content})
        return
    if not isinstance(content, list):
        raise Untranslatable(f"{path}.content", "must be a string or a list of content blocks")
    if role == "assistant":
        out.append(_anthropic_assistant(content, path))
        return
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        block_path = f"{path}.content[{j}]"
        if not isinstance(block, dict):
            raise Untranslatable(block_path, "each content block must be an object")
        kind = block.get("type")
        if kind == "tool_result":
            out.append(_anthropic_tool_result(block, block_path))
        else:
            part = _anthropic_part(block, block_path)
            if part is not None:
                parts.append(part)
    if parts:
        if len(parts) == 1 and parts[0]["type"] == "text":
            out.append({"role": "user", "content": parts[0]["text"]})
        else:
            out.append({"role": "user", "content": parts})


def _anthropic_part(block: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The OpenAI content part for a user block (None for one with nothing to say)."""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise Untranslatable(f"{path}.text", "must be a string")
        return {"type": "text", "text": text}
    if kind == "image":
        return _anthropic_image(block, path)
    if kind == "document":
        return _anthropic_document(block, path)
    if kind in ("thinking", "redacted_thinking"):
        return None
    raise Untranslatable(f"{path}.type", f"content block {kind!r} has no equivalent in OpenAI chat")


def _anthropic_image(block: dict[str, Any], path: str) -> dict[str, Any]:
    if block.get("transformations") is not None:
        raise Untranslatable(f"{path}.transformations", "OpenAI chat cannot transform images first")
    source = block.get("source")
    if not isinstance(source, dict):
        raise Untranslatable(f"{path}.source", "must be an object")
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise Untranslatable(f"{path}.source", "needs media_type and data strings")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url:
            raise Untranslatable(f"{path}.source.url", "must be a URL")
        if not url[:8].lower().startswith(("https://", "http://")):
            # Anthropic fetches http(s) only; an OpenAI-format server (vLLM...) reads file: URLs
            # from its own disk.
            raise Untranslatable(f"{path}.source.url", "must be an http(s) URL")
        return {"type": "image_url", "image_url": {"url": url}}
    raise Untranslatable(
        f"{path}.source.type", f"image source {kind!r} cannot be sent to OpenAI chat"
    )


def _anthropic_document(block: dict[str, Any], path: str) -> dict[str, Any]:
    citations = block.get("citations")
    if isinstance(citations, dict) and citations.get("enabled"):
        raise Untranslatable(f"{path}.citations", "OpenAI chat cannot answer with citations")
    if block.get("context"):
        raise Untranslatable(f"{path}.context", "OpenAI chat has no document context")
    source = block.get("source")
    if not isinstance(source, dict):
        raise Untranslatable(f"{path}.source", "must be an object")
    kind = source.get("type")
    title = block.get("title")
    if kind == "base64" and source.get("media_type") == "application/pdf":
        data = source.get("data")
        if not isinstance(data, str):
            raise Untranslatable(f"{path}.source.data", "must be a base64 string")
        return {
            "type": "file",
            "file": {
                "filename": title if isinstance(title, str) and title else "document.pdf",
                "file_data": f"data:application/pdf;base64,{data}",
            },
        }
    if kind == "text":
        data = source.get("data")
        if not isinstance(data, str):
            raise Untranslatable(f"{path}.source.data", "must be a string")
        text = f"{title}\n\n{data}" if isinstance(title, str) and title else data
        return {"type": "text", "text": text}
    raise Untranslatable(
        f"{path}.source.type",
        f"document source {kind!r} cannot be sent to OpenAI chat (base64 PDF and text can)",
    )


def _anthropic_assistant(content: list[Any], path: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        block_path = f"{path}.content[{j}]"
        if not isinstance(block, dict):
            raise Untranslatable(block_path, "each content block must be an object")
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise Untranslatable(f"{block_path}.text", "must be a string")
            texts.append(text)
        elif kind == "tool_use":
            call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
            if not isinstance(call_id, str) or not call_id:
                raise Untranslatable(f"{block_path}.id", "must be a non-empty string")
            if not isinstance(name, str) or not name:
                raise Untranslatable(f"{block_path}.name", "must be a non-empty string")
            if arguments is None:
                arguments = {}
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise Untranslatable(
                f"{block_path}.type", f"content block {kind!r} has no equivalent in OpenAI chat"
            )
    message: dict[str, Any] = {"role": "assistant"}
    if len(texts) == 1:
        message["content"] = texts[0]
    elif texts:
        message["content"] = [{"type": "text", "text": text} for text in texts]
    else:
        message["content"] = None if calls else ""
    if calls:
        message["tool_calls"] = calls
    return message


def _anthropic_tool_result(block: dict[str, Any], path: str) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise Untranslatable(f"{path}.tool_use_id", "must be a non-empty string")
    content = block.get("content")
    error = block.get("is_error") is True
    if content is None:
        content = ""
    if isinstance(content, str):
        result: Any = f"Error: {content}" if error else content
    elif isinstance(content, list):
        parts = []
        for k, item in enumerate(content):
            item_path = f"{path}.content[{k}]"
            kind = item.get("type") if isinstance(item, dict) else None
            if kind != "text":
                raise Untranslatable(
                    f"{item_path}.type",
                    f"an OpenAI tool message carries text only, not {kind!r}",
                )
            text = item.get("text")
            if not isinstance(text, str):
                raise Untranslatable(f"{item_path}.text", "must be a string")
            parts.append({"type": "text", "text": text})
        if error:
            parts.insert(0, {"type": "text", "text": "Error:"})
        result = (parts[0]["text"] if len(parts) == 1 else parts) if parts else ""
    else:
        raise Untranslatable(f"{path}.content", "must be a string or a list of blocks")
    return {"role": "tool", "tool_call_id": call_id, "content": result}


def _anthropic_tool(tool: Any, path: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise Untranslatable(path, "must be an object")
    kind = tool.get("type")
    if kind is not None and kind != "custom":
        raise Untranslatable(
            f"{path}.type", f"server tool {kind!r} runs on Anthropic's side and is not translated"
        )
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise Untranslatable(f"{path}.name", "must be a non-empty string")
    schema = tool.get("input_schema")
    if not isinstance(schema, dict):
        raise Untranslatable(f"{path}.input_schema", "must be a JSON schema object")
    function: dict[str, Any] = {"name": name}
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise Untranslatable(f"{path}.description", "must be a string")
        function["description"] = description
    function["parameters"] = schema
    if tool.get("strict") is True:
        function["strict"] = True
    return {"type": "function", "function": function}


def _anthropic_tool_choice(choice: Any, out: dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise Untranslatable("tool_choice.name", "must be a non-empty string")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise Untranslatable("tool_choice.type", f"unknown tool choice {kind!r}")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False


def _anthropic_effort(thinking: Any, output_config: Any) -> str | None:
    effort: str | None = None
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if isinstance(budget, bool) or not isinstance(budget, int):
                raise Untranslatable("thinking.budget_tokens", "must be an integer")
            effort = "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"
        elif kind not in ("disabled", "adaptive"):
            raise Untranslatable("thinking.type", f"unknown thinking type {kind!r}")
    if output_config is not None:
        if not isinstance(output_config, dict):
            raise Untranslatable("output_config", "must be an object")
        for key, value in output_config.items():
            if value is None:
                continue
            if key == "effort":
                if not isinstance(value, str) or value not in _EFFORTS:
                    raise Untranslatable(
                        "output_config.effort",
                        f"effort {value!r} has no OpenAI reasoning_effort (low, medium, high)",
                    )
                effort = value
            elif key == "format":
                raise Untranslatable(
                    "output_config.format", "structured output formats are not translated"
                )
            else:
                raise Untranslatable(f"output_config.{key}", "has no equivalent in OpenAI chat")
    return effort
