"""The rollout's configuration: ``autopilot:`` and ``routes.R.rollout:`` checked as the
controller will take them, errors naming the key."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

from autopilot.gates import StageGates
from gateway.rolloutplan import rollout_config, stage_gates
from gateway.settings import ConfigError, parse_settings
from router.config import RolloutGates


def _settings(rollout: Any = None, **extra: Any) -> dict[str, Any]:
    route: dict[str, Any] = {
        "variants": {
            "teacher": {"provider": "sim", "model": "gpt-4o", "weight": 9},
            "student": {"provider": "sim", "model": "gpt-4o-mini", "weight": 1},
        }
    }
    if rollout is not None:
        route["rollout"] = rollout
    return {
        "auth": "none",
        "providers": {"sim": {"base_url": "http://127.0.0.1:9/v1"}},
        "routes": {
            "support": route,
            "judge": {"variants": {"j": {"provider": "sim", "model": "x"}}},
        },
        **extra,
    }


def test_the_gates_defaults_are_the_controllers() -> None:
    assert stage_gates(RolloutGates()) == StageGates()
    assert {f.name for f in fields(StageGates)} - set(RolloutGates.model_fields) == {"slices"}


def test_a_configured_rollout_becomes_the_controllers_config() -> None:
    settings = parse_settings(
        _settings(
            {
                "candidate": "student",
                "stages": [0, 0.5],
                "target": 0.9,
                "slice_keys": ["task"],
                "max_slices": 3,
                "gates": {"quality_margin": 0.15, "min_samples": 20, "max_duration_s": 60},
            },
            autopilot={"interval_s": 0.2, "judge_route": "judge", "webhook_url": "http://h/x"},
        )
    )
    route = settings.routes["support"]
    assert route.rollout is not None
    config = rollout_config("support", route, route.rollout)
    assert config.incumbent == "teacher"  # the heaviest variant
    assert config.stages == (0.0, 0.5) and config.slice_keys == ("task",)
    assert config.gates.quality_margin == 0.15 and config.gates.max_duration_s == 60
    assert config.gates.slices == 3
    assert settings.autopilot.interval_s == 0.2


@pytest.mark.parametrize(
    ("rollout", "autopilot", "message"),
    [
        ({"candidate": "pupil"}, {}, "routes.support: unknown variant 'pupil'"),
        ({"candidate": "student", "stagez": [0]}, {}, "routes.support.rollout.stagez: unknown key"),
        (
            {"candidate": "student", "stages": [0.5, 0.1]},
            {},
            "routes.support.rollout: stage shares must lie in [0, 1] and increase",
        ),
        (
            {"candidate": "student", "target": 0.95, "holdout": 0.1},
            {},
            "routes.support.rollout: need 0 <= holdout < 1 and target <= 1 - holdout",
        ),
        (
            {"candidate": "teacher"},
            {},
            "routes.support.rollout: the candidate must differ from the incumbent",
        ),
        (
            {"candidate": "student", "max_slices": 2},
            {},
            "routes.support.rollout: max_slices must be >= 1, and 1 without slice_keys",
        ),
        (
            {"candidate": "student", "gates": {"alpha": 2}},
            {},
            "routes.support.rollout.gates.alpha: Input should be less than 1",
        ),
        (None, {"judge_route": "nope"}, "autopilot.judge_route: unknown route 'nope'"),
        (None, {"interval_s": 0}, "autopilot.interval_s: Input should be greater than 0"),
        (None, {"webhook_url": "ftp://x"}, "webhook_url must start with http:// or https://"),
        (None, {"lease_tt_s": 1}, "autopilot.lease_tt_s: unknown key"),
        (
            None,
            {"interval_s": 10, "lease_ttl_s": 10},
            "autopilot: lease_ttl_s must be longer than interval_s",
        ),
    ],
)
def test_configuration_errors_name_the_key(
    rollout: Any, autopilot: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(_settings(rollout, autopilot=autopilot))
    assert message in str(caught.value)
