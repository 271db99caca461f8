"""Registering a fine-tuned model as a variant of a route: live through a running gateway's
admin API, or in the config file (comments and layout kept), or both (edit, then reload).

Admin API calls (``Authorization: Bearer <admin key>``):

    GET  /admin/routes                        the route's variants (to pick the provider)
    POST /admin/routes/{route}/variants       {"name", "provider", "model", "weight", "timeout"}
    PUT  /admin/routes/{route}                {"shadow": {"variant": name, "sample": s}}
    POST /admin/reload                        after a config edit, with --config and --admin

A change made through the admin API lives until the gateway's next reload or restart; the
config file edit is what lasts.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from exporter.errors import RegisterError

ADMIN_KEY_ENV = "GATEWAY_ADMIN_KEY"


@dataclass(frozen=True, slots=True)
class NewVariant:
    route: str
    name: str
    model: str
    provider: str | None = None
    """None: the provider of the route's first variant."""
    weight: int = 0
    shadow: float | None = None
    """Share of the route's calls copied to the new variant; None: no shadow change."""
    timeout: float | None = None
    price: tuple[float, float] | None = None
    """USD per 1M input and output tokens, written to ``capture.prices`` for the model."""
    provider_url: str | None = None
    """Where the provider serves (an OpenAI-compatible endpoint: vLLM, SGLang, a host): the
    provider is added to the file with this ``base_url`` when it is not there yet."""
    provider_key_env: str | None = None
    """The environment variable holding the new provider's key (``api_key: ${VAR}``)."""


def default_name(model: str) -> str:
    """``student-<id>`` from ``ft:base:org:suffix:id``."""
    tail = model.rsplit(":", 1)[-1] if model.startswith("ft:") else model
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in tail)[-24:]
    return f"student-{cleaned or 'new'}"


class AdminClient:
    def __init__(
        self, url: str, key: str | None, transport: httpx.BaseTransport | None = None
    ) -> None:
        key = key or os.environ.get(ADMIN_KEY_ENV)
        if not key:
            raise RegisterError(f"the admin API needs a key: --admin-key or ${ADMIN_KEY_ENV}")
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            headers={"authorization": f"Bearer {key}"},
            timeout=15.0,
            transport=transport,
        )

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise RegisterError(f"cannot reach the gateway at {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise RegisterError(f"{method} {path}: {response.status_code} {message}")
        return response.json() if response.content else None

    def close(self) -> None:
        self._client.close()


def register_live(admin: AdminClient, new: NewVariant) -> dict[str, Any]:
    """Add the variant on the running gateway (and its shadow); the route as it is now."""
    routes = admin.call("GET", "/admin/routes")["routes"]
    route = routes.get(new.route)
    if route is None:
        raise RegisterError(f"the gateway has no route {new.route!r} (it has: {', '.join(routes)})")
    provider = new.provider or next(iter(route["variants"].values()))["provider"]
    body = {
        "name": new.name,
        "provider": provider,
        "model": new.model,
        "weight": new.weight,
        "timeout": new.timeout,
    }
    described: dict[str, Any] = admin.call("POST", f"/admin/routes/{new.route}/variants", body)
    if new.shadow is not None:
        shadow = {"variant": new.name, "sample": new.shadow}
        described = admin.call("PUT", f"/admin/routes/{new.route}", {"shadow": shadow})
    return described


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments, order and quoting are kept
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def register_in_file(path: Path, new: NewVariant) -> str | None:
    """Add the variant to the config file; the shadow it replaced, if any."""
    yaml = _yaml()
    try:
        document = yaml.load(path.read_text())
    except OSError as exc:
        raise RegisterError(f"cannot read {path}: {exc.strerror}") from None
    except YAMLError as exc:
        raise RegisterError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    routes = document.get("routes") if isinstance(document, dict) else None
    route = routes.get(new.route) if isinstance(routes, dict) else None
    if not isinstance(route, dict) or not isinstance(route.get("variants"), dict):
        known = ", ".join(routes or {}) if isinstance(routes, dict) else "none"
        raise RegisterError(f"{path} has no route {new.route!r} with variants (routes: {known})")
    variants = route["variants"]
    if new.name in variants:
        raise RegisterError(f"route {new.route!r} already has a variant {new.name!r}: give --name")
    first = next(iter(variants.values()), None)
    provider = new.provider or (first.get("provider") if isinstance(first, dict) else None)
    providers = document.get("providers")
    if (
        new.provider_url is not None
        and provider is not None
        and isinstance(providers, dict)
        and provider not in providers
    ):
        entry_provider = CommentedMap([("base_url", new.provider_url)])
        if new.provider_key_env:
            entry_provider["api_key"] = f"${{{new.provider_key_env}}}"
        providers[provider] = entry_provider
    if provider is None or (isinstance(providers, dict) and provider not in providers):
        raise RegisterError(
            f"unknown provider {provider!r} in {path} (give --provider, and --provider-url to "
            "add it)"
        )
    entry = CommentedMap([("provider", provider), ("model", new.model), ("weight", new.weight)])
    if new.timeout is not None:
        entry["timeout"] = new.timeout
    if isinstance(first, CommentedMap) and first.fa.flow_style():
        entry.fa.set_flow_style()
    variants[new.name] = entry
    replaced = None
    if new.shadow is not None:
        old = route.get("shadow")
        replaced = old.get("variant") if isinstance(old, dict) else None
        shadow = CommentedMap([("variant", new.name), ("sample", new.shadow)])
        shadow.fa.set_flow_style()
        route["shadow"] = shadow
    if new.price is not None:
        capture = document.get("capture")
        if capture is None:
            capture = document["capture"] = CommentedMap()
        if not isinstance(capture, dict):
            raise RegisterError(f"{path}: `capture` is not a mapping; cannot add the price")
        prices = capture.get("prices")
        if prices is None:
            prices = capture["prices"] = CommentedMap()
        price = CommentedMap([("input", new.price[0]), ("output", new.price[1])])
        price.fa.set_flow_style()
        prices[new.model] = price
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    _replace(path, buffer.getvalue())
    return replaced


def _replace(path: Path, text: str) -> None:
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.chmod(name, path.stat().st_mode & 0o777)
        os.replace(name, path)
    except OSError as exc:
        raise RegisterError(f"cannot write {path}: {exc.strerror}") from None
