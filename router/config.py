"""Typed configuration of providers and routes.

Providers, routes and variants are separate concepts with separate types. Every model rejects
unknown keys so a typo in the YAML file is an error that names the key, not a silent default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Strict):
    """An OpenAI-compatible upstream."""

    base_url: str
    """Up to and including the version prefix, e.g. ``https://api.openai.com/v1``."""
    api_key: SecretStr | None = None
    """Attached as ``Authorization: Bearer``; comes from the environment, never the file."""
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=600.0, gt=0)
    """Longest wait for the next bytes of a response (the first byte included)."""
    pool_size: int = Field(default=512, ge=1)
    """Most open connections to this provider; streams hold one each for their duration."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra headers sent on every call (e.g. ``OpenAI-Organization``)."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _empty_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        return value


class VariantConfig(_Strict):
    """One way of answering a route: a provider and the model name it knows."""

    provider: str
    model: str
    weight: int = Field(default=1, ge=0)
    """Share of the route's traffic, relative to the other variants; 0 keeps it idle."""


class RouteConfig(_Strict):
    """A model name the app sends, and the variants that may answer it."""

    variants: dict[str, VariantConfig] = Field(min_length=1)

    @field_validator("variants")
    @classmethod
    def _some_weight(cls, value: dict[str, VariantConfig]) -> dict[str, VariantConfig]:
        if not any(v.weight > 0 for v in value.values()):
            raise ValueError("at least one variant needs a weight above 0")
        return value


def check_references(
    providers: dict[str, ProviderConfig], routes: dict[str, RouteConfig]
) -> list[str]:
    """Every problem with names that point nowhere, as ``path: message`` lines."""
    problems: list[str] = []
    for route_name, route in routes.items():
        for variant_name, variant in route.variants.items():
            if variant.provider not in providers:
                known = ", ".join(sorted(providers)) or "none"
                problems.append(
                    f"routes.{route_name}.variants.{variant_name}.provider: "
                    f"unknown provider {variant.provider!r} (configured: {known})"
                )
    return problems
