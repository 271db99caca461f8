"""Quality per slice, changed at run time: make a model worse on some requests, or from now on.

A rule (``simulator.profile.QualityRule``) says: the chat answers of ``model`` (an fnmatch glob;
a plain name matches itself) to requests whose text contains ``match`` (any message's content:
a string, or the text parts of a list; every request when ``match`` is null) have ``quality``,
the share of answers without a defect (``simulator.quality``). Several rules may hold at once;
among those that match a request the latest wins, and a request no rule matches keeps its
model's profile quality. A profile's ``quality_rules`` are the first rules, so a slice can be
worse from the start; the endpoints change them while the simulator runs:

    POST   /_sim/quality   {"model": str, "quality": 0..1, "match": str | null}: add a rule
    GET    /_sim/quality   {"rules": [...]}, oldest first (the profile's included)
    DELETE /_sim/quality   forget every rule, the profile's too

A bad body is a 400 in OpenAI's error shape that names the field. With no rule a request costs
nothing more; with rules, one walk over its messages when a rule names its model.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from simulator.profile import QualityRule
from simulator.wire import InvalidRequest, json_response

MAX_RULES = 1000
"""More rules than this is a 400: each request is checked against every rule."""


def request_text(messages: list[Any]) -> str:
    """Every message's text, joined by newlines: string contents and list parts' ``text``."""
    texts: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    return "\n".join(texts)


class QualityRules:
    """The rules in force, oldest first."""

    def __init__(self, rules: Iterable[QualityRule] = ()) -> None:
        self._rules: list[QualityRule] = list(rules)

    @property
    def rules(self) -> tuple[QualityRule, ...]:
        return tuple(self._rules)

    def add(self, rule: QualityRule) -> None:
        if len(self._rules) >= MAX_RULES:
            raise InvalidRequest(
                f"At most {MAX_RULES} quality rules: DELETE /_sim/quality to start again.",
                code="too_many_rules",
            )
        self._rules.append(rule)

    def clear(self) -> None:
        self._rules.clear()

    def quality(self, model: str, messages: list[Any], default: float) -> float:
        """The quality of ``model``'s answer to these messages: the latest matching rule's,
        else ``default`` (the profile's)."""
        if not self._rules:
            return default
        text: str | None = None
        for rule in reversed(self._rules):
            if not fnmatchcase(model, rule.model):
                continue
            if rule.match is None:
                return rule.quality
            if text is None:
                text = request_text(messages)
            if rule.match in text:
                return rule.quality
        return default


RULES = web.AppKey("simulator.quality_rules", QualityRules)


def _listing(rules: QualityRules) -> web.Response:
    return json_response({"rules": [rule.model_dump() for rule in rules.rules]})


async def list_rules(request: web.Request) -> web.Response:
    return _listing(request.app[RULES])


async def add_rule(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            'The body must be JSON: {"model": str, "quality": 0..1, "match": str | null}.'
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest(
            'The body must be a JSON object: {"model": str, "quality": 0..1, "match": str | null}.'
        )
    try:
        rule = QualityRule.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequest(
            f"Invalid quality rule: {field}: {first['msg']}.", param=field, code="invalid_rule"
        ) from None
    rules = request.app[RULES]
    rules.add(rule)
    return _listing(rules)


async def clear_rules(request: web.Request) -> web.Response:
    request.app[RULES].clear()
    return _listing(request.app[RULES])


def add_quality_routes(app: web.Application, rules: Iterable[QualityRule]) -> None:
    app[RULES] = QualityRules(rules)
    app.router.add_get("/_sim/quality", list_rules, allow_head=False)
    app.router.add_post("/_sim/quality", add_rule)
    app.router.add_delete("/_sim/quality", clear_rules)
