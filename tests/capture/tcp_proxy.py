"""A TCP proxy the test controls, to make a real database unreachable, or silent, for a while."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``off()`` refuses and cuts every connection,
    ``on()`` listens again on the same port (and forwards again after ``stall()``);
    ``stall()`` keeps every connection open and accepts new ones, but swallows all their data,
    as a network that drops packets does."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.stalled = False

    async def on(self) -> None:
        if self.stalled:  # what was swallowed is lost: those connections cannot go on
            self.stalled = False
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def off(self) -> None:
        self.stalled = False
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await asyncio.sleep(0)

    async def stall(self) -> None:
        """From now on nothing goes through, in either direction, and nothing is closed."""
        if self._server is None:
            await self.on()
        self.stalled = True

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._writers.add(client_w)
        if self.stalled:  # accepted, never answered: a connect that hangs after the handshake
            with contextlib.suppress(OSError):
                while await client_r.read(65536):
                    pass
            self._writers.discard(client_w)
            client_w.transport.abort()
            return
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
        except OSError:
            self._writers.discard(client_w)
            client_w.transport.abort()
            return
        self.connections += 1
        self._writers.add(upstream_w)
        try:
            await asyncio.gather(self._pipe(client_r, upstream_w), self._pipe(upstream_r, client_w))
        finally:
            for writer in (client_w, upstream_w):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if not self.stalled:
                    writer.write(data)
                    await writer.drain()
        writer.transport.abort()
