"""An upstream that keeps each request exactly as it arrived on the wire: the request line,
the headers and the body bytes, which the simulator (a parsing HTTP server) cannot show.

It runs in a thread of the test process with its own event loop. By default it answers in the
dialect of the path it was called on: ``/messages`` with an Anthropic Message (or its stream of
events when the body asks for one), ``/messages/count_tokens`` with ``{"input_tokens": 7}``,
anything else with ``200 {"ok": true}`` (a stream of two chunks and ``[DONE]`` when the body asks
for one). A test may script any other answer (hostile ones included: bytes that are not JSON,
chunks sent one by one, a connection cut mid-body) with ``respond``, which sees each request and
returns an ``Answer``, or None for the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
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

    @property
    def path(self) -> bytes:
        return self.target.split(b"?", 1)[0]

    def header_names(self) -> set[str]:
        return {name.lower() for name, _ in self.headers}

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name), None)

    @property
    def wants_stream(self) -> bool:
        return b'"stream":true' in self.body.replace(b" ", b"")


@dataclass
class Answer:
    """What the upstream sends back. With ``chunks``, the body goes out chunk by chunk
    (chunked transfer encoding, each chunk flushed); with ``cut`` as well, the connection is
    closed after them, without the terminating chunk."""

    status: int = 200
    content_type: str = "application/json"
    body: bytes = b""
    chunks: list[bytes] | None = None
    cut: bool = False
    headers: list[tuple[str, str]] = field(default_factory=list)


OPENAI_STREAM = (
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)
ANTHROPIC_MESSAGE = (
    b'{"id":"msg_rec","type":"message","role":"assistant","model":"claude-rec","content":'
    b'[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,'
    b'"usage":{"input_tokens":3,"output_tokens":1}}'
)
ANTHROPIC_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_rec",'
    b'"type":"message","role":"assistant","model":"claude-rec","content":[],"stop_reason":null,'
    b'"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":0}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: ping\ndata: {"type":"ping"}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    b'"stop_sequence":null},"usage":{"output_tokens":1}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def default_answer(request: WireRequest) -> Answer:
    if request.path.endswith(b"/messages/count_tokens"):
        return Answer(body=b'{"input_tokens": 7}')
    if request.path.endswith(b"/messages"):
        if request.wants_stream:
            return Answer(content_type="text/event-stream", body=ANTHROPIC_STREAM)
        return Answer(body=ANTHROPIC_MESSAGE)
    if request.wants_stream:
        return Answer(content_type="text/event-stream", body=OPENAI_STREAM)
    return Answer(body=b'{"ok": true}')


@dataclass
class RecordingUpstream:
    port: int = 0
    requests: list[WireRequest] = field(default_factory=list)
    respond: Callable[[WireRequest], Answer | None] | None = None
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
                request = WireRequest(line, headers, body)
                self.requests.append(request)
                answer = self.respond(request) if self.respond is not None else None
                if answer is None:
                    answer = default_answer(request)
                if not await self._send(writer, answer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, answer: Answer) -> bool:
        """Write ``answer``; False when the connection is to be closed after it."""
        head = f"HTTP/1.1 {answer.status} X\r\ncontent-type: {answer.content_type}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in answer.headers)
        if answer.chunks is None:
            head += f"content-length: {len(answer.body)}\r\n\r\n"
            writer.write(head.encode("latin-1") + answer.body)
            await writer.drain()
            return True
        writer.write((head + "transfer-encoding: chunked\r\n\r\n").encode("latin-1"))
        for chunk in answer.chunks:
            if chunk:
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
        if answer.cut:
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True
