from __future__ import annotations

from typing import Any

import orjson
import pytest

from capture.redaction import ALL_KINDS, Redactor, looks_random, luhn_ok

REDACTOR = Redactor()


@pytest.mark.parametrize(
    "email",
    ["john.doe@example.com", "j.doe+billing@mail.example.co.uk", "ops_team-1@sub.domain.io"],
)
def test_email_addresses(email: str) -> None:
    assert REDACTOR.redact_text(f"Write to {email}, thanks.") == "Write to [EMAIL], thanks."


@pytest.mark.parametrize(
    "phone",
    [
        "+44 20 7946 0958",
        "+1 (415) 555-2671",
        "+14155552671",
        "+33 1 23 45 67 89",
        "+49-30-1234567",
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "1-800-555-0199",
    ],
)
def test_phone_numbers(phone: str) -> None:
    assert REDACTOR.redact_text(f"Call me on {phone} today") == "Call me on [PHONE] today"


@pytest.mark.parametrize(
    "card",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5555 5555 5555 4444",
        "3782 822463 10005",
        "6011111111111117",
    ],
)
def test_card_numbers(card: str) -> None:
    assert REDACTOR.redact_text(f"card: {card}, exp 12/27") == "card: [CARD], exp 12/27"


def test_card_numbers_failing_luhn_are_left_alone() -> None:
    assert REDACTOR.redact_text("4111 1111 1111 1112") == "4111 1111 1111 1112"
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ ok", "key [SECRET] ok"),
        ("sk-ant-api03-xYz123AbC456dEf789GhIjKl", "[SECRET]"),
        ("OPENAI_API_KEY=sk-9fA8b7C6d5E4f3G2h1I0jKlMn", "OPENAI_API_KEY=[SECRET]"),
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.c2ln",
            "Authorization: Bearer [SECRET]",
        ),
        ("aws AKIAIOSFODNN7EXAMPLE here", "aws [SECRET] here"),
        ("token ghp_1234567890abcdefghijABCDEFGHIJ123456", "token [SECRET]"),
        ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe [SECRET]"),
        ('{"api_key": "9f86d081884c7d659a2feaa0c55ad015"}', '{"api_key": "[SECRET]"}'),
        ("client_secret=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5", "client_secret=[SECRET]"),
        ("slack xoxb-1234567890-abcdefghij", "slack [SECRET]"),
    ],
)
def test_secrets(text: str, expected: str) -> None:
    assert REDACTOR.redact_text(text) == expected


ORDINARY = [
    "In 2024 we shipped 12,345 units; order 48213 costs 3.14159 and $1,299.99.",
    "Meet at 10:30 on 2024-01-15; version 1.2.3; id 123456; zip 94103.",
    "The build took 1700000000000 ms? No: ip 192.168.100.200, port 5432.",
    "Request 0190f0a1b2c3d4e5f60718293a4b5c6d failed; see ticket #482913.",
    "Ask the task-abcdefghijklmnopqrstuvwxyz runner; the token is expired.",
    "Password reset: follow the link in the e-mail we sent @ noon.",
    "A sk-this-is-not-a-key-at-all-really slug and a gpt-4o-2024-08-06 model.",
    "π ≈ 3.14159265358979 and e ≈ 2.71828182845904; 1/3 = 0.333333333333",
    "Call option: strike 4500, expiry 2025-03-21, qty 10, price 12.50.",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_and_numbers_are_untouched(text: str) -> None:
    assert REDACTOR.redact_text(text) == text
    assert REDACTOR.find(text) == []


def test_only_the_chosen_kinds_are_redacted() -> None:
    text = "mail a@b.io, call +44 20 7946 0958, key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t"
    assert Redactor(["email"]).redact_text(text) == (
        "mail [EMAIL], call +44 20 7946 0958, key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t"
    )
    assert Redactor(["phone", "secret"]).redact_text(text) == (
        "mail a@b.io, call [PHONE], key [SECRET]"
    )
    assert Redactor([]).redact_text(text) == text
    assert not Redactor([]) and Redactor(ALL_KINDS)
    with pytest.raises(ValueError, match="unknown redaction kinds"):
        Redactor(["email", "ssn"])


def test_every_string_of_a_json_value_is_redacted_in_place() -> None:
    arguments = orjson.dumps({"to": "jane@example.com", "card": "4111 1111 1111 1111"}).decode()
    body: Any = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Never reveal sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wX"},
            {"role": "user", "content": [{"type": "text", "text": "I'm on +1 415 555 2671"}]},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "call_1", "function": {"name": "send", "arguments": arguments}}
                ],
            },
        ],
        "metadata": {"jane@example.com": "owner"},
        "logit_bias": {"50256": -100},
        "input_ids": list(range(100)),
    }
    result = REDACTOR.redact(body)
    assert result is body
    assert body["messages"][0]["content"] == "Never reveal [SECRET]"
    assert body["messages"][1]["content"][0]["text"] == "I'm on [PHONE]"
    args = orjson.loads(body["messages"][2]["tool_calls"][0]["function"]["arguments"])
    assert args == {"to": "[EMAIL]", "card": "[CARD]"}
    assert body["metadata"] == {"[EMAIL]": "owner"}
    assert body["logit_bias"] == {"50256": -100}
    assert body["input_ids"] == list(range(100))
    assert REDACTOR.find_json(body) == []


def test_find_reports_kind_and_position() -> None:
    text = "a@b.io then +44 20 7946 0958"
    found = REDACTOR.find(text)
    assert [(f.kind, text[f.start : f.end]) for f in found] == [
        ("email", "a@b.io"),
        ("phone", "+44 20 7946 0958"),
    ]
    assert [f.kind for f in REDACTOR.find_json({"x": ["a@b.io", {"k": "x@y.org"}]})] == [
        "email",
        "email",
    ]


def test_repeated_short_strings_give_the_same_result() -> None:
    redactor = Redactor()
    for _ in range(3):
        assert redactor.redact_text("call 415-555-2671") == "call [PHONE]"
        assert redactor.redact_text("assistant") == "assistant"


def test_pathological_inputs_stay_linear() -> None:
    for text in ("a" * 100_000 + "@", "1" * 100_000, "1 " * 50_000, "sk-" * 30_000, "x=" * 50_000):
        assert REDACTOR.redact_text(text) is not None


def test_looks_random() -> None:
    assert looks_random("9f86d081884c7d659a2feaa0c55ad015")
    assert not looks_random("this-is-a-long-lowercase-slug")
    assert not looks_random("short1A")
