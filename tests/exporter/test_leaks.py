"""The leak check reads an example's own strings in one pass (joined by NULs): the kinds it
finds are those of checking each string alone, findings planted at every edge included."""

from __future__ import annotations

import random
from typing import Any

from capture.redaction import Redactor
from exporter.examples import Example
from exporter.leaks import LeakCheck

FINDINGS = [
    "john.doe@example.com",
    "+44 20 7946 0958",
    "(415) 555-2671",
    "4111 1111 1111 1111",
    "6011111111111117",
    "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ",
    "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.c2ln",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_1234567890abcdefghijABCDEFGHIJ123456",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "client_secret=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5",
    "xoxb-1234567890-abcdefghij",
]
# Halves of a finding: alone neither is one, and joined they must not become one.
HALVES = [
    "john.doe@",
    "example.com",
    "api_key:",
    " 9f86d081884c7d659a2feaa0c55ad015",
    "+44 20 ",
    "7946 0958",
    "4111 1111 ",
    "1111 1111",
    "sk-proj-Ab3dEf6hIj",
    "9kLm2nOp5qRs8tUv1wXyZ",
    "Bearer",
    " eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.c2ln",
    "s",
    "k_live_4eC39HqLyjWDarjtT1zdp7dc",
]
FILLER = ["ok", "the answer is yes", "see below:", "", "x", "  ", "1234", "a@b", "-", "=", "\x00"]


def _piece(rng: random.Random) -> str:
    draw = rng.random()
    if draw < 0.2:
        return rng.choice(FINDINGS)
    if draw < 0.5:
        return rng.choice(HALVES)
    return rng.choice(FILLER)


def _text(rng: random.Random) -> str:
    return "".join(_piece(rng) for _ in range(rng.randint(0, 2)))


def _example(rng: random.Random, number: int) -> Example:
    messages: list[dict[str, Any]] = []
    if rng.random() < 0.7:
        messages.append({"role": "system", "content": rng.choice(["Be brief.", _text(rng)])})
    messages.append({"role": "user", "content": _text(rng)})
    if rng.random() < 0.3:
        messages.append({"role": "user", "name": _text(rng) or "ann", "content": _text(rng)})
    answer: dict[str, Any] = {"role": "assistant", "content": _text(rng)}
    if rng.random() < 0.3:
        answer["tool_calls"] = [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": _text(rng) or "f", "arguments": _text(rng)},
            }
        ]
    messages.append(answer)
    tools = [{"type": "function", "function": {"name": "f", "description": _text(rng)}}]
    return Example(f"call-{number}", messages, tools if rng.random() < 0.3 else None)


def _alone(redactor: Redactor, example: Example) -> list[str]:
    """The kinds found checking every string of the example by itself."""
    import orjson

    strings: list[str] = []
    for message in example.messages:
        for key in ("content", "name"):
            if isinstance(message.get(key), str):
                strings.append(message[key])
        for call in message.get("tool_calls") or ():
            strings.extend((call["function"]["name"], call["function"]["arguments"]))
    if example.tools:
        strings.append(orjson.dumps(example.tools).decode())
    return sorted({finding.kind for text in strings for finding in redactor.find(text)})


def test_one_pass_finds_what_each_string_alone_does() -> None:
    rng = random.Random(15)
    redactor, check = Redactor(), LeakCheck()
    examples = [_example(rng, number) for number in range(3000)]
    expected = [_alone(redactor, example) for example in examples]
    assert [check.kinds_in(example) for example in examples] == expected
    assert sum(1 for kinds in expected if kinds) > 500
    assert sum(1 for kinds in expected if not kinds) > 300
    assert set(check.found) == {"email", "phone", "card", "secret"}


def test_halves_of_a_finding_in_two_strings_are_not_one() -> None:
    check = LeakCheck()
    split = Example(
        "c",
        [
            {"role": "user", "content": "write to john.doe@"},
            {"role": "assistant", "content": "example.com and api_key:"},
            {"role": "user", "content": " 9f86d081884c7d659a2feaa0c55ad015 or +44 20 "},
            {"role": "assistant", "content": "7946 0958"},
        ],
    )
    assert check.kinds_in(split) == []
    whole = Example("d", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}])
    whole.messages[1]["content"] = "write to john.doe@example.com"
    assert check.kinds_in(whole) == ["email"]


def test_a_repeated_system_prompt_is_checked_once() -> None:
    check = LeakCheck()
    system = {"role": "system", "content": "Escalate to ops@example.com when angry."}
    first = Example("a", [system, {"role": "user", "content": "hi"}, {"role": "assistant"}])
    second = Example("b", [system, {"role": "user", "content": "yo"}, {"role": "assistant"}])
    assert check.kinds_in(first) == ["email"] == check.kinds_in(second)
    assert list(check._remembered) == [system["content"]]
    assert check.found["email"] == 2
