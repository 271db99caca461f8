"""An Azure deployment URL holds the variant's model as one path segment: whatever the model
name (from the config file or the admin API), the call cannot leave its deployment's path."""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

import pytest
from pydantic import ValidationError

from router.config import ProviderConfig, VariantConfig
from router.upstream import AiohttpUpstream

AZURE = ProviderConfig(base_url="https://acme.openai.azure.com", api="azure", api_version="v")


def _target(model: str) -> tuple[str, str, str]:
    """(path, query, the URL's raw path) of a chat call to the deployment ``model``."""

    async def build() -> tuple[str, str, str]:
        upstream = AiohttpUpstream("azure", AZURE)
        try:
            path, query = upstream.target("/chat/completions", model)
            return path, query, upstream._url(path, query).raw_path
        finally:
            await upstream.close()

    return asyncio.run(build())


@pytest.mark.parametrize(
    "model", ["gpt-4o", "a/../../b", "x?api-version=evil#frag", "%2F..%2F", "a b", "é", ".x."]
)
def test_a_model_name_stays_one_segment_of_its_deployment_path(model: str) -> None:
    path, query, raw = _target(model)
    assert query == "api-version=v"
    assert raw == path
    assert path.startswith("/openai/deployments/") and path.endswith("/chat/completions")
    name = path.removeprefix("/openai/deployments/").removesuffix("/chat/completions")
    assert unquote(name) == model
    assert not set(name) & set("/?#")


@pytest.mark.parametrize("model", ["..", ".", ""])
def test_a_model_that_would_be_a_dot_segment_or_empty_is_refused(model: str) -> None:
    """``/openai/deployments/../chat/completions`` is ``/openai/chat/completions`` to any server
    that normalises paths; percent-encoding the dots does not help against those that decode
    first. So the name is refused wherever a variant is made (file, reload, admin API)."""
    with pytest.raises(ValidationError) as refused:
        VariantConfig(provider="azure", model=model)
    assert "model" in str(refused.value)
