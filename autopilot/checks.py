"""Deterministic checks of one answer: what a judge need not be asked about.

`check_answer(request, response)` takes a chat request and its ``chat.completion`` (OpenAI's
shape; for a call in Anthropic's dialect, the capture's normalised chat view) and returns the
failures it finds, in this vocabulary (each at most once, in this order):

- ``empty``: no choice, or a choice with neither text nor a tool call;
- ``refusal``: the message's ``refusal`` is set, or its text opens with a stock refusal
  ("I'm sorry, but I can't ...");
- ``length``: ``finish_reason`` is ``length`` (the answer was cut off);
- ``invalid_json``: the request asked for JSON (``response_format`` ``json_object`` or
  ``json_schema``) and the text does not parse;
- ``schema_invalid``: a ``json_schema`` was given and the parsed text violates it;
- ``tool_args_invalid``: a tool call whose arguments do not parse as a JSON object, violate
  the tool's ``parameters`` schema, or that names a tool the request did not offer.

Pure (no I/O) and total: any input, however malformed, gives a list and never an exception. A
schema that is itself invalid (the client's mistake, not the answer's) is not held against the
answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

import orjson

EMPTY = "empty"
REFUSAL = "refusal"
LENGTH = "length"
INVALID_JSON = "invalid_json"
SCHEMA_INVALID = "schema_invalid"
TOOL_ARGS_INVALID = "tool_args_invalid"
FAILURES = (EMPTY, REFUSAL, LENGTH, INVALID_JSON, SCHEMA_INVALID, TOOL_ARGS_INVALID)

_REFUSAL = re.compile(
    r"^\s*(?:(?:i'?m|i am)\s+sorry|sorry|unfortunately)?[,.!]?\s*(?:but\s+)?"
    r"(?:i|as an ai[^,.]*,\s*i)\s*(?:can'?t|cannot|can not|won'?t|will not|am unable to|"
    r"'m unable to|am not able to|'m not able to)\s+"
    r"(?:help|assist|comply|provide|do that|fulfil|fulfill|answer|support|engage|create|write)",
    re.IGNORECASE,
)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})
REFUSAL_MAX_CHARS = 400
"""Only a short answer that opens with a refusal is one: a long answer that starts "I can't
help with X, but here is Y" did help."""


def check_answer(request: Mapping[str, Any], response: Mapping[str, Any]) -> list[str]:
    """The failures of ``response`` as an answer to ``request`` (see the module)."""
    found: set[str] = set()
    with suppress(Exception):  # a shape nobody foresaw: report what was found, never raise
        _check(request, response, found)
    return [name for name in FAILURES if name in found]


def _check(request: Any, response: Any, found: set[str]) -> None:
    request = request if isinstance(request, Mapping) else {}
    choices = response.get("choices") if isinstance(response, Mapping) else None
    if not isinstance(choices, list) or not choices:
        found.add(EMPTY)
        return
    json_mode, schema = _format(request.get("response_format"))
    tools = _tools(request)
    for choice in choices:
        if not isinstance(choice, Mapping):
            found.add(EMPTY)
            continue
        if choice.get("finish_reason") == "length":
            found.add(LENGTH)
        message = choice.get("message")
        if not isinstance(message, Mapping):
            found.add(EMPTY)
            continue
        text = _text(message.get("content"))
        calls = _tool_calls(message)
        refusal = message.get("refusal")
        content = message.get("content")
        if isinstance(content, list) and not (isinstance(refusal, str) and refusal.strip()):
            refusal = "".join(  # a content part of type refusal
                str(part.get("refusal") or "")
                for part in content
                if isinstance(part, Mapping) and part.get("type") == "refusal"
            )
        if isinstance(refusal, str) and refusal.strip():
            found.add(REFUSAL)
        elif not text.strip() and not calls:
            found.add(EMPTY)
        elif (
            text and len(text) <= REFUSAL_MAX_CHARS and _REFUSAL.match(text.translate(_APOSTROPHES))
        ):
            found.add(REFUSAL)
        for name, arguments in calls:
            if not _tool_call_valid(name, arguments, tools):
                found.add(TOOL_ARGS_INVALID)
        if json_mode and text.strip() and REFUSAL not in found:
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                found.add(INVALID_JSON)
                continue
            if schema is not None and not _valid(value, schema):
                found.add(SCHEMA_INVALID)


def _format(response_format: Any) -> tuple[bool, Any]:
    """Whether JSON was asked for, and the schema given (or None)."""
    if not isinstance(response_format, Mapping):
        return False, None
    kind = response_format.get("type")
    if kind == "json_object":
        return True, None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return True, schema if isinstance(schema, Mapping | bool) else None
    return False, None


def _tools(request: Mapping[str, Any]) -> dict[str, Any]:
    """The tools offered: name -> parameters schema (None when not given)."""
    offered: dict[str, Any] = {}
    for tool in request.get("tools") or ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            offered[function["name"]] = function.get("parameters")
    for function in request.get("functions") or ():  # the legacy form
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            offered[function["name"]] = function.get("parameters")
    return offered


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _tool_calls(message: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    calls: list[tuple[Any, Any]] = []
    raw = message.get("tool_calls")
    for call in raw if isinstance(raw, list) else ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            calls.append((function.get("name"), function.get("arguments")))
        else:
            calls.append((None, None))
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping):
        calls.append((legacy.get("name"), legacy.get("arguments")))
    return calls


def _tool_call_valid(name: Any, arguments: Any, tools: Mapping[str, Any]) -> bool:
    if not isinstance(name, str) or name not in tools:
        return False
    if isinstance(arguments, str):
        try:
            value = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            return False
    elif isinstance(arguments, Mapping):
        value = dict(arguments)
    else:
        return False
    if not isinstance(value, dict):
        return False
    schema = tools[name]
    return schema is None or _valid(value, schema)


def _without_patterns(schema: Any) -> Any:
    """``schema`` without its regular expressions: ``pattern`` goes, and ``patternProperties``
    with the ``additionalProperties`` / ``unevaluatedProperties`` beside it. A client's schema
    may hold a pattern that backtracks for ever on a crafted answer (``^(a+)+$``), and Python's
    regex engine holds the GIL while it does: the check would freeze the gateway. Dropping them
    only ever passes more answers, never fails a sound one."""
    if isinstance(schema, list):
        return [_without_patterns(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {}
    regexes = "patternProperties" in schema
    for key, item in schema.items():
        if key == "pattern" or key == "patternProperties":
            continue
        if regexes and key in ("additionalProperties", "unevaluatedProperties"):
            continue
        out[key] = _without_patterns(item)
    return out


def _valid(value: Any, schema: Any) -> bool:
    """Whether ``value`` meets ``schema``; True when the schema itself cannot be used. Regular
    expressions in it are not checked (`_without_patterns`)."""
    if isinstance(schema, Mapping):
        schema = _without_patterns(schema)
    elif not isinstance(schema, bool):
        return True
    import jsonschema  # here: ~50 ms of imports that only a rollout's checks need

    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        error = jsonschema.exceptions.best_match(cls(schema).iter_errors(value))
    except Exception:  # an unusable schema (bad, unresolvable $ref, too deep): not the answer's
        return True
    return error is None
