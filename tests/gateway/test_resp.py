"""The pipelined Redis connection of the admit path (gateway/resp.py), against real servers."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.resp import PipelinedRedis, RedisConnectionError, ReplyError
from tests.gateway.test_limits import needs_redis
from tests.processes import free_port

needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
    reason="redis-server is not installed",
)

# Keeps Redis busy for ~0.2 s without DEBUG (not allowed on the shared Redis).
BUSY_SCRIPT = """
local start = redis.call('TIME')
local now
repeat now = redis.call('TIME')
until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) >= 200000
return 'busy done'
"""


def unique(name: str = "") -> str:
    return f"test-resp-{name}{uuid.uuid4().hex}"


def cli(port: int, *args: str, password: str | None = None, db: int = 0) -> str:
    command = ["redis-cli", "-p", str(port), "-n", str(db)]
    if password is not None:
        command += ["-a", password, "--no-auth-warning"]
    done = subprocess.run([*command, *args], check=True, capture_output=True, timeout=5, text=True)
    return done.stdout.strip()


def start_server(port: int, *extra: str, password: str | None = None) -> subprocess.Popen[bytes]:
    """A redis-server of the test's own on ``port``, ready when this returns."""
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if password is not None:
        args += ["--requirepass", password]
    process = subprocess.Popen(
        ["redis-server", *args, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if cli(port, "ping", password=password) == "PONG":
                return process
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The test's own redis-server processes, stopped afterwards."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        stop(process)


class SilentServer:
    """Accepts TCP connections and reads what comes, never answering (or answers ``reply``)."""

    def __init__(self, reply: bytes | None = None) -> None:
        self.reply = reply
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65536):
                if self.reply is not None and data:
                    writer.write(self.reply)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@needs_redis
def test_commands_round_trip() -> None:
    async def scenario() -> None:
        redis = PipelinedRedis(timeout=2.0)
        key = unique()
        try:
            assert await redis.execute("PING") == b"PONG"
            assert await redis.execute("SET", key, "value") == b"OK"
            assert await redis.execute("GET", key) == b"value"
            assert await redis.execute("GET", key + ":missing") is None
            assert await redis.execute("INCR", key + ":n") == 1
            assert await redis.execute("INCRBY", key + ":n", 41) == 42
            assert await redis.execute("INCRBYFLOAT", key + ":f", 0.5) == b"0.5"
            # bytes and non-ASCII text are sent and returned as they are, as bytes
            binary = b"\x00\r\n\xff*3\r\n" + bytes(range(256))
            assert await redis.execute("SET", key + ":b", binary) == b"OK"
            reply = await redis.execute("GET", key + ":b")
            assert isinstance(reply, bytes) and reply == binary
            assert await redis.execute("SET", key + ":u", "héllo ✓") == b"OK"
            assert await redis.execute("GET", key + ":u") == "héllo ✓".encode()
            # a reply bigger than one read
            big = b"x" * 3_000_000
            assert await redis.execute("SET", key + ":big", big) == b"OK"
            assert await redis.execute("GET", key + ":big") == big
            script = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) * 2, {'nested', 7}}"
            assert await redis.execute("EVAL", script, 1, key, b"\x00arg", 21) == [
                key.encode(),
                b"\x00arg",
                42,
                [b"nested", 7],
            ]
            assert await redis.execute("EVAL", "return nil", 0) is None
            deleted = await redis.execute(
                "DEL", key, key + ":n", key + ":f", key + ":b", key + ":u", key + ":big"
            )
            assert deleted == 6
        finally:
            await redis.execute("DEL", key, key + ":n", key + ":f", key + ":b", key + ":u")
            await redis.execute("DEL", key + ":big")
            await redis.aclose()

    asyncio.run(scenario())


@needs_redis
def test_concurrent_calls_share_one_connection_and_get_their_own_replies() -> None:
    async def scenario() -> None:
        redis = PipelinedRedis(timeout=5.0)
        base = unique()
        keys = [f"{base}:{i}" for i in range(500)]
        try:
            # 200 calls before any connection exists: one connection is opened for all
            ids = await asyncio.gather(*(redis.execute("CLIENT", "ID") for _ in range(200)))
            assert len(set(ids)) == 1 and isinstance(ids[0], int)
            protocol = redis._protocol
            assert protocol is not None

            # odd keys hold a value of their own; even keys are counters
            await redis.execute(
                "MSET", *(arg for i in range(1, 500, 2) for arg in (keys[i], f"value-{i}"))
            )
            calls = [
                redis.execute("INCRBY", keys[i], i) if i % 2 == 0 else redis.execute("GET", keys[i])
                for i in range(500)
            ]
            replies = await asyncio.gather(*calls)
            assert replies == [i if i % 2 == 0 else f"value-{i}".encode() for i in range(500)]

            # the same again, twice at once, with the counters' new values
            first, second = await asyncio.gather(
                asyncio.gather(*(redis.execute("INCRBY", keys[i], 1) for i in range(0, 500, 2))),
                asyncio.gather(*(redis.execute("GET", keys[i]) for i in range(1, 500, 2))),
            )
            assert first == [i + 1 for i in range(0, 500, 2)]
            assert second == [f"value-{i}".encode() for i in range(1, 500, 2)]

            assert redis._protocol is protocol
            assert await redis.execute("CLIENT", "ID") == ids[0]
        finally:
            await redis.execute("DEL", *keys)
            await redis.aclose()

    asyncio.run(scenario())


@needs_redis_server
def test_gathered_calls_before_connecting_open_exactly_one_connection(
    servers: list[subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    servers.append(start_server(port))

    def connections_received() -> int:
        for line in cli(port, "info", "stats").splitlines():
            if line.startswith("total_connections_received:"):
                return int(line.split(":")[1])
        raise AssertionError("no total_connections_received in INFO")

    async def scenario() -> None:
        redis = PipelinedRedis(port=port, timeout=5.0)
        before = await asyncio.to_thread(connections_received)
        replies = await asyncio.gather(*(redis.execute("PING") for _ in range(200)))
        assert replies == [b"PONG"] * 200
        clients = await asyncio.to_thread(cli, port, "info", "clients")
        after = await asyncio.to_thread(connections_received)
        await redis.aclose()
        # ours, and the two redis-cli calls after the first one
        assert after - before == 3
        assert "connected_clients:2" in clients  # ours and that redis-cli

    asyncio.run(scenario())


@needs_redis
def test_reply_error_raises_and_the_connection_stays_usable() -> None:
    async def scenario() -> None:
        redis = PipelinedRedis(timeout=2.0)
        key = unique()
        try:
            assert await redis.execute("PING") == b"PONG"
            protocol = redis._protocol
            with pytest.raises(ReplyError, match="NOSCRIPT"):
                await redis.execute("EVALSHA", "0" * 40, 0)
            assert await redis.execute("SET", key, "not a number") == b"OK"
            with pytest.raises(ReplyError, match="not an integer"):
                await redis.execute("INCR", key)
            with pytest.raises(ReplyError):
                await redis.execute("NO-SUCH-COMMAND", 1)
            with pytest.raises(ReplyError, match="boom"):
                await redis.execute("EVAL", "return redis.error_reply('boom')", 0)
            assert await redis.execute("PING") == b"PONG"
            # errors among concurrent calls go to their own callers only
            replies = await asyncio.gather(
                redis.execute("ECHO", "a"),
                redis.execute("INCR", key),
                redis.execute("ECHO", "b"),
                redis.execute("EVALSHA", "f" * 40, 0),
                redis.execute("ECHO", "c"),
                return_exceptions=True,
            )
            assert replies[0] == b"a" and replies[2] == b"b" and replies[4] == b"c"
            assert isinstance(replies[1], ReplyError) and isinstance(replies[3], ReplyError)
            assert "NOSCRIPT" in str(replies[3])
            assert redis._protocol is protocol
            assert protocol is not None and not protocol.closed
        finally:
            await redis.execute("DEL", key)
            await redis.aclose()

    asyncio.run(scenario())


@needs_redis_server
@pytest.mark.parametrize("userinfo", [":secret", "default:secret"])
def test_like_uses_the_clients_server_password_and_database(
    servers: list[subprocess.Popen[bytes]], userinfo: str
) -> None:
    port = free_port()
    servers.append(start_server(port, password="secret"))
    key = unique()

    async def scenario() -> None:
        client = aioredis.Redis.from_url(
            f"redis://{userinfo}@127.0.0.1:{port}/3", socket_timeout=2.0
        )
        redis = PipelinedRedis.like(client)
        await client.aclose()
        assert await redis.execute("SET", key, "in db 3") == b"OK"
        in_db3 = await asyncio.to_thread(cli, port, "get", key, password="secret", db=3)
        in_db0 = await asyncio.to_thread(cli, port, "exists", key, password="secret", db=0)
        assert in_db3 == "in db 3"
        assert in_db0 == "0"
        await redis.aclose()

        wrong = aioredis.Redis.from_url(f"redis://:wrong@127.0.0.1:{port}/3")
        refused = PipelinedRedis.like(wrong)
        await wrong.aclose()
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(refused.execute("GET", key), 5)
        with pytest.raises(RedisConnectionError):  # and again: no half-open connection kept
            await asyncio.wait_for(refused.execute("GET", key), 5)
        assert refused._protocol is None

    asyncio.run(scenario())


def test_like_takes_the_clients_timeouts() -> None:
    client = aioredis.Redis.from_url(
        "redis://127.0.0.1:6390/5", socket_timeout=0.7, socket_connect_timeout=0.3
    )
    redis = PipelinedRedis.like(client)
    assert (redis._host, redis._port, redis._db) == ("127.0.0.1", 6390, 5)
    assert (redis._timeout, redis._connect_timeout) == (0.7, 0.3)
    assert redis._ssl is None
    default = PipelinedRedis.like(aioredis.Redis.from_url("redis://localhost"))
    assert (default._host, default._port, default._db) == ("localhost", 6379, 0)
    assert (default._timeout, default._connect_timeout) == (0.25, 0.25)
    assert default._password is None and default._username is None


@needs_redis_server
def test_like_over_a_unix_socket(servers: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        socket_path = str(Path(directory) / "redis.sock")
        servers.append(start_server(port, "--unixsocket", socket_path, "--unixsocketperm", "700"))
        key = unique()

        async def scenario() -> None:
            client = aioredis.Redis.from_url(f"unix://{socket_path}?db=2", socket_timeout=2.0)
            redis = PipelinedRedis.like(client)
            await client.aclose()
            assert redis._path == socket_path
            assert await redis.execute("SET", key, "over the socket") == b"OK"
            assert await asyncio.to_thread(cli, port, "get", key, db=2) == "over the socket"
            await redis.aclose()

        asyncio.run(scenario())


def test_connection_refused_raises() -> None:
    port = free_port()  # nothing listens there

    async def scenario() -> None:
        redis = PipelinedRedis(port=port, connect_timeout=2.0)
        for _ in range(2):
            with pytest.raises(RedisConnectionError, match="cannot connect"):
                await asyncio.wait_for(redis.execute("PING"), 5)
        results = await asyncio.wait_for(
            asyncio.gather(*(redis.execute("PING") for _ in range(10)), return_exceptions=True), 5
        )
        assert all(isinstance(r, RedisConnectionError) for r in results)
        assert redis._protocol is None

    asyncio.run(scenario())


def test_a_server_that_never_answers_fails_every_waiting_call() -> None:
    async def scenario() -> None:
        async with SilentServer() as server:
            redis = PipelinedRedis(port=server.port, timeout=0.2)
            started = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(*(redis.execute("PING") for _ in range(5)), return_exceptions=True),
                5,
            )
            elapsed = time.monotonic() - started
            assert all(isinstance(r, RedisConnectionError) for r in results), results
            assert "no reply" in str(results[0])
            assert elapsed >= 0.15  # it waited for the timeout, not less

            # calls that started at different times all fail with the late connection
            async def later(delay: float) -> None:
                await asyncio.sleep(delay)
                await redis.execute("GET", "k")

            results = await asyncio.wait_for(
                asyncio.gather(*(later(d) for d in (0.0, 0.05, 0.1, 0.15)), return_exceptions=True),
                5,
            )
            assert all(isinstance(r, RedisConnectionError) for r in results), results
            assert server.connections == 2  # one connection per attempt, dropped after
            await redis.aclose()

    asyncio.run(scenario())


def test_a_garbled_reply_fails_the_call() -> None:
    async def scenario() -> None:
        async with SilentServer(reply=b"@not resp\r\n") as server:
            redis = PipelinedRedis(port=server.port, timeout=2.0)
            results = await asyncio.wait_for(
                asyncio.gather(*(redis.execute("PING") for _ in range(3)), return_exceptions=True),
                5,
            )
            assert all(isinstance(r, RedisConnectionError) for r in results), results
            assert "bad reply" in str(results[0])
            await redis.aclose()

    asyncio.run(scenario())


@needs_redis_server
def test_reconnects_after_redis_restarts(servers: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    servers.append(start_server(port))

    async def scenario() -> None:
        redis = PipelinedRedis(port=port, timeout=1.0)
        assert await redis.execute("SET", "k", "before") == b"OK"
        first = redis._protocol
        await asyncio.to_thread(stop, servers[0])
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(redis.execute("GET", "k"), 5)
        with pytest.raises(RedisConnectionError):  # still down: refused, not hanging
            await asyncio.wait_for(redis.execute("GET", "k"), 5)
        servers.append(await asyncio.to_thread(start_server, port))
        assert await asyncio.wait_for(redis.execute("GET", "k"), 5) is None  # a new, empty Redis
        assert await redis.execute("SET", "k", "after") == b"OK"
        assert await redis.execute("GET", "k") == b"after"
        assert redis._protocol is not None and redis._protocol is not first
        await redis.aclose()

    asyncio.run(scenario())


@needs_redis
def test_a_caller_that_gives_up_does_not_shift_the_replies() -> None:
    async def scenario() -> None:
        redis = PipelinedRedis(timeout=2.0)
        assert await redis.execute("PING") == b"PONG"
        protocol = redis._protocol
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(redis.execute("EVAL", BUSY_SCRIPT, 0), 0.05)
        # the script's reply comes first and must go to nobody
        assert await redis.execute("PING") == b"PONG"
        assert await redis.execute("ECHO", "next") == b"next"
        replies = await asyncio.gather(*(redis.execute("ECHO", str(i)) for i in range(50)))
        assert replies == [str(i).encode() for i in range(50)]
        assert redis._protocol is protocol
        await redis.aclose()

    asyncio.run(scenario())


@needs_redis
def test_a_caller_cancelled_while_connecting_does_not_stop_the_others() -> None:
    async def scenario() -> None:
        redis = PipelinedRedis(timeout=2.0)
        gives_up = asyncio.create_task(redis.execute("ECHO", "gone"))
        waits = [asyncio.create_task(redis.execute("ECHO", str(i))) for i in range(5)]
        await asyncio.sleep(0)  # every task is now waiting for the one connection
        gives_up.cancel()
        assert await asyncio.wait_for(asyncio.gather(*waits), 5) == [
            str(i).encode() for i in range(5)
        ]
        with pytest.raises(asyncio.CancelledError):
            await gives_up
        assert await redis.execute("PING") == b"PONG"
        await redis.aclose()

    asyncio.run(scenario())


@needs_redis
def test_aclose_then_a_new_call_reconnects() -> None:
    async def scenario() -> None:
        redis = PipelinedRedis(timeout=2.0)
        await redis.aclose()  # nothing to close yet
        first = await redis.execute("CLIENT", "ID")
        await redis.aclose()
        assert redis._protocol is None
        second = await redis.execute("CLIENT", "ID")
        assert isinstance(second, int) and second != first
        assert await redis.execute("PING") == b"PONG"
        await redis.aclose()

    asyncio.run(scenario())


def test_aclose_fails_the_calls_in_flight() -> None:
    async def scenario() -> None:
        async with SilentServer() as server:
            redis = PipelinedRedis(port=server.port, timeout=5.0)
            await redis._connect()  # connected, so the calls are sent when they first run
            waiting = [asyncio.create_task(redis.execute("PING")) for _ in range(3)]
            await asyncio.sleep(0)
            assert redis._protocol is not None and len(redis._protocol._waiting) == 3
            await redis.aclose()
            results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
            assert all(isinstance(r, RedisConnectionError) for r in results), results

    asyncio.run(scenario())


def test_a_server_that_never_answers_auth_fails_within_the_connect_timeout() -> None:
    async def scenario() -> None:
        async with SilentServer() as server:
            redis = PipelinedRedis(
                port=server.port, password="secret", db=2, timeout=30.0, connect_timeout=0.2
            )
            with pytest.raises(RedisConnectionError, match="cannot connect"):
                await asyncio.wait_for(redis.execute("PING"), 5)
            assert redis._protocol is None

    asyncio.run(scenario())


@needs_redis_server
def test_a_late_reply_fails_the_calls_and_the_next_call_gets_its_own_reply(
    servers: list[subprocess.Popen[bytes]],
) -> None:
    port = free_port()  # a Redis of our own: DEBUG SLEEP, and no one else to keep waiting
    servers.append(start_server(port, "--enable-debug-command", "yes"))

    async def scenario() -> None:
        redis = PipelinedRedis(port=port, timeout=0.1)
        first = await redis.execute("CLIENT", "ID")
        results = await asyncio.wait_for(
            asyncio.gather(
                redis.execute("DEBUG", "SLEEP", 0.3),
                redis.execute("ECHO", "queued behind"),
                return_exceptions=True,
            ),
            5,
        )
        assert all(isinstance(r, RedisConnectionError) for r in results), results
        assert "no reply" in str(results[0])
        await asyncio.sleep(0.5)  # the sleep is over; its reply went to the dropped connection
        assert await asyncio.wait_for(redis.execute("ECHO", "after"), 5) == b"after"
        assert await redis.execute("CLIENT", "ID") != first
        await redis.aclose()

    asyncio.run(scenario())


@needs_redis
def test_send_writes_at_once_and_returns_reply_errors() -> None:
    async def scenario() -> None:
        redis = PipelinedRedis(timeout=2.0)
        assert redis.send("PING") is None  # not connected: execute connects
        assert await redis.execute("PING") == b"PONG"
        replies = [redis.send("ECHO", str(i)) for i in range(20)]
        error = redis.send("EVALSHA", "0" * 40, 0)
        assert all(reply is not None for reply in replies) and error is not None
        assert [await reply for reply in replies if reply is not None] == [
            str(i).encode() for i in range(20)
        ]
        returned = await error
        assert isinstance(returned, ReplyError) and "NOSCRIPT" in str(returned)
        await redis.aclose()
        assert redis.send("PING") is None  # closed: the next execute reconnects
        assert await redis.execute("PING") == b"PONG"
        await redis.aclose()

    asyncio.run(scenario())


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA of the test's own and a server certificate for 127.0.0.1 signed by it."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ca_key, ca, key, request, cert = (
        directory / name for name in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    extensions = directory / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", str(ca_key), "-out", str(ca),
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(key), "-out", str(request),
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "1", "-out", str(cert), "-extfile", str(extensions),
    )  # fmt: skip
    return ca, cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")
def test_like_speaks_tls_as_a_rediss_client_asks(
    servers: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """A TLS-only Redis of the test's own: verified against the test's CA, refused when the
    certificate cannot be verified, and accepted unverified when the URL says so."""
    ca, cert, key = make_certificates(tmp_path)
    port, tls_port = free_port(), free_port()
    tls = ["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    tls += ["--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
    servers.append(start_server(port, *tls))
    name = unique("tls")

    async def run() -> None:
        verified = aioredis.Redis(host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=str(ca))
        connection = PipelinedRedis.like(verified)
        assert await connection.execute("SET", name, "over tls") == b"OK"
        assert await connection.execute("GET", name) == b"over tls"
        await connection.aclose()
        await verified.aclose()

        unknown_ca = aioredis.Redis.from_url(f"rediss://127.0.0.1:{tls_port}/0")
        with pytest.raises(RedisConnectionError):
            await PipelinedRedis.like(unknown_ca).execute("PING")
        await unknown_ca.aclose()

        unverified = aioredis.Redis.from_url(f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=none")
        connection = PipelinedRedis.like(unverified)
        assert await connection.execute("GET", name) == b"over tls"
        await connection.aclose()
        await unverified.aclose()

    asyncio.run(run())
    assert cli(port, "get", name) == "over tls"
