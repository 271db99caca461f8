"""The simulator's profile: per-model latency and injected faults, one typed YAML file.

Model names are matched against fnmatch globs in file order, first match wins, else
``default``. See examples/simulator-profile.yaml for a documented file. Without a file the
built-in profile applies: student-like models (ft:*, gpt-3.5*, *mini*, *haiku*) answer with a
120 ms time to first token and 11 ms per token, teacher-like ones (gpt-4*, o1*, o3*,
claude-*opus*, claude-*sonnet*) with 450 ms and 40 ms (so a teacher is ~3.6x slower end to end),
anything else (embeddings, ...) in 20 ms. Students are listed first so that gpt-4o-mini is a
student.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

FaultKind = Literal["429", "500", "503", "529", "timeout", "drop", "error-event"]
FAULT_KINDS: tuple[str, ...] = ("429", "500", "503", "529", "timeout", "drop", "error-event")
DEFAULT_TIMEOUT_DELAY_MS = 30_000.0
DEFAULT_DROP_AFTER = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Latency(_Strict):
    """How long a reply takes: ttft_ms before the first token, token_ms for each one after;
    and how good it is (``quality``).

    ``jitter`` is a fraction: both delays are scaled by a factor in [1 - jitter, 1 + jitter],
    drawn from the request's content seed, so the same request always takes the same time.
    """

    ttft_ms: float = Field(default=0.0, ge=0)
    token_ms: float = Field(default=0.0, ge=0)
    jitter: float = Field(default=0.0, ge=0, le=1)
    quality: float = Field(default=1.0, ge=0, le=1)
    """The share of chat answers without a defect (``simulator.quality``): 1, every answer is
    sound; lower, the rest are cut off or malformed where a judge and format checks see it."""


class FaultRule(_Strict):
    """Inject ``kind`` into a share ``rate`` of the calls whose model matches ``model``."""

    model: str = "*"
    kind: FaultKind
    rate: float = Field(default=1.0, ge=0, le=1)
    delay_ms: float = Field(default=DEFAULT_TIMEOUT_DELAY_MS, ge=0)
    after: int = Field(default=DEFAULT_DROP_AFTER, ge=0)

    @field_validator("kind", mode="before")
    @classmethod
    def _status_as_text(cls, value: Any) -> Any:
        # YAML reads `kind: 429` as an integer.
        return str(value) if isinstance(value, int) else value


class QualityRule(_Strict):
    """From now on (or from the start, in a profile), the answers of models matching ``model``
    (an fnmatch glob; a plain name matches itself) to requests whose text contains ``match``
    (every request when None) have this ``quality`` (`Latency.quality`). Among the rules that
    match a request the latest wins (``simulator.slices``)."""

    model: str = Field(min_length=1)
    quality: float = Field(ge=0, le=1, strict=True)
    match: str | None = Field(default=None, min_length=1)

    @field_validator("quality", mode="before")
    @classmethod
    def _whole_numbers_too(cls, value: Any) -> Any:
        # Strict: no "0.5" strings and no booleans, but 0 and 1 are numbers like 0.5.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Profile(_Strict):
    default: Latency = Latency()
    models: dict[str, Latency] = Field(default_factory=dict)
    faults: list[FaultRule] = Field(default_factory=list)
    quality_rules: list[QualityRule] = Field(default_factory=list)
    """Per-slice quality from the start; ``POST /_sim/quality`` adds more at run time."""
    seed: int = 0
    """Seeds the draws that decide whether a fault with rate < 1 fires."""

    def latency_for(self, model: str) -> Latency:
        for pattern, latency in self.models.items():
            if fnmatchcase(model, pattern):
                return latency
        return self.default

    def faults_for(self, model: str) -> tuple[FaultRule, ...]:
        return tuple(rule for rule in self.faults if fnmatchcase(model, rule.model))


_STUDENT = Latency(ttft_ms=120.0, token_ms=11.0, jitter=0.1)
_TEACHER = Latency(ttft_ms=450.0, token_ms=40.0, jitter=0.1)

BUILTIN_PROFILE = Profile(
    default=Latency(ttft_ms=20.0, token_ms=0.0),
    models={
        "ft:*": _STUDENT,
        "gpt-3.5*": _STUDENT,
        "*mini*": _STUDENT,
        "*haiku*": _STUDENT,
        "gpt-4*": _TEACHER,
        "o1*": _TEACHER,
        "o3*": _TEACHER,
        "claude-*opus*": _TEACHER,
        "claude-*sonnet*": _TEACHER,
    },
)


def parse_profile(data: Any) -> Profile:
    """A profile from parsed YAML; an empty document is the all-zero default."""
    return Profile.model_validate(data if data is not None else {})


def load_profile(path: str | Path | None) -> Profile:
    """The profile in ``path``, or the built-in one when no path is given."""
    if path is None:
        return BUILTIN_PROFILE
    with open(path, encoding="utf-8") as handle:
        return parse_profile(yaml.safe_load(handle))
