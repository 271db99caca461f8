from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.settings import ConfigError, KeyAuth, hash_key, load_settings, parse_settings

BASE: dict[str, Any] = {
    "auth": "none",
    "providers": {"openai": {"base_url": "http://127.0.0.1:9000/v1/"}},
    "routes": {"gpt-4": {"variants": {"teacher": {"provider": "openai", "model": "gpt-4"}}}},
}


def with_(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


def test_minimal_config_and_defaults() -> None:
    settings = parse_settings(BASE, environ={})
    assert settings.auth == "none"
    assert settings.server.port == 8080
    assert settings.server.max_body_bytes == 10 * 1024 * 1024
    assert settings.providers["openai"].base_url == "http://127.0.0.1:9000/v1"
    assert settings.passthrough_provider == "openai"


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (with_(servre={}), "servre: unknown key"),
        (with_(server={"prot": 1}), "server.prot: unknown key"),
        (
            with_(
                routes={"m": {"variants": {"a": {"provider": "openai", "model": "x", "wieght": 2}}}}
            ),
            "routes.m.variants.a.wieght: unknown key",
        ),
        (
            with_(providers={"openai": {"base_url": "http://x", "timeout": 3}}),
            "providers.openai.timeout: unknown key",
        ),
    ],
)
def test_unknown_keys_are_named(config: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(config, environ={})
    assert named in str(caught.value)


def test_other_mistakes_say_where() -> None:
    with pytest.raises(ConfigError, match="unknown provider 'azure'"):
        parse_settings(
            with_(routes={"m": {"variants": {"a": {"provider": "azure", "model": "x"}}}}),
            environ={},
        )
    with pytest.raises(ConfigError, match="auth: required key is missing"):
        parse_settings({k: v for k, v in BASE.items() if k != "auth"}, environ={})
    with pytest.raises(ConfigError, match="at least one variant needs a weight above 0"):
        parse_settings(
            with_(
                routes={"m": {"variants": {"a": {"provider": "openai", "model": "x", "weight": 0}}}}
            ),
            environ={},
        )
    with pytest.raises(ConfigError, match="must start with http"):
        parse_settings(with_(providers={"openai": {"base_url": "api.openai.com"}}), environ={})


def test_environment_interpolation() -> None:
    config = with_(
        providers={
            "openai": {
                "base_url": "${BASE:-http://127.0.0.1:9000}/v1",
                "api_key": "${KEY}",
                "read_timeout": "${TIMEOUT}",
            }
        }
    )
    settings = parse_settings(config, environ={"KEY": "sk-abc", "TIMEOUT": "12.5"})
    provider = settings.providers["openai"]
    assert provider.base_url == "http://127.0.0.1:9000/v1"
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "sk-abc"
    assert provider.read_timeout == 12.5
    assert "sk-abc" not in repr(settings)
    with pytest.raises(ConfigError, match=r"providers.openai.api_key: environment variable KEY"):
        parse_settings(config, environ={"TIMEOUT": "1"})


def test_empty_provider_key_means_no_key() -> None:
    config = with_(providers={"openai": {"base_url": "http://x/v1", "api_key": "${K:-}"}})
    assert parse_settings(config, environ={}).providers["openai"].api_key is None


def test_gateway_keys_are_kept_hashed() -> None:
    digest = hash_key("sk-two")
    settings = parse_settings(
        with_(auth={"keys": [{"name": "a", "key": "sk-one"}, {"name": "b", "sha256": digest}]}),
        environ={},
    )
    assert isinstance(settings.auth, KeyAuth)
    assert [k.digest() for k in settings.auth.keys] == [hash_key("sk-one"), digest]
    with pytest.raises(ConfigError, match="exactly one of"):
        parse_settings(with_(auth={"keys": [{"name": "a"}]}), environ={})


def test_load_settings_reports_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_settings(scalar)


def test_the_shipped_config_is_valid() -> None:
    settings = load_settings(Path(__file__).parents[2] / "config" / "gateway.yaml", environ={})
    assert "gpt-4o" in settings.routes
