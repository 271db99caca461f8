"""Typed configuration of providers and routes.

Providers, routes and variants are separate concepts with separate types. Every model rejects
unknown keys so a typo in the YAML file is an error that names the key, not a silent default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Api = Literal["openai", "anthropic", "azure"]
"""The API a provider speaks: OpenAI's (also vLLM, SGLang, Ollama, Together, Fireworks, Gemini's
OpenAI-compatible endpoint), Anthropic's Messages API, or Azure OpenAI (OpenAI's format at
deployment URLs, with the ``api-key`` header)."""


class ProviderConfig(_Strict):
    """An upstream and the API it speaks."""

    base_url: str
    """Up to and including the version prefix, e.g. ``https://api.openai.com/v1``,
    ``https://api.anthropic.com/v1``; for Azure, the resource (``https://NAME.openai.azure.com``)
    with ``api_version`` set, or its v1 API (``https://NAME.openai.azure.com/openai/v1``)."""
    api: Api = "openai"
    api_key: SecretStr | None = None
    """Attached as ``Authorization: Bearer`` (openai), ``x-api-key`` (anthropic) or ``api-key``
    (azure); comes from the environment, never the file."""
    anthropic_version: str = "2023-06-01"
    """``anthropic-version`` sent to an Anthropic provider when the client did not send one."""
    api_version: str | None = None
    """Azure: the ``api-version`` of deployment URLs (``/openai/deployments/MODEL/...``); unset,
    the provider is Azure's v1 API at ``base_url``."""
    max_tokens: int = Field(default=4096, ge=1)
    """The ``max_tokens`` sent to an Anthropic provider (which requires it) for an OpenAI call
    that set none; a variant's ``max_tokens`` wins."""
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=600.0, gt=0)
    """Longest wait for the next bytes of a response (the first byte included)."""
    pool_size: int = Field(default=512, ge=1)
    """Most open connections to this provider; streams hold one each for their duration."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra headers sent on every call (e.g. ``OpenAI-Organization``)."""

    def api_key_value(self) -> str:
        return self.api_key.get_secret_value() if self.api_key is not None else ""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _api_version_is_azure(self) -> ProviderConfig:
        if self.api_version is not None and self.api != "azure":
            raise ValueError("api_version applies to `api: azure` providers only")
        return self

    @field_validator("api_key")
    @classmethod
    def _empty_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        return value


class VariantConfig(_Strict):
    """One way of answering a route: a provider and the model name it knows."""

    provider: str
    model: str = Field(min_length=1)
    """The provider's name for the model; for Azure's deployment URLs, the deployment."""
    weight: int = Field(default=1, ge=0)
    """Share of the route's traffic, relative to the other variants; 0 keeps it idle."""
    timeout: float | None = Field(default=None, gt=0)
    """Longest wait for the next bytes from this variant; the provider's read_timeout if unset."""
    max_tokens: int | None = Field(default=None, ge=1)
    """The default ``max_tokens`` when this variant's provider speaks Anthropic's API and the
    call set none; the provider's ``max_tokens`` if unset."""

    @field_validator("model")
    @classmethod
    def _not_a_dot_segment(cls, value: str) -> str:
        if value in (".", ".."):
            # In a deployment URL it would be a path segment taking the call out of
            # /openai/deployments/ at any server that normalises paths.
            raise ValueError(f"{value!r} is not a model name")
        return value


class RetryConfig(_Strict):
    """Retries of one variant before the route falls back to the next."""

    attempts: int = Field(default=2, ge=1, le=10)
    """Calls per variant, the first included."""
    backoff_ms: float = Field(default=100.0, ge=0)
    """Wait before the second call; doubled for each further one."""
    max_backoff_ms: float = Field(default=2000.0, ge=0)
    """Longest wait; an upstream that asks (Retry-After) for longer is left for the fallback."""


class BreakerConfig(_Strict):
    """Skip a variant after ``failures`` consecutive failures, for ``cooldown_s`` seconds."""

    failures: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)


class ShadowConfig(_Strict):
    """Send a copy of a share of the calls to ``variant``; its answer is recorded, not returned."""

    variant: str
    sample: float = Field(default=1.0, ge=0, le=1)
    live: bool = False
    """Whether ``variant`` also answers its own share (its weight) of live calls; copies are made
    only of the calls another variant answers. Off: the shadow variant answers copies only,
    whatever its weight. A rollout turns it on: its weights decide every variant's share."""


class SliceRouting(_Strict):
    """The split of one slice of a route's calls: those whose tags hold every ``match`` pair
    (``x-gateway-tags``, or the body's OpenAI ``metadata``) go by these weights instead of the
    variants' own. The first slice that matches wins; one variant at a weight above 0 pins the
    slice to it. Variants not named get nothing of the slice."""

    match: dict[str, str] = Field(min_length=1)
    weights: dict[str, int] = Field(min_length=1)

    @field_validator("weights")
    @classmethod
    def _some_weight(cls, value: dict[str, int]) -> dict[str, int]:
        if any(w < 0 for w in value.values()):
            raise ValueError("slice weights must be >= 0")
        if not any(w > 0 for w in value.values()):
            raise ValueError("a slice needs at least one variant with a weight above 0")
        return value


class CounterfactualConfig(_Strict):
    """Once the candidate ``of`` answers live calls, copy a ``sample`` of the calls it answers to
    ``variant`` (the incumbent) in the background, as a shadow copy marked
    ``gateway.purpose=counterfactual``, so judged pairs keep coming. Unlike ``shadow``,
    ``variant`` keeps its own live share."""

    of: str
    variant: str
    sample: float = Field(default=1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _differ(self) -> CounterfactualConfig:
        if self.of == self.variant:
            raise ValueError("counterfactual: `of` and `variant` must differ")
        return self


class _Finite(_Strict):
    """A rollout's settings: every number finite (a state saved as JSON must load again)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RolloutGates(_Finite):
    """What each stage of a rollout asks of the candidate (``autopilot.gates.StageGates``; the
    defaults are the same, and a test keeps them so). Margins are on [0, 1] scales."""

    quality_margin: float = Field(default=0.05, ge=0, lt=0.5)
    """The judge's win rate (ties as halves) must stay >= 0.5 - this."""
    error_margin: float | None = Field(default=0.03, ge=0, le=1)
    feedback_margin: float | None = Field(default=None, ge=0, le=1)
    feedback_range: tuple[float, float] = (0.0, 1.0)
    latency_p95_ms: float | None = Field(default=None, gt=0)
    ttft_p95_ms: float | None = Field(default=None, gt=0)
    latency_quantile: float = Field(default=0.95, gt=0, lt=1)
    max_cost_ratio: float | None = Field(default=1.0, gt=0)
    watch_window: int | None = Field(default=2000, ge=1)
    min_samples: int = Field(default=200, ge=1)
    min_dwell_s: float = Field(default=0.0, ge=0)
    max_duration_s: float | None = Field(default=None, gt=0)
    """None: a stage may last forever."""
    alpha: float = Field(default=0.05, gt=0, lt=1)
    alpha_rollback: float = Field(default=0.05, gt=0, lt=1)


class RouteRollout(_Finite):
    """A rollout of ``candidate`` on this route (``autopilot.controller.RolloutConfig`` without
    the route), started once when the gateway first sees it; never restarted once finished."""

    candidate: str
    incumbent: str | None = None
    """The variant with the largest weight when unset."""
    stages: list[float] = Field(
        default_factory=lambda: [0.0, 0.05, 0.25, 0.5], min_length=1, max_length=20
    )
    target: float = Field(default=0.9, ge=0, le=1)
    holdout: float = Field(default=0.1, ge=0, lt=1)
    shadow_sample: float = Field(default=0.2, ge=0, le=1)
    slice_keys: list[str] = Field(default_factory=list, max_length=8)
    max_slices: int = Field(default=1, ge=1, le=1000)
    retries: int = Field(default=0, ge=0)
    gates: RolloutGates = RolloutGates()

    def incumbent_in(self, variants: dict[str, VariantConfig]) -> str:
        """The incumbent: as given, else the variant with the largest weight (first of ties)."""
        if self.incumbent is not None:
            return self.incumbent
        return max(variants, key=lambda name: variants[name].weight)


class CacheConfig(_Strict):
    """The response cache of a route (off unless the route has this section)."""

    ttl_s: float = Field(default=3600.0, gt=0)
    deterministic_only: bool = True
    """Cache only calls with ``temperature: 0`` or a ``seed``."""


class RouteConfig(_Strict):
    """A model name the app sends, and the variants that may answer it."""

    variants: dict[str, VariantConfig] = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    """Other model names the app may send for this route (e.g. dated snapshots)."""
    sticky: Literal["user"] | None = None
    """``user``: a user always gets the same variant (for given weights), on every replica."""
    fallbacks: list[str] = Field(default_factory=list)
    """Variants tried, in order, when the chosen one fails before its first byte."""
    shadow: ShadowConfig | None = None
    slices: list[SliceRouting] = Field(default_factory=list)
    """Per-slice splits, tried in order before the variants' own weights."""
    counterfactual: CounterfactualConfig | None = None
    rollout: RouteRollout | None = None
    """A rollout of a candidate variant, moved by the gateway's autopilot."""
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    capture: bool = True
    """Record this route's calls (the capture store)."""
    cache: CacheConfig | None = None
    """Answer repeated identical calls from the response cache."""
    redact: list[Literal["email", "phone", "card", "secret"]] | None = None
    """What is redacted before this route's calls are stored; the capture setting when unset,
    ``[]`` for nothing."""

    def answers_copies_only(self) -> str | None:
        """The shadow variant when it takes no live share (``shadow.live`` off), else None."""
        return self.shadow.variant if self.shadow is not None and not self.shadow.live else None

    @model_validator(mode="after")
    def _consistent(self) -> RouteConfig:
        known = ", ".join(self.variants)
        named = [*self.fallbacks, *([self.shadow.variant] if self.shadow else [])]
        if self.counterfactual is not None:
            named += [self.counterfactual.of, self.counterfactual.variant]
        for routing in self.slices:
            named += list(routing.weights)
        if self.rollout is not None:
            named += [self.rollout.candidate, *filter(None, [self.rollout.incumbent])]
        for name in named:
            if name not in self.variants:
                raise ValueError(f"unknown variant {name!r} (this route has: {known})")
        copies_only = self.answers_copies_only()
        if copies_only is None and not any(v.weight > 0 for v in self.variants.values()):
            raise ValueError("at least one variant needs a weight above 0")
        if copies_only is not None and not any(
            v.weight > 0 for name, v in self.variants.items() if name != copies_only
        ):
            raise ValueError("at least one variant besides the shadow needs a weight above 0")
        for routing in self.slices:
            if not any(w > 0 for name, w in routing.weights.items() if name != copies_only):
                raise ValueError(
                    f"slice {routing.match}: at least one variant besides the shadow "
                    f"({copies_only}) needs a weight above 0 (or set shadow.live)"
                )
        return self


def check_references(
    providers: dict[str, ProviderConfig], routes: dict[str, RouteConfig]
) -> list[str]:
    """Every problem with names that point nowhere or twice, as ``path: message`` lines."""
    problems: list[str] = []
    claimed: dict[str, str] = {}
    for route_name, route in routes.items():
        for variant_name, variant in route.variants.items():
            if variant.provider not in providers:
                known = ", ".join(sorted(providers)) or "none"
                problems.append(
                    f"routes.{route_name}.variants.{variant_name}.provider: "
                    f"unknown provider {variant.provider!r} (configured: {known})"
                )
        for name in [route_name, *route.aliases]:
            if name in claimed and claimed[name] != route_name:
                problems.append(
                    f"routes.{route_name}: model name {name!r} is already served by route "
                    f"{claimed[name]!r}"
                )
            claimed.setdefault(name, route_name)
    return problems
