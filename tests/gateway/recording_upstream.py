"""An upstream that keeps each request exactly as it arrived on the wire: the request line,
the headers and the body bytes, which the simulator (a parsing HTTP server) cannot show.

It runs in a thread of the test process with its own event loop and answers every request
with ``200 {"ok": true}`` (a stream of two chunks and ``[DONE]`` when the body asks for one).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field


@dataclass
class WireRequest:
    line: bytes
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def target(self) -> bytes:
        """The request target (path and query) as sent."""
        return self.line.split(b" ")[1]

    def header_names(self) -> set[str]:
        return {name.lower() for name, _ in self.headers}


@dataclass
class RecordingUpstream:
    port: int = 0
    requests: list[WireRequest] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RecordingUpstream:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            with contextlib.suppress(RuntimeError):
                loop.run_forever()
            server.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *lines = head[:-4].split(b"\r\n")
                headers = []
                for raw in lines:
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers.append((name.strip(), value.strip()))
                length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
                body = await reader.readexactly(length) if length else b""
                self.requests.append(WireRequest(line, headers, body))
                if b'"stream":true' in body.replace(b" ", b""):
                    payload = (
                        b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
                        b'"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
                        b'data: {"id":"c","object":"chat.completion.chunk","choices":[],'
                        b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}\n\n'
                        b"data: [DONE]\n\n"
                    )
                    kind = b"text/event-stream"
                else:
                    payload, kind = b'{"ok": true}', b"application/json"
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: "
                    + kind
                    + b"\r\ncontent-length: "
                    + str(len(payload)).encode()
                    + b"\r\n\r\n"
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
