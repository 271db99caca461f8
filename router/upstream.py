"""Provider clients: per provider, pooled keep-alive connections for its POSTs (``router.h1``)
and an aiohttp session for the other methods.

The routed calls are POSTs: they go through ``router.h1``, a lean HTTP/1.1 client, which costs
a fraction of aiohttp's CPU per call; aiohttp (the cheapest general client measured, see the
README's Decisions) serves the passthrough's other methods. The rest of the code sees the small
``Upstream`` interface, so tests and other transports can swap in their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Protocol
from urllib.parse import quote

import aiohttp
from aiohttp.helpers import _SENTINEL as _SentinelType
from aiohttp.helpers import sentinel
from multidict import CIMultiDictProxy
from yarl import URL

from router import h1
from router.config import ProviderConfig
from router.errors import UpstreamDisconnected, UpstreamError, UpstreamTimeout, UpstreamUnreachable


class UpstreamResponse(Protocol):
    status: int

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class Upstream(Protocol):
    name: str
    api: str
    """``openai``, ``anthropic`` or ``azure`` (see ``router.config.Api``)."""
    family: str
    """The wire format: ``anthropic``, or ``openai`` (Azure speaks OpenAI's)."""
    max_tokens: int
    """The default ``max_tokens`` for calls translated to Anthropic's API."""

    def target(self, path: str, model: str) -> tuple[str, str]:
        """The (path, query) that serves the API path ``path`` (e.g. ``/chat/completions``)
        for ``model``: an Azure deployment URL, or ``path`` itself."""
        ...

    async def send(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        read_timeout: float | None = None,
    ) -> UpstreamResponse: ...

    async def close(self) -> None: ...


class BufferedResponse:
    """A response already read in full (e.g. an error kept while trying a fallback)."""

    __slots__ = ("_body", "_headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self._headers = headers
        self._body = body

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    async def read(self) -> bytes:
        return self._body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    def close(self) -> None:
        pass


class _AiohttpResponse:
    __slots__ = ("_provider", "_response", "status")

    def __init__(self, provider: str, response: aiohttp.ClientResponse) -> None:
        self._provider = provider
        self._response = response
        self.status = response.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except Exception as exc:
            raise _translate(self._provider, exc) from exc
        finally:
            self._response.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            raise _translate(self._provider, exc) from exc
        finally:
            self._response.release()

    def close(self) -> None:
        self._response.close()


def _translate(provider: str, exc: BaseException) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamUnreachable(provider, "timed out connecting to the upstream")
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamTimeout(provider, "timed out waiting for the upstream")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnreachable(provider, f"cannot connect: {exc.os_error.strerror or exc}")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return UpstreamDisconnected(provider, "the upstream closed the connection")
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamDisconnected(provider, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        return UpstreamUnreachable(provider, f"{type(exc).__name__}: {exc}")
    raise exc


class AiohttpUpstream:
    """A provider reached over HTTP: its POSTs (every routed call) on ``router.h1``'s pooled
    connections, other methods on a shared, pooled aiohttp session; each holds at most
    ``pool_size`` connections in use.

    Create it inside the running event loop (the app's lifespan) and ``close()`` it there.
    """

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self._base = config.base_url
        self._urls: dict[str, URL] = {}
        self.config = config
        self._connect_timeout = config.connect_timeout
        self._variant_timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self.api: str = config.api
        self.family = "anthropic" if config.api == "anthropic" else "openai"
        self.max_tokens = config.max_tokens
        self._fixed_headers: dict[str, str] = dict(config.headers)
        self._default_headers: dict[str, str] = {}
        if config.api == "anthropic":
            self._default_headers["anthropic-version"] = config.anthropic_version
        if config.api_key is not None:
            secret = config.api_key.get_secret_value()
            if config.api == "anthropic":
                self._fixed_headers["x-api-key"] = secret
            elif config.api == "azure":
                self._fixed_headers["api-key"] = secret
            else:
                self._fixed_headers["Authorization"] = f"Bearer {secret}"
        self._deployments = config.api == "azure" and config.api_version is not None
        self._api_version_query = f"api-version={config.api_version}"
        # A client's header of the same name (in any case) must not ride beside the provider's.
        self._own_header_names = tuple(
            {name.lower() for name in self._fixed_headers} - set(self._fixed_headers)
        )
        self._pool: h1.Pool | None = None
        """The POSTs' connections, made on the first (in the running loop)."""
        if self._base.startswith("https://"):
            h1.tls_context()  # now, at startup or reload, not at the first call
        connector = aiohttp.TCPConnector(
            limit=config.pool_size, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
            ),
            skip_auto_headers=("User-Agent",),
            raise_for_status=False,
        )

    def _timeouts(self, read_timeout: float | None) -> aiohttp.ClientTimeout | _SentinelType:
        if read_timeout is None:
            return sentinel
        timeout = self._variant_timeouts.get(read_timeout)
        if timeout is None:
            timeout = self._variant_timeouts[read_timeout] = aiohttp.ClientTimeout(
                total=None, sock_connect=self._connect_timeout, sock_read=read_timeout
            )
        return timeout

    def target(self, path: str, model: str) -> tuple[str, str]:
        if not self._deployments:
            return path, ""
        return f"/openai/deployments/{quote(model, safe='')}{path}", self._api_version_query

    def _url(self, path: str, query: str) -> URL:
        key = f"{path}?{query}" if query else path
        url = self._urls.get(key)
        if url is None:
            url = URL(self._base + key, encoded=True)
            if len(self._urls) < 1024:  # bounded: paths with ids are not worth keeping
                self._urls[key] = url
        return url

    async def send(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        read_timeout: float | None = None,
    ) -> _AiohttpResponse | h1.Response:
        """Send one request; ``path`` is relative to the provider's base URL.

        ``read_timeout`` replaces the provider's read timeout for this call (a variant's own).
        """
        for name in self._own_header_names:
            headers.pop(name, None)
        headers.update(self._fixed_headers)
        for name, value in self._default_headers.items():
            headers.setdefault(name, value)
        if method == "POST":
            pool = self._pool
            if pool is None:
                config = self.config
                pool = self._pool = h1.Pool(
                    self.name, self._base, config.pool_size, config.connect_timeout
                )
            timeout = self.config.read_timeout if read_timeout is None else read_timeout
            return await pool.post(path, query, headers, body, timeout)
        try:
            response = await self._session.request(
                method,
                self._url(path, query),
                data=body or None,
                headers=headers,
                timeout=self._timeouts(read_timeout),
            )
        except Exception as exc:
            raise _translate(self.name, exc) from exc
        return _AiohttpResponse(self.name, response)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        await self._session.close()


def build_upstreams(providers: Mapping[str, ProviderConfig]) -> dict[str, AiohttpUpstream]:
    return {name: AiohttpUpstream(name, config) for name, config in providers.items()}


async def close_all(upstreams: Iterable[AiohttpUpstream]) -> None:
    await asyncio.gather(*(u.close() for u in upstreams), return_exceptions=True)
