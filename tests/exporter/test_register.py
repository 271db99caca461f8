"""Registering a model: the config file keeps its comments; the admin API gets the contract."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from exporter.errors import RegisterError
from exporter.register import AdminClient, NewVariant, default_name, register_in_file, register_live

CONFIG = """\
# the gateway's config
auth: none
providers:
  openai: {base_url: "https://api.openai.com/v1", api_key: "${OPENAI_API_KEY}"}  # the key
routes:
  support:
    variants:
      teacher: {provider: openai, model: gpt-4o, weight: 100}  # GPT-4-class
    sticky: user
  other:
    variants:
      only: {provider: openai, model: gpt-4o}
"""
MODEL = "ft:gpt-4o-mini:acme:support:abc123"


def test_the_file_gets_the_variant_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    replaced = register_in_file(path, NewVariant("support", "student", MODEL, weight=5, shadow=0.2))
    text = path.read_text()
    assert replaced is None
    assert "# the gateway's config" in text and "# GPT-4-class" in text and "# the key" in text
    assert '"${OPENAI_API_KEY}"' in text
    assert f"student: {{provider: openai, model: {MODEL}, weight: 5}}" in text
    assert "shadow: {variant: student, sample: 0.2}" in text
    assert text.index("student:") < text.index("other:")
    assert "sticky: user" in text


@pytest.mark.parametrize(
    ("new", "says"),
    [
        (NewVariant("missing", "student", MODEL), "no route 'missing'"),
        (NewVariant("support", "teacher", MODEL), "already has a variant"),
        (NewVariant("support", "student", MODEL, provider="azure"), "unknown provider"),
    ],
)
def test_the_file_refuses_what_the_gateway_would(
    tmp_path: Path, new: NewVariant, says: str
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    with pytest.raises(RegisterError, match=says):
        register_in_file(path, new)
    assert path.read_text() == CONFIG


def test_the_admin_api_gets_the_variant_then_the_shadow() -> None:
    calls: list[tuple[str, str, object]] = []
    route = {"variants": {"teacher": {"provider": "sim", "model": "gpt-4o", "weight": 1}}}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        calls.append((request.method, request.url.path, body))
        assert request.headers["authorization"] == "Bearer admin-key"
        if request.method == "GET":
            return httpx.Response(200, json={"routes": {"support": route}})
        return httpx.Response(201, json=route)

    admin = AdminClient("http://gw", "admin-key", transport=httpx.MockTransport(handler))
    register_live(admin, NewVariant("support", "student", MODEL, weight=0, shadow=0.2))
    assert calls[1:] == [
        (
            "POST",
            "/admin/routes/support/variants",
            {"name": "student", "provider": "sim", "model": MODEL, "weight": 0, "timeout": None},
        ),
        ("PUT", "/admin/routes/support", {"shadow": {"variant": "student", "sample": 0.2}}),
    ]


def test_admin_errors_are_one_line() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(
                200, json={"routes": {"support": {"variants": {"t": {"provider": "p"}}}}}
            )
        error = {"message": "Route `support` already has a variant `student`.", "type": "x"}
        return httpx.Response(409, json={"error": error})

    admin = AdminClient("http://gw", "k", transport=httpx.MockTransport(handler))
    with pytest.raises(RegisterError, match="409 Route `support` already has"):
        register_live(admin, NewVariant("support", "student", MODEL))


def test_default_names() -> None:
    assert default_name(MODEL) == "student-abc123"
    assert default_name("llama-3-8b") == "student-llama-3-8b"
