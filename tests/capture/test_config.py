from __future__ import annotations

import pytest
from pydantic import ValidationError

from capture.config import CaptureSettings, ModelPrice


def test_defaults() -> None:
    settings = CaptureSettings()
    assert settings.enabled and settings.sample == 1.0
    assert settings.database_url == "sqlite+aiosqlite:///gateway.db"
    assert settings.redact == ["email", "phone", "card", "secret"]
    assert (settings.queue_size, settings.batch_size, settings.flush_interval_ms) == (
        10_000,
        256,
        200,
    )
    assert settings.retry_max_backoff_s == 0.5 and settings.prices == {}
    assert (settings.connect_timeout_s, settings.statement_timeout_s) == (5.0, 10.0)


def test_the_section_as_it_appears_in_the_yaml_file() -> None:
    settings = CaptureSettings.model_validate(
        {
            "database_url": "postgresql+asyncpg://gw@db:5432/gateway",
            "sample": 0.25,
            "redact": ["email", "secret"],
            "prices": {"ft:gpt-4o-mini:acme::s1": {"input": 0.3, "output": 1.2}},
        }
    )
    assert settings.prices["ft:gpt-4o-mini:acme::s1"] == ModelPrice(input=0.3, output=1.2)
    assert settings.prices["ft:gpt-4o-mini:acme::s1"].cached_input is None


@pytest.mark.parametrize(
    "bad",
    [
        {"sampel": 0.5},
        {"sample": 1.5},
        {"redact": ["ssn"]},
        {"queue_size": 0},
        {"prices": {"m": {"input": 1}}},
        {"prices": {"m": {"input": 1, "output": 1, "extra": 2}}},
        {"prices": {"m": {"input": -1, "output": 1}}},
    ],
)
def test_bad_values_and_unknown_keys_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CaptureSettings.model_validate(bad)


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        settings = CaptureSettings()
        settings.sample = 0.5


def test_a_price_may_give_cache_writes() -> None:
    settings = CaptureSettings.model_validate(
        {
            "prices": {
                "claude-opus-5-5": {
                    "input": 4,
                    "cached_input": 0.2,
                    "cache_write": 5,
                    "output": 20,
                }
            }
        }
    )
    assert settings.prices["claude-opus-5-5"].cache_write == 5
    assert (
        CaptureSettings.model_validate({"prices": {"m": {"input": 1, "output": 1}}})
        .prices["m"]
        .cache_write
        is None
    )
    with pytest.raises(ValidationError, match="cache_write"):
        CaptureSettings.model_validate(
            {"prices": {"m": {"input": 1, "output": 1, "cache_write": -1}}}
        )
