"""router.h1 against a raw server whose every byte the test chooses: what a request looks like
on the wire, each way an answer can be framed, broken or late, and what the pool does with
its connections (reuse, limit, abandoned answers)."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from router import h1
from router.errors import UpstreamDisconnected, UpstreamTimeout, UpstreamUnreachable
from tests.gateway.test_resp import make_certificates

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]
"""Given a request's head, write (or not) its answer."""

PLAIN = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)


class Server:
    """A TCP server that reads requests (head and Content-Length body) and answers each with
    ``answer``; it counts its connections and keeps the requests' heads."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.heads.append(head)
                self.bodies.append(await reader.readexactly(length))
                await self.answer(head, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def run(test: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(test())


def pool(server: Server, limit: int = 4, connect_timeout: float = 5.0) -> h1.Pool:
    return h1.Pool("sim", server.url, limit, connect_timeout)


async def post(p: h1.Pool, wait: float = 5.0, path: str = "/chat/completions") -> h1.Response:
    return await p.post(path, "", {"content-type": "application/json"}, b'{"a":1}', wait)


async def plain(_: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(PLAIN)


def test_a_request_is_one_post_with_the_base_path_host_and_length() -> None:
    async def test() -> None:
        async with Server(plain) as server:
            p = pool(server)
            headers = {"content-type": "application/json", "X-Custom": "é"}
            path = "/openai/deployments/a%2F..%2Fb/chat/completions"  # written as given
            response = await p.post(path, "api-version=v", headers, b"{}", 5.0)
            assert response.status == 200
            assert response.headers["content-type"] == "application/json"
            assert response.headers["CONTENT-TYPE"] == "application/json"
            assert await response.read() == b'{"ok":true}'
            p.close()
        head = server.heads[0].decode("utf-8").split("\r\n")
        assert head[0] == f"POST /v1{path}?api-version=v HTTP/1.1"
        port = server.url.split(":")[2].split("/")[0]
        assert f"Host: 127.0.0.1:{port}" in head
        assert "Content-Length: 2" in head
        assert "X-Custom: é" in head  # encoded as UTF-8, as aiohttp does
        assert "Accept-Encoding: gzip, deflate" in head
        assert server.bodies == [b"{}"]

    run(test)


def test_a_body_without_a_content_type_is_sent_as_octets() -> None:
    async def test() -> None:
        async with Server(plain) as server:
            p = pool(server)
            await (await p.post("/files", "", {}, b"data", 5.0)).read()
            await (await p.post("/empty", "", {}, b"", 5.0)).read()
            p.close()
        assert b"Content-Type: application/octet-stream" in server.heads[0]
        assert b"Content-Type" not in server.heads[1]
        assert b"Content-Length: 0" in server.heads[1]

    run(test)


def test_a_header_with_a_line_break_is_refused() -> None:
    async def test() -> None:
        async with Server(plain) as server:
            p = pool(server)
            with pytest.raises(ValueError):
                await p.post("/x", "", {"x-evil": "a\r\nHost: elsewhere"}, b"{}", 5.0)
            # the refusal took no slot: a call still goes through with a pool of one
            p.limit = 1
            assert (await post(p)).status == 200
            p.close()

    run(test)


def test_keep_alive_connections_are_reused() -> None:
    async def test() -> None:
        async with Server(plain) as server:
            p = pool(server)
            for _ in range(5):
                assert await (await post(p)).read() == b'{"ok":true}'
            p.close()
        assert server.connections == 1

    run(test)


def test_a_chunked_stream_arrives_in_order_and_whole() -> None:
    events = [b'data: {"n":%d}\n\n' % n for n in range(5)] + [b"data: [DONE]\n\n"]

    async def stream(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for event in events:
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")

    async def test() -> None:
        async with Server(stream) as server:
            p = pool(server)
            response = await post(p)
            got = [chunk async for chunk in response.iter_chunks()]
            assert b"".join(got) == b"".join(events)
            assert len(got) > 1  # relayed as it came, not at the end
            assert (await post(p)).status == 200
            p.close()
        assert server.connections == 1

    run(test)


def test_a_body_delimited_by_the_close_ends_with_it() -> None:
    async def until_close(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    async def test() -> None:
        async with Server(until_close) as server:
            p = pool(server, limit=1)
            assert await (await post(p)).read() == b"all of it"
            assert await (await post(p)).read() == b"all of it"
            p.close()
        assert server.connections == 2

    run(test)


def test_a_body_cut_short_is_a_disconnection() -> None:
    async def cut(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()
        writer.close()

    async def test() -> None:
        async with Server(cut) as server:
            p = pool(server, limit=1)
            response = await post(p)
            with pytest.raises(UpstreamDisconnected):
                await response.read()
            response = await post(p)  # the slot came back
            with pytest.raises(UpstreamDisconnected):
                async for _ in response.iter_chunks():
                    pass
            p.close()

    run(test)


def test_a_connection_closed_before_the_answer_is_a_disconnection() -> None:
    async def hang_up(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def test() -> None:
        async with Server(hang_up) as server:
            p = pool(server)
            with pytest.raises(UpstreamDisconnected):
                await post(p)
            p.close()

    run(test)


def test_an_answer_that_is_not_http_is_a_disconnection() -> None:
    async def garbage(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")

    async def test() -> None:
        async with Server(garbage) as server:
            p = pool(server)
            with pytest.raises(UpstreamDisconnected):
                await post(p)
            p.close()

    run(test)


def test_no_answer_in_time_is_a_timeout_and_the_connection_is_not_reused() -> None:
    async def slow_head(head: bytes, writer: asyncio.StreamWriter) -> None:
        if b"/slow" in head:
            await asyncio.sleep(0.5)
        writer.write(PLAIN)

    async def test() -> None:
        async with Server(slow_head) as server:
            p = pool(server, limit=1)
            with pytest.raises(UpstreamTimeout):
                await post(p, wait=0.1, path="/slow")
            assert await (await post(p)).read() == b'{"ok":true}'
            p.close()
        assert server.connections == 2

    run(test)


def test_a_stream_that_stalls_times_out_but_a_slow_steady_one_does_not() -> None:
    async def stall(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        gap = 0.5 if b"/stall" in head else 0.05
        for _ in range(6):  # 0.3 s in all for the steady one: more than its timeout
            writer.write(b"2\r\nok\r\n")
            await writer.drain()
            await asyncio.sleep(gap)
        writer.write(b"0\r\n\r\n")

    async def test() -> None:
        async with Server(stall) as server:
            p = pool(server)
            response = await post(p, wait=0.2)
            assert b"".join([c async for c in response.iter_chunks()]) == b"ok" * 6
            response = await post(p, wait=0.2, path="/stall")
            with pytest.raises(UpstreamTimeout):
                async for _ in response.iter_chunks():
                    pass
            p.close()

    run(test)


def test_a_refused_connection_is_unreachable() -> None:
    async def test() -> None:
        async with Server(plain) as server:
            url = server.url
        p = h1.Pool("sim", url, 4, 5.0)
        with pytest.raises(UpstreamUnreachable, match="cannot connect"):
            await post(p)
        p.limit = 1
        with pytest.raises(UpstreamUnreachable):  # the failed connect gave its slot back
            await post(p)

    run(test)


def test_the_pool_limit_makes_calls_wait_for_a_connection() -> None:
    async def slowly(_: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        writer.write(PLAIN)

    async def test() -> None:
        async with Server(slowly) as server:
            p = pool(server, limit=2)
            answers = await asyncio.gather(*(post(p) for _ in range(6)))
            assert [a.status for a in answers] == [200] * 6
            assert [await a.read() for a in answers] == [b'{"ok":true}'] * 6
            assert p._in_use == 0
            p.close()
        assert server.connections == 2

    run(test)


def test_an_abandoned_stream_closes_its_connection_and_frees_its_slot() -> None:
    async def endless(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"2\r\nok\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async def test() -> None:
        async with Server(endless) as server:
            p = pool(server, limit=1)
            for _ in range(2):
                response = await post(p)
                chunks = response.iter_chunks()
                assert await chunks.__anext__()
                await chunks.aclose()  # the client went away
            assert p._in_use == 0
            p.close()
        assert server.connections == 2

    run(test)


def test_a_call_cancelled_before_its_answer_frees_its_slot() -> None:
    async def never(_: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async def test() -> None:
        async with Server(never) as server:
            p = pool(server, limit=1)
            call = asyncio.ensure_future(post(p))
            await asyncio.sleep(0.05)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert p._in_use == 0
            p.close()

    run(test)


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def once(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(PLAIN)
        await writer.drain()
        writer.close()  # after the answer, without saying so

    async def test() -> None:
        async with Server(once) as server:
            p = pool(server)
            for _ in range(3):
                assert await (await post(p)).read() == b'{"ok":true}'
                await asyncio.sleep(0.05)
            p.close()
        assert server.connections == 3

    run(test)


def test_gzip_and_deflate_bodies_are_decoded() -> None:
    text = b'{"choices":[]}' * 50

    async def packed(head: bytes, writer: asyncio.StreamWriter) -> None:
        if b"/gz" in head:
            kind, body = b"gzip", gzip.compress(text)
        elif b"/raw" in head:  # deflate without RFC 1950's header and checksum
            packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            kind, body = b"deflate", packer.compress(text) + packer.flush()
        else:
            kind, body = b"deflate", zlib.compress(text)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (kind, len(body), body)
        )

    async def test() -> None:
        async with Server(packed) as server:
            p = pool(server)
            assert await (await post(p, path="/gz")).read() == text
            assert await (await post(p, path="/deflate")).read() == text
            assert await (await post(p, path="/raw-deflate")).read() == text
            p.close()

    run(test)


def test_an_informational_answer_before_the_real_one_is_skipped() -> None:
    async def early_hints(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n" + PLAIN)

    async def test() -> None:
        async with Server(early_hints) as server:
            p = pool(server)
            response = await post(p)
            assert response.status == 200
            assert "link" not in response.headers
            assert await response.read() == b'{"ok":true}'
            assert (await post(p)).status == 200
            p.close()
        assert server.connections == 1

    run(test)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")
def test_https_is_verified_against_the_trusted_authorities(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def test() -> None:
        async with Server(plain, tls=context) as server:
            url = server.url.replace("http://", "https://")
            unknown = h1.Pool("sim", url, 4, 5.0)  # the system's authorities only
            with pytest.raises(UpstreamUnreachable, match="cannot connect"):
                await post(unknown)
            assert unknown._ssl is h1.tls_context()
            trusted = h1.Pool("sim", url, 4, 5.0)
            trusted._ssl = ssl.create_default_context(cafile=ca)  # the process's left as it is
            for _ in range(2):
                assert await (await post(trusted)).read() == b'{"ok":true}'
            trusted.close()
        assert server.connections == 1  # kept alive (the refused handshake served nothing)

    run(test)


def test_an_answer_without_a_body_keeps_its_connection() -> None:
    async def no_content(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 204 No Content\r\nX-Seen: yes\r\n\r\n")

    async def test() -> None:
        async with Server(no_content) as server:
            p = pool(server)
            for _ in range(3):
                response = await post(p)
                assert response.status == 204
                assert await response.read() == b""
            p.close()
        assert server.connections == 1

    run(test)


@pytest.mark.parametrize("apart", [True, False])
def test_bytes_on_an_idle_connection_close_it(apart: bool) -> None:
    """A second answer to one request, after it or in the same packet, is never taken for the
    next request's."""

    async def and_more(_: bytes, writer: asyncio.StreamWriter) -> None:
        stray = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
        if apart:
            writer.write(PLAIN)
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(stray)
        else:
            writer.write(PLAIN + stray)

    async def test() -> None:
        async with Server(and_more) as server:
            p = pool(server)
            for _ in range(2):
                assert await (await post(p)).read() == b'{"ok":true}'
                await asyncio.sleep(0.1)  # the stray answer arrives while idle
            p.close()
        assert server.connections == 2

    run(test)


def test_a_reader_behind_pauses_the_connection_without_timing_it_out() -> None:
    piece = b"x" * 16384
    pieces = 64  # 1 MiB: past the high-water mark while nobody reads

    async def flood(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _number in range(pieces):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async def test() -> None:
        async with Server(flood) as server:
            p = pool(server, limit=1)
            response = await post(p, wait=0.2)
            chunks = response.iter_chunks()
            first = await chunks.__anext__()
            await asyncio.sleep(0.5)  # behind, for longer than the read timeout
            (conn,) = p._open
            assert conn._paused
            rest = [chunk async for chunk in chunks]
            assert len(first) + sum(map(len, rest)) == len(piece) * pieces
            assert not conn._paused
            again = await post(p)  # on the same connection, read whole: never paused
            assert len(await again.read()) == len(piece) * pieces
            p.close()
        assert server.connections == 1

    run(test)


def test_a_chunked_answers_trailers_are_not_the_next_answers_headers() -> None:
    async def with_trailers(head: bytes, writer: asyncio.StreamWriter) -> None:
        if b"/first" in head:
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                b"0\r\nX-Trailer: t\r\nContent-Encoding: gzip\r\n\r\n"
            )
        else:
            writer.write(PLAIN)

    async def test() -> None:
        async with Server(with_trailers) as server:
            p = pool(server)
            assert await (await post(p, path="/first")).read() == b"hello"
            response = await post(p)
            assert "x-trailer" not in response.headers
            assert "content-encoding" not in response.headers
            assert await response.read() == b'{"ok":true}'  # not taken for gzip
            p.close()
        assert server.connections == 1

    run(test)


@pytest.mark.parametrize("interim", [False, True])
def test_an_answer_head_without_end_is_a_disconnection(interim: bool) -> None:
    """Headers (or interim answers) without end are refused past ``MAX_HEAD``, not held."""

    async def endless(_: bytes, writer: asyncio.StreamWriter) -> None:
        if not interim:
            writer.write(b"HTTP/1.1 200 OK\r\n")
        for n in range(h1.MAX_HEAD // 1000 + 2):
            if interim:
                writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: <%s>\r\n\r\n" % (b"a" * 1000))
            else:
                writer.write(b"X-Filler-%d: %s\r\n" % (n, b"a" * 1000))
            await writer.drain()
        await asyncio.sleep(3600)  # never ends its head

    async def test() -> None:
        async with Server(endless) as server:
            p = pool(server, limit=1)
            with pytest.raises(UpstreamDisconnected, match="head is over"):
                await post(p, wait=60.0)
            assert p._in_use == 0  # its slot given back
            p.close()

    run(test)


def test_a_head_just_under_the_bound_is_taken() -> None:
    filler = b"X-Filler: " + b"a" * (h1.MAX_HEAD - 200) + b"\r\n"

    async def big(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n" + filler + b"Content-Length: 2\r\n\r\nok")

    async def test() -> None:
        async with Server(big) as server:
            p = pool(server)
            assert await (await post(p)).read() == b"ok"
            p.close()

    run(test)


@pytest.mark.parametrize(
    ("path", "query", "headers"),
    [
        ("/x HTTP/1.1\r\nHost: elsewhere\r\n\r\nPOST /y", "", {}),
        ("/a b", "", {}),
        ("/x", "a=1 HTTP/1.1\r\nX: y", {}),
        ("/x\x00", "", {}),
        ("/x", "", {"x-nul": "a\x00b"}),
    ],
)
def test_a_target_or_header_that_would_split_the_request_is_refused(
    path: str, query: str, headers: dict[str, str]
) -> None:
    async def test() -> None:
        async with Server(plain) as server:
            p = pool(server, limit=1)
            with pytest.raises(ValueError):
                await p.post(path, query, headers, b"{}", 5.0)
            assert (await post(p)).status == 200  # the refusal took no slot
            p.close()
        assert len(server.heads) == 1

    run(test)


def test_a_streamed_gzip_body_that_inflates_past_the_bound_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream whose few compressed bytes decode to many is refused, not held decoded: one
    read's bytes could decode to a thousand times as many, past the pause at ``HIGH_WATER``."""
    monkeypatch.setattr(h1, "MAX_INFLATED", 1024 * 1024)
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(packer.compress(bytes(1024 * 1024)) for _ in range(16)) + packer.flush()
    text = b'data: {"choices":[]}\n\n' * 100

    go = asyncio.Event()

    async def packed(head: bytes, writer: asyncio.StreamWriter) -> None:
        body = gzip.compress(text) if b"/sse" in head else bomb
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        if b"/whole" in head:  # the body once the reader has asked for it whole
            await writer.drain()
            await go.wait()
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))

    async def test() -> None:
        async with Server(packed) as server:
            p = pool(server, limit=1)
            assert len(bomb) < 64 * 1024
            response = await post(p, path="/bomb")
            with pytest.raises(UpstreamDisconnected, match="inflates past"):
                async for _ in response.iter_chunks():
                    pass
            response = await post(p, path="/sse")  # a stream of an ordinary ratio: whole
            assert b"".join([chunk async for chunk in response.iter_chunks()]) == text
            response = await post(p, path="/whole")
            whole = asyncio.create_task(response.read())
            await asyncio.sleep(0)  # read() has begun: a body read whole is not bounded
            go.set()
            assert await whole == bytes(16 * 1024 * 1024)
            p.close()

    run(test)
