"""Anthropic Messages request -> OpenAI chat completions request: ``anthropic_to_openai_chat``.

The rules (what is mapped, dropped and refused, and why) are in ``dialects.requests``.
"""

from __future__ import annotations

from typing import Any

import orjson

from dialects.errors import Untranslatable
from dialects.fields import integer, number

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
        out["max_tokens"] = integer(max_tokens, "max_tokens")
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise Untranslatable("stop_sequences", "must be a list of strings")
        if stops:
            out["stop"] = list(stops)
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None:
            out[key] = number(value, key)
    top_k = body.get("top_k")
    if top_k is not None:
        out["top_k"] = integer(top_k, "top_k")
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
