"""A Messages API request, checked the way Anthropic checks it, and its input tokens.

``parse(body, count_only)`` returns a ``MessagesRequest`` or raises the 400 Anthropic gives,
its message naming the field by its path (``messages.0.content.1.source.media_type: ...``):
required fields, types, ranges, unknown fields ("Extra inputs are not permitted"), block types
by their tag, and the rules across fields Anthropic enforces: non-empty content (except a final
assistant turn), text blocks non-empty, no trailing whitespace ending a final assistant turn,
every ``tool_use`` answered by a ``tool_result`` in the next message and every ``tool_result``
answering a ``tool_use`` of the previous one, unique tool names, a forced tool that exists,
thinking's budget (>= 1024, < max_tokens) and what it rules out (a temperature other than 1,
top_k, top_p under 0.95, forced tool use), at most 4 cache breakpoints.

Input tokens (see ``segments``) follow the simulator's token rule: tools by their JSON, system
and text blocks by their text, 3 per message and 3 for the reply, an image 1,000, a PDF 1,500,
tool calls by name and input, tool results by their content; thinking blocks of earlier turns
count nothing (Anthropic strips them from the context).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from simulator.anthropic_checks import (
    array,
    boolean,
    cache_ttl,
    check_block,
    check_cache_control,
    fail,
    integer,
    keys,
    number,
    obj,
    string,
    tagged,
)
from simulator.anthropic_wire import Invalid
from simulator.tokens import PER_MESSAGE, PER_REPLY, count_tokens

IMAGE_TOKENS = 1_000
PDF_TOKENS = 1_500
MIN_THINKING_BUDGET = 1_024
MAX_BREAKPOINTS = 4
MAX_USER_ID = 256
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
SERVER_TOOL = re.compile(r"[a-z][a-z_]*_\d{8}|mcp_toolset")
"""Anthropic's own tools (server and client tools) are typed by a name and a date."""

MESSAGE_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
        "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
        "container", "mcp_servers", "context_management", "output_config", "output_format",
        "inference_geo", "speed", "cache_control", "diagnostics",
    }
)  # fmt: skip
COUNT_FIELDS = frozenset(
    {
        "model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers",
        "context_management", "output_config", "output_format", "speed", "cache_control",
    }
)  # fmt: skip
CUSTOM_TOOL_FIELDS = (
    "type", "description", "cache_control", "strict", "input_examples", "eager_input_streaming",
    "defer_loading", "allowed_callers",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Thinking:
    budget: int
    """The most tokens the thinking may take."""
    omitted: bool
    """``display: omitted``: the block's text is empty, its signature still sent."""


@dataclass(slots=True)
class Segment:
    """A stretch of the prompt: its tokens, what identifies it in a cached prefix, and the TTL
    of the cache breakpoint it ends with (None when it ends with none)."""

    tokens: int
    material: Any
    ttl: str | None = None


@dataclass(slots=True)
class MessagesRequest:
    model: str
    max_tokens: int | None
    system: list[dict[str, Any]]
    messages: list[tuple[str, list[dict[str, Any]]]]
    tools: list[dict[str, Any]]
    tool_choice: dict[str, Any] | None
    stop_sequences: list[str]
    thinking: Thinking | None
    stream: bool
    auto_cache: str | None = None
    """The TTL of a top-level ``cache_control`` (automatic caching of the last block)."""

    def custom_tools(self) -> dict[str, Any]:
        """The custom tools' input schemas by name, in the order given."""
        found: dict[str, Any] = {}
        for tool in self.tools:
            if tool.get("type", "custom") in ("custom", None):
                found.setdefault(tool["name"], tool["input_schema"])
        return found

    def segments(self) -> list[Segment]:
        """The prompt in order (tools, system, messages, the reply's priming) as segments."""
        out: list[Segment] = []
        for tool in self.tools:
            out.append(Segment(count_tokens(_dumps(_plain(tool))), _plain(tool), _ttl(tool)))
        for block in self.system:
            out.append(Segment(count_tokens(block["text"]), _plain(block), _ttl(block)))
        for role, blocks in self.messages:
            out.append(Segment(PER_MESSAGE, role))
            for block in blocks:
                out.append(Segment(block_tokens(block), _plain(block), _ttl(block)))
        if self.auto_cache is not None:
            last = next((s for s in reversed(out) if not isinstance(s.material, str)), None)
            if last is not None and last.ttl is None:
                last.ttl = self.auto_cache
        out.append(Segment(PER_REPLY, "reply"))
        return out

    def input_tokens(self) -> int:
        return sum(segment.tokens for segment in self.segments())


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _plain(block: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in block.items() if key != "cache_control"}


def _ttl(block: dict[str, Any]) -> str | None:
    control = block.get("cache_control")
    if not isinstance(control, dict):
        return None
    ttl = control.get("ttl", "5m")
    return ttl if isinstance(ttl, str) else "5m"


def content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return count_tokens(content)
    if isinstance(content, list):
        return sum(block_tokens(block) for block in content if isinstance(block, dict))
    return 0


def block_tokens(block: dict[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return count_tokens(block["text"])
    if kind == "image":
        return IMAGE_TOKENS
    if kind == "document":
        source = block["source"]
        extra = content_tokens(block.get("title")) + content_tokens(block.get("context"))
        if source["type"] == "text":
            return extra + count_tokens(source["data"])
        if source["type"] == "content":
            return extra + content_tokens(source["content"])
        return extra + PDF_TOKENS
    if kind == "tool_use":
        return count_tokens(block["name"]) + count_tokens(_dumps(block["input"]))
    if kind == "tool_result":
        return content_tokens(block.get("content"))
    if kind == "search_result":
        return content_tokens(block["content"]) + count_tokens(block["title"])
    return 0  # thinking and redacted_thinking: stripped from earlier turns


def parse(body: dict[str, Any], count_only: bool = False) -> MessagesRequest:
    """The request, checked; raises ``Invalid`` (a 400 in Anthropic's shape) at the first fault."""
    allowed = COUNT_FIELDS if count_only else MESSAGE_FIELDS
    for name in body:
        if name not in allowed:
            fail(name, "Extra inputs are not permitted")
    if "model" not in body:
        fail("model", "Field required")
    model = string(body["model"], "model")
    if not model:
        fail("model", "String should have at least 1 character")
    max_tokens: int | None = None
    if not count_only:
        if "max_tokens" not in body:
            fail("max_tokens", "Field required")
        max_tokens = integer(body["max_tokens"], "max_tokens", 1)
    if "messages" not in body:
        fail("messages", "Field required")
    messages = _messages(body["messages"])
    system = _system(body.get("system"))
    tools = _tools(body.get("tools"))
    tool_choice = _tool_choice(body.get("tool_choice"), tools)
    thinking = _thinking(body.get("thinking"), max_tokens)
    _sampling(body, thinking, tool_choice)
    metadata = body.get("metadata")
    if metadata is not None:
        keys(obj(metadata, "metadata"), "metadata", (), ("user_id",))
        user_id = metadata.get("user_id")
        if user_id is not None and len(string(user_id, "metadata.user_id")) > MAX_USER_ID:
            fail("metadata.user_id", f"String should have at most {MAX_USER_ID} characters")
    stops: list[str] = []
    if body.get("stop_sequences") is not None:
        for index, stop in enumerate(array(body["stop_sequences"], "stop_sequences")):
            path = f"stop_sequences.{index}"
            if not string(stop, path).strip():
                fail("stop_sequences", "each stop sequence must contain non-whitespace")
            stops.append(stop)
    stream = body.get("stream")
    if stream is not None:
        boolean(stream, "stream")
    service_tier = body.get("service_tier")
    if service_tier is not None and service_tier not in ("auto", "standard_only"):
        fail("service_tier", "Input should be 'auto' or 'standard_only'")
    auto_cache = None
    if body.get("cache_control") is not None:
        auto_cache = cache_ttl(body["cache_control"], "cache_control")
    request = MessagesRequest(
        model=model,
        max_tokens=max_tokens,
        system=system,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        stop_sequences=stops,
        thinking=thinking,
        stream=stream is True,
        auto_cache=auto_cache,
    )
    breakpoints = sum(segment.ttl is not None for segment in request.segments())
    if breakpoints > MAX_BREAKPOINTS:
        raise Invalid(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided."
            f" Found {breakpoints}."
        )
    return request


MESSAGE_BLOCKS = (
    "text", "image", "document", "search_result", "tool_use", "tool_result", "thinking",
    "redacted_thinking",
)  # fmt: skip
ASSISTANT_ONLY = frozenset({"tool_use", "thinking", "redacted_thinking"})
USER_ONLY = frozenset({"tool_result", "image", "document", "search_result"})


def _messages(value: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    items = array(value, "messages")
    if not items:
        fail("messages", "at least one message is required")
    parsed: list[tuple[str, list[dict[str, Any]]]] = []
    for index, item in enumerate(items):
        path = f"messages.{index}"
        message = obj(item, path)
        keys(message, path, ("role", "content"))
        role = message["role"]
        if role not in ("user", "assistant"):
            fail(f"{path}.role", "Input should be 'user' or 'assistant'")
        content = message["content"]
        blocks: list[dict[str, Any]]
        if isinstance(content, str):
            blocks = [{"type": "text", "text": content}] if content else []
        else:
            blocks = []
            for position, block in enumerate(array(content, f"{path}.content")):
                where = f"{path}.content.{position}"
                checked = check_block(block, where, MESSAGE_BLOCKS)
                kind = checked["type"]
                if role == "user" and kind in ASSISTANT_ONLY:
                    fail(where, f"`{kind}` blocks can only be in `assistant` messages")
                if role == "assistant" and kind in USER_ONLY:
                    fail(where, f"`{kind}` blocks can only be in `user` messages")
                blocks.append(checked)
        parsed.append((role, blocks))
    last = len(parsed) - 1
    for index, (role, blocks) in enumerate(parsed):
        if not blocks and not (index == last and role == "assistant"):
            fail(
                f"messages.{index}",
                "all messages must have non-empty content except for the optional final"
                " assistant message",
            )
    role, blocks = parsed[last]
    final = blocks[-1] if role == "assistant" and blocks else None
    if final is not None and final["type"] == "text" and final["text"] != final["text"].rstrip():
        fail("messages", "final assistant content cannot end with trailing whitespace")
    _tool_pairs(parsed)
    return parsed


def _tool_pairs(messages: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Each tool_use answered in the next message, each tool_result answering the previous."""
    for index, (role, blocks) in enumerate(messages):
        if role == "user":
            previous = messages[index - 1] if index > 0 else None
            asked = (
                {b["id"] for b in previous[1] if b["type"] == "tool_use"}
                if previous is not None and previous[0] == "assistant"
                else set()
            )
            for position, block in enumerate(blocks):
                if block["type"] == "tool_result" and block["tool_use_id"] not in asked:
                    fail(
                        f"messages.{index}.content.{position}",
                        "unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block['tool_use_id']}. Each `tool_result` block must have a"
                        " corresponding `tool_use` block in the previous message.",
                    )
            continue
        ids = [block["id"] for block in blocks if block["type"] == "tool_use"]
        if not ids or index == len(messages) - 1:
            continue
        following_role, following = messages[index + 1]
        answered = (
            {b["tool_use_id"] for b in following if b["type"] == "tool_result"}
            if following_role == "user"
            else set()
        )
        missing = [tool_id for tool_id in ids if tool_id not in answered]
        if missing:
            fail(
                f"messages.{index}",
                "`tool_use` ids were found without `tool_result` blocks immediately after: "
                + ", ".join(missing)
                + ". Each `tool_use` block must have a corresponding `tool_result` block in the"
                " next message.",
            )


def _system(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "text", "text": value}] if value else []
    blocks = []
    for index, block in enumerate(array(value, "system")):
        blocks.append(check_block(block, f"system.{index}", ("text",)))
    return blocks


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    tools: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, item in enumerate(array(value, "tools")):
        path = f"tools.{index}"
        tool = obj(item, path)
        kind = tool.get("type")
        if kind is None or kind == "custom":
            where = f"{path}.custom"
            keys(tool, where, ("name", "input_schema"), CUSTOM_TOOL_FIELDS)
            name = string(tool["name"], f"{where}.name")
            if not TOOL_NAME.fullmatch(name):
                fail(f"{where}.name", "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'")
            schema = obj(tool["input_schema"], f"{where}.input_schema")
            if schema.get("type") != "object":
                fail(f"{where}.input_schema.type", "Input should be 'object'")
            if tool.get("description") is not None:
                string(tool["description"], f"{where}.description")
            check_cache_control(tool, where)
        else:
            if not isinstance(kind, str) or not SERVER_TOOL.fullmatch(kind):
                shown = kind if isinstance(kind, str) else orjson.dumps(kind).decode()[:40]
                fail(
                    f"{path}.type",
                    f"Input tag '{shown}' found using 'type' does not match any of the expected"
                    " tags: 'custom' or a versioned tool type such as 'bash_20250124' or"
                    " 'web_search_20250305'",
                )
            if "name" not in tool:
                fail(f"{path}.name", "Field required")
            name = string(tool["name"], f"{path}.name")
            check_cache_control(tool, path)
        if name in names:
            fail("tools", "Tool names must be unique.")
        names.add(name)
        tools.append(tool)
    return tools


def _tool_choice(value: Any, tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    if value is None:
        return None
    choice, kind = tagged(value, "tool_choice", ("auto", "any", "tool", "none"))
    path = f"tool_choice.{kind}"
    if kind == "none":
        keys(choice, path, ("type",))
        return choice
    required = ("type", "name") if kind == "tool" else ("type",)
    keys(choice, path, required, ("disable_parallel_tool_use",))
    if choice.get("disable_parallel_tool_use") is not None:
        boolean(choice["disable_parallel_tool_use"], f"{path}.disable_parallel_tool_use")
    if kind in ("any", "tool") and not tools:
        fail("tool_choice", f"`{kind}` forces a tool, but no tools were given")
    if kind == "tool":
        name = string(choice["name"], f"{path}.name")
        if name not in {tool.get("name") for tool in tools}:
            fail(f"{path}.name", f"Tool '{name}' not found in tools")
    return choice


def _thinking(value: Any, max_tokens: int | None) -> Thinking | None:
    if value is None:
        return None
    config, kind = tagged(value, "thinking", ("enabled", "disabled", "adaptive"))
    path = f"thinking.{kind}"
    if kind == "disabled":
        keys(config, path, ("type",))
        return None
    display = config.get("display")
    if display is not None and display not in ("summarized", "omitted"):
        fail(f"{path}.display", "Input should be 'summarized' or 'omitted'")
    omitted = display == "omitted"
    if kind == "adaptive":
        keys(config, path, ("type",), ("display",))
        return Thinking((max_tokens or 2) - 1, omitted)
    keys(config, path, ("type", "budget_tokens"), ("display",))
    budget = integer(config["budget_tokens"], f"{path}.budget_tokens", MIN_THINKING_BUDGET)
    if max_tokens is not None and max_tokens <= budget:
        fail("max_tokens", "must be greater than `thinking.budget_tokens`")
    return Thinking(budget, omitted)


def _sampling(
    body: dict[str, Any], thinking: Thinking | None, tool_choice: dict[str, Any] | None
) -> None:
    temperature = body.get("temperature")
    if temperature is not None:
        temperature = number(temperature, "temperature", 0.0, 1.0)
    top_p = body.get("top_p")
    if top_p is not None:
        top_p = number(top_p, "top_p", 0.0, 1.0)
    top_k = body.get("top_k")
    if top_k is not None:
        integer(top_k, "top_k", 0)
    if thinking is None:
        return
    if temperature is not None and temperature != 1.0:
        fail("temperature", "may only be set to 1 when thinking is enabled")
    if top_k is not None:
        fail("top_k", "may not be set when thinking is enabled")
    if top_p is not None and top_p < 0.95:
        fail("top_p", "must be between 0.95 and 1 when thinking is enabled")
    if tool_choice is not None and tool_choice["type"] in ("any", "tool"):
        raise Invalid("Thinking may not be enabled when tool_choice forces tool use.")
