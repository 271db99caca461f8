"""Format checks of an answer, where the request asked for a format: exact match with the
baseline's answer, JSON (``response_format`` json_object / json_schema), and tool calls
(the same function, arguments that parse and fit the tool's parameters)."""

from __future__ import annotations

from typing import Any

import orjson

from exporter.evaluate.schema import problems
from exporter.normalize import text as normalised

Message = dict[str, Any]


def _json(text: Any) -> tuple[bool, Any]:
    if not isinstance(text, str):
        return False, None
    try:
        return True, orjson.loads(text)
    except orjson.JSONDecodeError:
        return False, None


def expected_schema(request: dict[str, Any]) -> tuple[bool, Any]:
    """(answer must be JSON?, the schema it must fit or None)."""
    response_format = request.get("response_format")
    if not isinstance(response_format, dict):
        return False, None
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        return True, spec.get("schema") if isinstance(spec, dict) else None
    return response_format.get("type") == "json_object", None


def _tool_schemas(request: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for tool in request.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            schemas[function["name"]] = function.get("parameters")
    return schemas


def check(request: dict[str, Any], answer: Message, baseline: Message) -> dict[str, bool]:
    """The checks that apply to this request, each passed or not."""
    results: dict[str, bool] = {}
    content, expected = answer.get("content"), baseline.get("content")
    if isinstance(content, str) and isinstance(expected, str):
        results["exact"] = normalised(content) == normalised(expected)
    wants_json, schema = expected_schema(request)
    if wants_json and not answer.get("tool_calls"):
        parsed, value = _json(content)
        results["json"] = parsed
        if schema is not None:
            results["schema"] = parsed and not problems(value, schema)
    calls = answer.get("tool_calls") or []
    expected_calls = baseline.get("tool_calls") or []
    if calls or expected_calls:
        names = [c["function"].get("name") for c in calls]
        results["tool_name"] = names == [c["function"].get("name") for c in expected_calls]
        schemas = _tool_schemas(request)
        fits = True
        for call in calls:
            parsed, value = _json(call["function"].get("arguments"))
            schema = schemas.get(call["function"].get("name"))
            fits = fits and parsed and (schema is None or not problems(value, schema))
        results["tool_arguments"] = bool(calls) and fits
    return results
