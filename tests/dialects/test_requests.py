from __future__ import annotations

import copy
from typing import Any

import pytest

from dialects.errors import Untranslatable
from dialects.requests import anthropic_to_openai_chat, openai_chat_to_anthropic

PNG = "iVBORw0KGgo="
PDF = "JVBERi0xLjQ="


def to_anthropic(body: dict[str, Any], default_max_tokens: int = 1000) -> dict[str, Any]:
    before = copy.deepcopy(body)
    out = openai_chat_to_anthropic(body, model="claude-x", default_max_tokens=default_max_tokens)
    assert body == before, "the input must not be mutated"
    return out


def to_openai(body: dict[str, Any]) -> dict[str, Any]:
    before = copy.deepcopy(body)
    out = anthropic_to_openai_chat(body, model="gpt-x")
    assert body == before, "the input must not be mutated"
    return out


def refused(call: Any, field: str) -> Untranslatable:
    with pytest.raises(Untranslatable) as info:
        call()
    assert info.value.field == field, info.value
    return info.value


# ---------------------------------------------------------------- OpenAI -> Anthropic


def test_a_plain_chat_call() -> None:
    out = to_anthropic(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ],
            "max_tokens": 50,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "user": "u-1",
            "stream": True,
            "stream_options": {"include_usage": True},
            "seed": 7,
            "store": True,
            "metadata": {"team": "a"},
            "n": 1,
            "logprobs": False,
            "presence_penalty": 0,
            "response_format": {"type": "text"},
            "logit_bias": {},
            "functions": None,
        }
    )
    assert out == {
        "model": "claude-x",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
        "system": "Be brief.",
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }


def test_max_tokens_default_and_max_completion_tokens_first() -> None:
    base = {"messages": [{"role": "user", "content": "hi"}]}
    assert to_anthropic(base, default_max_tokens=4096)["max_tokens"] == 4096
    both = {**base, "max_tokens": 10, "max_completion_tokens": 20}
    assert to_anthropic(both)["max_tokens"] == 20
    refused(lambda: to_anthropic({**base, "max_tokens": "lots"}), "max_tokens")
    refused(lambda: to_anthropic({**base, "max_completion_tokens": 0}), "max_completion_tokens")


def test_several_system_and_developer_messages_become_text_blocks() -> None:
    out = to_anthropic(
        {
            "messages": [
                {"role": "system", "content": "One."},
                {"role": "developer", "content": [{"type": "text", "text": "Two."}]},
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "Three."},
            ]
        }
    )
    assert out["system"] == [
        {"type": "text", "text": "One."},
        {"type": "text", "text": "Two."},
        {"type": "text", "text": "Three."},
    ]
    assert out["messages"] == [{"role": "user", "content": "hi"}]


def test_images_and_pdf_files() -> None:
    out = to_anthropic(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                        {
                            "type": "file",
                            "file": {
                                "filename": "a.pdf",
                                "file_data": f"data:application/pdf;base64,{PDF}",
                            },
                        },
                    ],
                }
            ]
        }
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            "title": "a.pdf",
        },
    ]


@pytest.mark.parametrize(
    ("part", "field"),
    [
        (
            {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
            "messages[0].content[1].type",
        ),
        ({"type": "file", "file": {"file_id": "file-1"}}, "messages[0].content[1].file.file_id"),
        (
            {"type": "image_url", "image_url": {"url": "ftp://x"}},
            "messages[0].content[1].image_url.url",
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}},
            "messages[0].content[1].image_url.url",
        ),
    ],
)
def test_content_parts_without_an_equivalent_are_refused(part: dict[str, Any], field: str) -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, part]}]}
    refused(lambda: to_anthropic(body), field)


def test_a_tool_conversation() -> None:
    out = to_anthropic(
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": "Let me look.",
                    "tool_calls": [
                        {
                            "id": "toolu_01A",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "clock", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_01A", "content": "18C"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "noon"}],
                },
                {"role": "user", "content": "Thanks. And tomorrow?"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "weather",
                        "description": "Weather now",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "required": ["city"],
                        },
                        "strict": True,
                    },
                },
                {"type": "function", "function": {"name": "clock"}},
            ],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        }
    )
    assert out["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "call_2", "name": "clock", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"},
                {"type": "text", "text": "Thanks. And tomorrow?"},
            ],
        },
    ]
    assert out["tools"] == [
        {
            "name": "weather",
            "description": "Weather now",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
            "strict": True,
        },
        {"name": "clock", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_a_tool_result_with_an_image_is_kept_for_anthropic() -> None:
    out = to_anthropic(
        {
            "messages": [
                {"role": "user", "content": "look"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "shot", "arguments": "{}"},
                        }
                    ],
                },
                {
                    "role": "tool",
                    "tool_call_id": "t1",
                    "content": [
                        {"type": "text", "text": "here"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    ],
                },
            ]
        }
    )
    assert out["messages"][2]["content"][0]["content"][1]["source"]["data"] == PNG


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "weather"}},
            None,
            {"type": "tool", "name": "weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, True, None),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "weather"}}],
        "tool_choice": choice,
        "parallel_tool_calls": parallel,
    }
    assert to_anthropic(body).get("tool_choice") == expected


def test_consecutive_same_role_messages_merge_and_empty_assistant_turns_go() -> None:
    out = to_anthropic(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "b"}]},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "c"},
                {"role": "assistant", "content": None},
                {"role": "assistant", "content": "d", "name": "bot"},
                {"role": "assistant", "content": [{"type": "text", "text": "e"}]},
            ]
        }
    )
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "text", "text": "b"},
                {"type": "text", "text": "c"},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "d"}, {"type": "text", "text": "e"}],
        },
    ]


def test_reasoning_effort_becomes_a_thinking_budget() -> None:
    base = {"messages": [{"role": "user", "content": "x"}]}
    out = to_anthropic({**base, "reasoning_effort": "medium"}, default_max_tokens=1000)
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert out["max_tokens"] == 5096
    out = to_anthropic({**base, "reasoning_effort": "high", "max_completion_tokens": 3000})
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2999}
    assert out["max_tokens"] == 3000
    assert "thinking" not in to_anthropic({**base, "reasoning_effort": "none"})
    refused(
        lambda: to_anthropic({**base, "reasoning_effort": "low", "max_tokens": 800}),
        "reasoning_effort",
    )
    refused(lambda: to_anthropic({**base, "reasoning_effort": "turbo"}), "reasoning_effort")


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format"),
        ({"temperature": 1.5}, "temperature"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"verbosity": "low"}, "verbosity"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"repetition_penalty": 1.1}, "repetition_penalty"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
        ({"stop": [1]}, "stop"),
    ],
)
def test_fields_that_change_the_answer_are_refused_by_name(
    extra: dict[str, Any], field: str
) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], **extra}
    error = refused(lambda: to_anthropic(body), field)
    assert error.message


def test_top_k_and_safety_identifier_pass() -> None:
    out = to_anthropic(
        {"messages": [{"role": "user", "content": "x"}], "top_k": 5, "safety_identifier": "s"}
    )
    assert out["top_k"] == 5
    assert out["metadata"] == {"user_id": "s"}


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ("hi", "messages"),
        ([], "messages"),
        (["hi"], "messages[0]"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        ([{"role": "function", "name": "f", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        (
            [{"role": "user", "content": [{"type": "text", "text": None}]}],
            "messages[0].content[0].text",
        ),
        (
            [
                {
                    "role": "system",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x"}}],
                }
            ],
            "messages[0].content[0].type",
        ),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "a",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{bad"},
                        }
                    ],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "a",
                            "type": "function",
                            "function": {"name": "f", "arguments": "[1]"},
                        }
                    ],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}],
            "messages[0].function_call",
        ),
    ],
)
def test_malformed_messages_are_named(messages: Any, field: str) -> None:
    refused(lambda: to_anthropic({"messages": messages}), field)


def test_a_non_object_body() -> None:
    refused(lambda: openai_chat_to_anthropic([], model="m", default_max_tokens=1), "body")  # type: ignore[arg-type]
    refused(lambda: anthropic_to_openai_chat("x", model="m"), "body")  # type: ignore[arg-type]


# ---------------------------------------------------------------- Anthropic -> OpenAI


def test_a_plain_messages_call() -> None:
    out = to_openai(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "hi"}],
            "stop_sequences": ["END", "STOP"],
            "temperature": 0.2,
            "top_p": 0.8,
            "top_k": 40,
            "metadata": {"user_id": "u-9"},
            "stream": True,
            "service_tier": "auto",
            "cache_control": {"type": "ephemeral"},
        }
    )
    assert out == {
        "model": "gpt-x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ],
        "max_tokens": 100,
        "stop": ["END", "STOP"],
        "temperature": 0.2,
        "top_p": 0.8,
        "top_k": 40,
        "user": "u-9",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_system_blocks_images_documents_and_thinking_history() -> None:
    out = to_openai(
        {
            "max_tokens": 10,
            "system": [
                {"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Two."},
            ],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "See"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": PDF,
                            },
                            "title": "r.pdf",
                        },
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "body"},
                            "title": "Notes",
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "xxx"},
                        {"type": "text", "text": "Seen."},
                    ],
                },
            ],
        }
    )
    assert out["messages"] == [
        {
            "role": "system",
            "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "See"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                {
                    "type": "file",
                    "file": {
                        "filename": "r.pdf",
                        "file_data": f"data:application/pdf;base64,{PDF}",
                    },
                },
                {"type": "text", "text": "Notes\n\nbody"},
            ],
        },
        {"role": "assistant", "content": "Seen."},
    ]


def test_tool_use_and_results_keep_ids_and_order() -> None:
    out = to_openai(
        {
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_01",
                            "name": "weather",
                            "input": {"city": "Paris"},
                        },
                        {"type": "tool_use", "id": "toolu_02", "name": "clock", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_02",
                            "content": [
                                {"type": "text", "text": "no"},
                                {"type": "text", "text": "clock"},
                            ],
                            "is_error": True,
                        },
                        {"type": "text", "text": "And?"},
                    ],
                },
            ],
            "tools": [
                {
                    "name": "weather",
                    "description": "Weather now",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "custom", "name": "clock", "input_schema": {"type": "object"}},
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        }
    )
    assert out["messages"] == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_01",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_02",
                    "type": "function",
                    "function": {"name": "clock", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01", "content": "18C"},
        {
            "role": "tool",
            "tool_call_id": "toolu_02",
            "content": [
                {"type": "text", "text": "Error:"},
                {"type": "text", "text": "no"},
                {"type": "text", "text": "clock"},
            ],
        },
        {"role": "user", "content": "And?"},
    ]
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather now",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}},
    ]
    assert out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False


def test_an_assistant_turn_with_only_tool_use_has_null_content() -> None:
    out = to_openai(
        {
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "is_error": True,
                            "content": "boom",
                        }
                    ],
                },
                {"role": "assistant", "content": []},
            ],
        }
    )
    assert out["messages"][1]["content"] is None
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "t", "content": "Error: boom"}
    assert out["messages"][3] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 2048}, "low"),
        ({"type": "enabled", "budget_tokens": 4096}, "medium"),
        ({"type": "enabled", "budget_tokens": 8192}, "medium"),
        ({"type": "enabled", "budget_tokens": 20000}, "high"),
        ({"type": "disabled"}, None),
        ({"type": "adaptive"}, None),
    ],
)
def test_thinking_becomes_reasoning_effort(thinking: dict[str, Any], effort: str | None) -> None:
    out = to_openai(
        {"max_tokens": 30000, "messages": [{"role": "user", "content": "x"}], "thinking": thinking}
    )
    assert out.get("reasoning_effort") == effort


def test_output_config_effort() -> None:
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    assert to_openai({**body, "output_config": {"effort": "low"}})["reasoning_effort"] == "low"
    refused(lambda: to_openai({**body, "output_config": {"effort": "max"}}), "output_config.effort")
    refused(
        lambda: to_openai(
            {**body, "output_config": {"format": {"type": "json_schema", "schema": {}}}}
        ),
        "output_config.format",
    )


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"container": "c1"}, "container"),
        ({"mcp_servers": [{"type": "url", "url": "https://m", "name": "m"}]}, "mcp_servers"),
        ({"inference_geo": "eu"}, "inference_geo"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type"),
        ({"tool_choice": {"type": "maybe"}}, "tool_choice.type"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"stop_sequences": "END"}, "stop_sequences"),
    ],
)
def test_anthropic_fields_without_an_equivalent_are_refused(
    extra: dict[str, Any], field: str
) -> None:
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], **extra}
    refused(lambda: to_openai(body), field)


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (
            [
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        }
                    ],
                }
            ],
            "messages[0].content[0].content[0].type",
        ),
        (
            [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
            "messages[0].content[0].source.type",
        ),
        (
            [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}],
            "messages[0].content[0].source.type",
        ),
        (
            [
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "d"},
                    "citations": {"enabled": True},
                }
            ],
            "messages[0].content[0].citations",
        ),
        (
            [{"type": "search_result", "source": "s", "title": "t", "content": []}],
            "messages[0].content[0].type",
        ),
        ([{"type": "text"}], "messages[0].content[0].text"),
        ("x", None),
    ],
)
def test_user_blocks_without_an_equivalent_are_refused(content: Any, field: str | None) -> None:
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": content}]}
    if field is None:
        assert to_openai(body)["messages"] == [{"role": "user", "content": "x"}]
    else:
        refused(lambda: to_openai(body), field)


def test_server_tool_blocks_in_assistant_history_are_refused() -> None:
    body = {
        "max_tokens": 5,
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": [
                    {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}
                ],
            },
        ],
    }
    refused(lambda: to_openai(body), "messages[1].content[0].type")
    refused(
        lambda: to_openai({"max_tokens": 1, "messages": [{"role": "system", "content": "x"}]}),
        "messages[0].role",
    )


def test_parallel_tool_calls_without_tools_says_nothing() -> None:
    out = to_anthropic(
        {"messages": [{"role": "user", "content": "x"}], "parallel_tool_calls": False}
    )
    assert "tool_choice" not in out


def test_an_unhashable_effort_is_refused_not_a_crash() -> None:
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    refused(
        lambda: to_openai({**body, "output_config": {"effort": ["low"]}}), "output_config.effort"
    )
