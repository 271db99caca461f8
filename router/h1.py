"""A lean HTTP/1.1 client for the calls the gateway routes: one provider, its POSTs.

aiohttp's client was about a third of the gateway's CPU per call at c=50 with everything on
(py-spy): for each request it builds a request object, looks the body up in its payload
registry, filters its cookie jar, walks its trace hooks and middlewares, and re-arms a timer at
every read. A routed call needs none of that: its body is bytes, its headers a dict, its
provider one origin. Here a request is one write of its head and body on a pooled keep-alive
connection, and the answer is parsed by httptools (llhttp, in C; uvicorn's parser too).

What it keeps of aiohttp's session as the gateway used it (``router.upstream``): at most
``pool_size`` connections in use at once, later requests waiting for one in order; idle
connections kept for 60 s; the connect timeout; the read timeout as the longest wait for the
next bytes, the first included; ``Accept-Encoding: gzip, deflate`` with gzip and deflate
bodies decoded; headers sent as aiohttp encodes them (UTF-8), a CR, LF or NUL in one refused; the
same errors (``router.errors``). The connection of an answer not read to its end is closed,
never reused. Other methods (the passthrough's GET, HEAD, ...) stay on aiohttp: a HEAD answer
has no body, which llhttp cannot be told.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import zlib
from collections import deque
from collections.abc import AsyncGenerator
from typing import cast
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

from router.errors import UpstreamDisconnected, UpstreamError, UpstreamTimeout, UpstreamUnreachable

IDLE_S = 60.0
"""An idle connection older than this is closed rather than reused (aiohttp's keep-alive)."""
HIGH_WATER = 256 * 1024
"""A streamed answer's bytes held unread above which the connection stops reading."""
MAX_INFLATED = 32 * 1024 * 1024
"""The most decoded bytes a gzip or deflate answer may hold unread, until ``read`` asks for it
whole (not bounded, as with aiohttp): a stream pauses at ``HIGH_WATER``, but one read's bytes
(up to 256 KiB) can decode to a thousand times as many, so a body that would inflate past this
is refused (aiohttp decoded in the steps its reader asked for)."""
MAX_HEAD = 64 * 1024
"""The most bytes an answer's status line and headers (interim answers' included) may take:
llhttp sets no bound, and an upstream sending headers without end would fill the memory
(aiohttp's parser refused a header line over 8190 bytes)."""


_TLS: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """The process's context for https providers, as aiohttp's verified one: the system's
    authorities, ALPN ``http/1.1``. Made once (it reads the authorities from disk: call it
    before serving, not on a call's way)."""
    global _TLS
    if _TLS is None:
        context = ssl.create_default_context()
        context.set_alpn_protocols(("http/1.1",))
        _TLS = context
    return _TLS


class Origin:
    """Where a provider's calls go: scheme, host, port and the base path of its URL."""

    __slots__ = ("base_path", "host", "host_header", "port", "tls")

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        default = 443 if self.tls else 80
        self.port = parts.port or default
        self.base_path = parts.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default else f"{host}:{self.port}"


class Response:
    """One answer: status and headers at once, the body as it arrives."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_decoder",
        "_done",
        "_error",
        "_provider",
        "_sniff",
        "_streaming",
        "_unread",
        "_waiter",
        "_whole",
        "headers",
        "status",
    )

    def __init__(self, provider: str, conn: _Connection) -> None:
        self._provider = provider
        self._conn: _Connection | None = conn
        self.status = 0
        self.headers: CIMultiDict[str] = CIMultiDict()
        self._chunks: list[bytes] = []
        self._unread = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._streaming = False
        self._whole = False
        self._decoder: zlib._Decompress | None = None
        self._sniff = False

    # --- fed by the connection ---

    def _feed(self, data: bytes) -> None:
        if self._sniff and data:  # deflate: RFC 1950's stream (its CM is 8), or a raw one
            self._sniff = False  # (RFC 1951, as some servers send it and aiohttp took it)
            wbits = zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS
            self._decoder = zlib.decompressobj(wbits)
        if self._decoder is not None:
            # the bound left (at least a byte: 0 is zlib's "none"), until read() takes it whole
            limit = 0 if self._whole else max(MAX_INFLATED - self._unread, 1)
            try:
                data = self._decoder.decompress(data, limit)
            except zlib.error:
                self._fail(
                    UpstreamDisconnected(self._provider, "the upstream's body does not decode")
                )
                return
            if self._decoder.unconsumed_tail:
                detail = f"the upstream's body inflates past {MAX_INFLATED} bytes unread"
                self._fail(UpstreamDisconnected(self._provider, detail))
                return
            if not data:
                return
        self._chunks.append(data)
        self._unread += len(data)
        if self._streaming and self._unread > HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        if self._decoder is not None:
            rest = self._decoder.flush()
            if rest:
                self._chunks.append(rest)
        self._done = True
        self._conn = None
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if not self._done and self._error is None:
            self._error = error
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.abort()
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        except BaseException:
            self.close()
            raise

    # --- the UpstreamResponse interface ---

    async def read(self) -> bytes:
        self._whole = True
        while not self._done:
            if self._error is not None:
                raise self._error
            await self._wait()
        chunks = self._chunks
        self._chunks = []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        self._streaming = True
        try:
            while True:
                if self._chunks:
                    chunks = self._chunks
                    self._chunks, self._unread = [], 0
                    if self._conn is not None:
                        self._conn.resume()
                    yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
                elif self._done:
                    return
                elif self._error is not None:
                    raise self._error
                else:
                    await self._wait()
        finally:
            self.close()  # an answer not read to its end: its connection is not reused

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not self._done:
            conn.abort()

    def __del__(self) -> None:
        if self._conn is not None and not self._done:
            self._conn.abort()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request on it at a time."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self._ready: asyncio.Future[Response] | None = None
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._informational = False
        self._close_delimited = False
        self._paused = False
        self._timeout = 0.0
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self.idle_since = 0.0
        self.lost = False

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._response is None:  # bytes nobody asked for: the connection is not to be trusted
            self.abort()
            return
        self._last_read = self._loop.time()
        if self._ready is not None:  # the head still to come: bounded
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._broken(f"the upstream's answer is not HTTP/1.1 ({type(exc).__name__})")
            return
        if self._ready is not None and self._head_bytes > MAX_HEAD:
            self._broken(f"the upstream's answer head is over {MAX_HEAD} bytes")

    def eof_received(self) -> bool:
        return False  # closed here too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._pool.forget(self)
        response = self._response
        if response is None:
            return
        if self._close_delimited and self._ready is None:
            self._complete()  # a body without length or chunks ends with the connection
        else:
            self._broken("the upstream closed the connection")

    # --- httptools' callbacks ---

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue, 103 Early Hints: the answer comes after
            self._informational = True
            self._headers = []
            return
        response = self._response
        ready = self._ready
        if response is None or ready is None:  # an answer nobody asked for
            self.abort()
            return
        self._ready = None
        response.status = status
        response.headers = headers = CIMultiDict(self._headers)
        self._headers = []
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding == "gzip":
            response._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            response._decoder = zlib.decompressobj()
            response._sniff = True
        self._close_delimited = (
            status not in (204, 304)
            and "content-length" not in headers
            and "transfer-encoding" not in headers
        )
        if not ready.done():
            ready.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self._response is not None:
            self._complete()

    # --- the pool's side ---

    def send(self, data: bytes, timeout: float, response: Response) -> asyncio.Future[Response]:
        """Write a request; the future is its answer once the head has arrived."""
        assert self.transport is not None
        self._busy = True  # the pool's slot, given back when the answer ends
        self._response = response
        self._ready = ready = self._loop.create_future()
        self._headers = []  # the last answer's trailers, if it had any, are not this one's
        self._head_bytes = 0
        self._close_delimited = False
        self._timeout = timeout
        self._last_read = now = self._loop.time()
        self._timer = self._loop.call_at(now + timeout, self._check_timeout)
        if self.lost:  # closed between its connect and this request
            self._broken("the upstream closed the connection")
        else:
            self.transport.write(data)
        return ready

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self._last_read = self._loop.time()  # the wait was the reader's, not the upstream's
            self.transport.resume_reading()

    def abort(self) -> None:
        """Close at once (an answer abandoned or broken): never back in the pool."""
        self._end_request()
        self._release_slot()
        if self.transport is not None:
            self.transport.abort()

    def _check_timeout(self) -> None:
        now = self._loop.time()
        if self._paused:  # the reader is behind: no bytes asked for, none late
            due = now + self._timeout
        else:
            due = self._last_read + self._timeout
            if now >= due:
                self._timer = None
                error = UpstreamTimeout(self._pool.provider, "timed out waiting for the upstream")
                self._fail(error)
                return
        self._timer = self._loop.call_at(due, self._check_timeout)

    def _complete(self) -> None:
        response = self._response
        keep = (
            self._parser.should_keep_alive() and not self.lost
        )  # false for a close-delimited body
        self._end_request()
        if response is not None:
            response._finish()
        if self._paused and not self.lost:
            self.resume()
        if keep:
            self._pool.put_back(self)
        elif self.transport is not None:
            self.transport.close()
        self._release_slot()

    def _broken(self, detail: str) -> None:
        self._fail(UpstreamDisconnected(self._pool.provider, detail))

    def _fail(self, error: UpstreamError) -> None:
        response, ready = self._response, self._ready
        self.abort()
        if ready is not None and not ready.done():
            ready.set_exception(error)
        if response is not None:
            response._fail(error)

    def _end_request(self) -> None:
        if self._response is not None:
            self._response._conn = None
        self._response = self._ready = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release_slot(self) -> None:
        if self._busy:
            self._busy = False
            self._pool.release()


class Pool:
    """A provider's keep-alive connections and the requests waiting for one."""

    def __init__(self, provider: str, base_url: str, limit: int, connect_timeout: float) -> None:
        self.provider = provider
        self.origin = Origin(base_url)
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.loop = asyncio.get_running_loop()
        self._idle: deque[_Connection] = deque()
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._open: set[_Connection] = set()
        self._ssl = tls_context() if self.origin.tls else None

    def head(self, path: str, query: str, headers: dict[str, str], length: int) -> bytes:
        """The request's line and headers (POST), as aiohttp writes them."""
        target = f"{self.origin.base_path}{path}?{query}" if query else self.origin.base_path + path
        # A space or a control (CR, LF, NUL, ...) in the target would end the request line early
        # or start a header or a request of the caller's own: the gateway checks a client's
        # path and query, this is the last guard for any other.
        if " " in target or not target.isprintable():
            raise ValueError("Space or control character in the request target")
        lines = [f"POST {target} HTTP/1.1\r\n"]
        has_host = has_type = False
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError("Newline or carriage return character detected in HTTP header")
            if "\x00" in value or "\x00" in name:  # a NUL ends a header early for some servers
                raise ValueError("NUL character detected in HTTP header")
            lower = name.lower()
            has_host = has_host or lower == "host"
            has_type = has_type or lower == "content-type"
            lines.append(f"{name}: {value}\r\n")
        if not has_host:
            lines.append(f"Host: {self.origin.host_header}\r\n")
        if length and not has_type:
            lines.append("Content-Type: application/octet-stream\r\n")
        lines.append(
            f"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nContent-Length: {length}\r\n\r\n"
        )
        return "".join(lines).encode("utf-8")

    async def post(
        self, path: str, query: str, headers: dict[str, str], body: bytes, read_timeout: float
    ) -> Response:
        """Send a POST; its answer once the status and headers are in. ``read_timeout``: the
        longest wait for the next bytes of the answer, the first included."""
        data = self.head(path, query, headers, len(body)) + body
        await self._acquire()
        try:
            conn = self._idle_connection() or await self._connect()
        except BaseException:
            self.release()
            raise
        response = Response(self.provider, conn)
        ready = conn.send(data, read_timeout, response)
        try:
            return await ready
        except BaseException:
            response.close()
            raise

    async def _acquire(self) -> None:
        if self._in_use < self.limit and not self._waiters:
            self._in_use += 1
            return
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the slot is handed over by release()
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over as it was cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """A request's slot given back (its connection idle, closed or broken)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._in_use -= 1

    def put_back(self, conn: _Connection) -> None:
        conn.idle_since = now = self.loop.time()
        idle = self._idle
        idle.append(conn)
        while now - idle[0].idle_since > IDLE_S:  # the oldest idle ones, closed in passing
            transport = idle.popleft().transport
            if transport is not None:
                transport.close()

    def forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def _idle_connection(self) -> _Connection | None:
        now = self.loop.time()
        while self._idle:
            conn = self._idle.pop()  # the most recent: the least likely closed by the server
            transport = conn.transport
            if transport is None or transport.is_closing() or conn.lost:
                continue
            if now - conn.idle_since > IDLE_S:
                transport.close()
                continue
            return conn
        return None

    async def _connect(self) -> _Connection:
        origin = self.origin
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self),
                    origin.host,
                    origin.port,
                    ssl=self._ssl,
                    server_hostname=origin.host if self._ssl is not None else None,
                )
        except TimeoutError:
            raise UpstreamUnreachable(
                self.provider, "timed out connecting to the upstream"
            ) from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise UpstreamUnreachable(self.provider, f"cannot connect: {reason}") from exc
        self._open.add(conn)
        return conn

    def close(self) -> None:
        """Every connection closed, idle or in use (as closing aiohttp's session did)."""
        self._idle.clear()
        for conn in list(self._open):
            conn.abort()
