"""The gateway's configuration: one YAML file parsed into one typed model.

Unknown keys are errors that name the key. Strings may refer to the environment as ``${NAME}``
(an error when NAME is unset) or ``${NAME:-default}``; secrets belong there, not in the file.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from capture.config import CaptureSettings
from router.config import ProviderConfig, RouteConfig, check_references


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    """Larger request bodies are refused with 413."""
    body_read_timeout_s: float = Field(default=30.0, gt=0)
    """A client that has not sent its whole body within this many seconds gets 408, so slow
    clients cannot hold the gateway's connections forever."""
    access_log: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_delay_s: float = Field(default=0.0, ge=0, le=3600)
    """After SIGTERM, how long calls are still accepted (while /readyz answers 503), so that a
    load balancer polling /readyz stops sending first."""
    shutdown_timeout_s: float = Field(default=120.0, ge=0, le=86400)
    """Then, how long the calls in flight may take; streams still open at the end get an error
    event (``gateway_shutting_down``) and are closed."""


class GatewayKey(_Strict):
    """A key the app presents as ``Authorization: Bearer <key>``.

    Give either ``sha256`` (hex digest of the key, as printed by ``gateway hash-key``) or
    ``key`` (the key itself, from the environment); only the digest is kept in memory.
    """

    name: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    key: SecretStr | None = None
    allow_variant_override: bool = False
    """May force a variant with ``x-gateway-variant`` (for tests and evaluations)."""
    routes: list[str] | None = None
    """Model names (routes) this key may call; all when unset."""
    rpm: int | None = Field(default=None, ge=1)
    """Requests per minute (sliding window)."""
    tpm: int | None = Field(default=None, ge=1)
    """Tokens (prompt + completion) per minute."""
    daily_budget_usd: float | None = Field(default=None, ge=0)
    monthly_budget_usd: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_secret(self) -> GatewayKey:
        if (self.sha256 is None) == (self.key is None):
            raise ValueError("give exactly one of `sha256` and `key`")
        if self.key is not None and not self.key.get_secret_value():
            raise ValueError("`key` is empty (is its environment variable set?)")
        return self

    def digest(self) -> str:
        if self.sha256 is not None:
            return self.sha256.lower()
        assert self.key is not None
        return hash_key(self.key.get_secret_value())


class KeyAuth(_Strict):
    keys: list[GatewayKey] = Field(min_length=1)


class AdminSettings(_Strict):
    """Keys for /admin (route changes, reloads); without them the admin API is disabled."""

    keys: list[GatewayKey] = Field(min_length=1)


class RedisSettings(_Strict):
    """Shared state for several replicas: rate limits and budgets (more with scale-out)."""

    url: str
    """``redis://host:6379/0``; ``rediss://`` for TLS."""
    on_failure: Literal["open", "closed"] = "open"
    """When Redis cannot be reached: admit calls (counted and logged) or refuse them."""
    prefix: str = "gateway"
    timeout_ms: int = Field(default=250, ge=10)
    credits: bool = True
    """A busy key's calls are admitted from credits granted ahead (no round trip per call);
    false: every call waits for Redis's answer."""


class AutopilotSettings(_Strict):
    """The rollout controller (``routes.R.rollout``, ``/admin/routes/R/rollout``): how often it
    looks, how pairs are judged, where decisions are posted. Runs with the capture database."""

    enabled: bool = True
    interval_s: float = Field(default=5.0, gt=0, le=3600)
    """Seconds between two looks at every rollout."""
    lease_ttl_s: float = Field(default=15.0, gt=0)
    """How long the deciding replica's lease lasts without renewal (renewed at every look)."""
    evidence_lag_s: float = Field(default=2.0, ge=0, le=600)
    """Calls are read this long after they were made (the capture writer writes in batches)."""
    judge_route: str | None = None
    """The route that judges shadow and counterfactual pairs (through the gateway's own
    routes); without it no pair is judged and the quality gate cannot pass."""
    rubric: str | None = None
    """The judge's instructions; the judge's built-in rubric when unset."""
    judge_sample: float = Field(default=1.0, ge=0, le=1)
    """The share of pairs that are judged."""
    both_orders: bool = True
    """Judge each pair in both orders (a verdict only when they agree, else a tie)."""
    judge_concurrency: int = Field(default=4, ge=1, le=64)
    judge_batch: int = Field(default=50, ge=1, le=10000)
    """At most this many pairs judged per look."""
    counterfactual_sample: float = Field(default=0.1, ge=0, le=1)
    """Once the candidate answers live calls, the share of them also sent to the incumbent in
    the background, so pairs keep coming."""
    webhook_url: str | None = None
    """Every decision is POSTed here as JSON (in the background, 5 s timeout)."""

    @model_validator(mode="after")
    def _http_webhook(self) -> AutopilotSettings:
        if self.lease_ttl_s <= self.interval_s:
            raise ValueError(
                "lease_ttl_s must be longer than interval_s (the holder renews its lease at "
                "every look; shorter, it would lose it between looks)"
            )
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("webhook_url must start with http:// or https://")
        return self


class Settings(_Strict):
    server: ServerSettings = ServerSettings()
    auth: Literal["none"] | KeyAuth
    """``none`` for local use, or the gateway keys that may call /v1."""
    admin: AdminSettings | None = None
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    default_provider: str | None = None
    """Answers /v1 paths that are not routed by model; the first provider when unset."""
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    redis: RedisSettings | None = None
    """Without it, limits and budgets hold per process."""
    capture: CaptureSettings = CaptureSettings()
    """Recording of calls (the store, sampling, redaction, the writer's queue)."""
    autopilot: AutopilotSettings = AutopilotSettings()
    """The rollout controller."""

    @model_validator(mode="after")
    def _references(self) -> Settings:
        problems = check_references(self.providers, self.routes)
        if self.default_provider is not None and self.default_provider not in self.providers:
            problems.append(f"default_provider: unknown provider {self.default_provider!r}")
        problems += _rollout_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def passthrough_provider(self) -> str:
        return self.default_provider or next(iter(self.providers))


def _rollout_problems(settings: Settings) -> list[str]:
    """Every configured rollout checked as the controller will take it, and the judge route."""
    problems: list[str] = []
    judge = settings.autopilot.judge_route
    if judge is not None and judge not in settings.routes:
        known = ", ".join(settings.routes) or "none"
        problems.append(f"autopilot.judge_route: unknown route {judge!r} (configured: {known})")
    planned = {name: r for name, r in settings.routes.items() if r.rollout is not None}
    if planned:
        from gateway.rolloutplan import rollout_config  # numpy, only when a rollout is set

        for name, route in planned.items():
            assert route.rollout is not None
            try:
                rollout_config(name, route, route.rollout)
            except ValueError as exc:
                problems.append(f"routes.{name}.rollout: {exc}")
    return problems


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(node: Any, environ: dict[str, str] | os._Environ[str], path: str = "") -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in every string of a parsed YAML tree."""
    if isinstance(node, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = environ.get(name)
            if value is None:
                if default is None:
                    where = path or "the top level"
                    raise ConfigError(f"{where}: environment variable {name} is not set")
                return default
            return value

        return _ENV_REF.sub(substitute, node)
    if isinstance(node, dict):
        return {
            k: interpolate(v, environ, f"{path}.{k}" if path else str(k)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [interpolate(v, environ, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        elif item["type"] == "missing":
            lines.append(f"{where}: required key is missing")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message}")
    return "; ".join(lines)


def parse_settings(data: Any, environ: dict[str, str] | os._Environ[str] | None = None) -> Settings:
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping at the top level")
    resolved = interpolate(data, os.environ if environ is None else environ)
    try:
        return Settings.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def load_settings(path: str | Path, environ: dict[str, str] | None = None) -> Settings:
    """Read, interpolate and validate a configuration file; ConfigError says what is wrong."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    try:
        return parse_settings(data, environ)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def with_upstream_override(settings: Settings, base_url: str) -> Settings:
    """The same settings with every provider served from ``base_url`` (the simulator)."""
    providers = {
        name: provider.model_copy(update={"base_url": base_url.rstrip("/"), "api_key": None})
        for name, provider in settings.providers.items()
    }
    return settings.model_copy(update={"providers": providers})
