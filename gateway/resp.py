"""One pipelined connection to Redis for the hot path's single command per call.

redis-py is the gateway's Redis client everywhere else (cache, pub/sub, route sync, the limits'
batched updates). The rate-limit admit is the one Redis round trip a call waits for, and there
redis-py's layers (pool checkout, retry wrapper, per-argument encoding, response callbacks) cost
~60 µs per call on the benchmark machine, a fifth of the whole limits budget. This connection
does the least that is correct: hiredis packs the command and parses the reply; every caller
writes at once and waits for its own reply in order (RESP answers in order on one connection),
so concurrent calls share one socket and are pipelined by the kernel. It connects lazily,
authenticates and selects the database like redis-py, fails every waiting call when the
connection drops or a reply is later than the timeout, and connects again on the next call.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis

ReplyError = hiredis.ReplyError
Arg = bytes | str | int | float
# hiredis's stub types the argument as a one-element tuple; it takes any number of arguments.
_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)


class RedisConnectionError(ConnectionError):
    """The connection failed, dropped, or a reply did not come in time."""


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._reader = hiredis.Reader()
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._transport: asyncio.Transport | None = None
        self._watch: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self.closed or self._transport is None:
            future.set_exception(RedisConnectionError("connection to Redis is closed"))
            return future
        self._transport.write(packed)
        self._waiting.append((future, time.monotonic() + self._timeout))
        if self._watch is None:
            self._watch = loop.call_later(self._timeout, self._check)
        return future

    def _check(self) -> None:
        """One timer for all waiting calls: the oldest reply is late -> the connection is."""
        self._watch = None
        if not self._waiting:
            return
        late = self._waiting[0][1] - time.monotonic()
        if late <= 0:
            self.abort(RedisConnectionError(f"no reply from Redis within {self._timeout:g} s"))
        else:
            self._watch = asyncio.get_running_loop().call_later(late, self._check)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while self._waiting:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(RedisConnectionError(f"bad reply from Redis: {exc}"))
                return
            if reply is False:
                return
            future = self._waiting.popleft()[0]
            if not future.done():  # a caller that gave up still had its reply in line
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def abort(self, exc: Exception) -> None:
        self._fail(exc)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(exc)


class PipelinedRedis:
    """``await execute(*args)`` over one shared connection; reply errors raise ``ReplyError``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 0.25,
        connect_timeout: float = 0.25,
    ) -> None:
        self._host, self._port, self._path = host, port, path
        self._username, self._password, self._db = username, password, db
        self._ssl = ssl_context
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    @classmethod
    def like(cls, client: Any) -> PipelinedRedis:
        """The same server, credentials, database and timeouts as a redis-py client."""
        pool = client.connection_pool
        kwargs: dict[str, Any] = pool.connection_kwargs
        timeout = kwargs.get("socket_timeout") or 0.25
        context: ssl.SSLContext | None = None
        if "SSL" in pool.connection_class.__name__:
            context = _ssl_context(kwargs)
        return cls(
            host=kwargs.get("host", "127.0.0.1"),
            port=int(kwargs.get("port", 6379)),
            path=kwargs.get("path"),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            db=int(kwargs.get("db", 0)),
            ssl_context=context,
            timeout=float(timeout),
            connect_timeout=float(kwargs.get("socket_connect_timeout") or timeout),
        )

    async def execute(self, *args: Arg) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        reply = await protocol.send(_pack(args))
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def send(self, *args: Arg) -> asyncio.Future[Any] | None:
        """Write the command now and return its reply to come (a ``ReplyError`` is returned,
        not raised), or None when there is no open connection (``execute`` opens one)."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return None
        return protocol.send(_pack(args))

    async def _connect(self) -> _Protocol:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._open())
        # shield: one caller giving up must not abort the connection the others wait for
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        protocol = _Protocol(self._timeout)
        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._path is not None:
                    await loop.create_unix_connection(lambda: protocol, self._path)
                else:
                    await loop.create_connection(
                        lambda: protocol, self._host, self._port, ssl=self._ssl
                    )
                hello: list[asyncio.Future[Any]] = []
                if self._password is not None:
                    auth: tuple[Arg, ...] = ("AUTH", self._password)
                    if self._username:
                        auth = ("AUTH", self._username, self._password)
                    hello.append(protocol.send(_pack(auth)))
                if self._db:
                    hello.append(protocol.send(_pack(("SELECT", self._db))))
                for reply in await asyncio.gather(*hello):
                    if isinstance(reply, ReplyError):
                        raise RedisConnectionError(f"Redis refused the connection: {reply}")
        except (OSError, TimeoutError) as exc:
            protocol.abort(RedisConnectionError(str(exc)))
            raise RedisConnectionError(f"cannot connect to Redis: {exc or 'timed out'}") from exc
        except BaseException as exc:
            protocol.abort(RedisConnectionError(str(exc)))
            raise
        self._protocol = protocol
        return protocol

    async def aclose(self) -> None:
        if self._protocol is not None:
            self._protocol.abort(RedisConnectionError("closed"))
            self._protocol = None


def _ssl_context(kwargs: dict[str, Any]) -> ssl.SSLContext:
    """TLS as redis-py's ``rediss://`` options ask for it."""
    context = ssl.create_default_context(cafile=kwargs.get("ssl_ca_certs"))
    if kwargs.get("ssl_certfile"):
        context.load_cert_chain(kwargs["ssl_certfile"], kwargs.get("ssl_keyfile"))
    required = kwargs.get("ssl_cert_reqs", "required")
    if required in ("none", ssl.CERT_NONE, None):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = bool(kwargs.get("ssl_check_hostname", True))
    return context
