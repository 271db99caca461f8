"""Shared helpers for the capture tests (tests/gateway/test_capture_*.py).

Capture backends (a SQLite file, or a database of its own on the machine's PostgreSQL), a reader
of the capture tables that goes straight to the database (never through the gateway), a TCP
proxy that can cut a gateway off from PostgreSQL, a lock that keeps a SQLite file from being
written, and a gateway configuration with the routes the capture tests need.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import openai
import pytest
import yaml
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from capture.schema import calls
from capture.store import Store
from tests.processes import free_port

GATEWAY_KEY = "gwkey-capture-tests-31337"
"""Deliberately not shaped like a secret the redactor knows: if it were stored, we would see it."""
PROVIDER_KEY = "provkey-capture-tests-4242"
ENV = {"CAPTURE_GATEWAY_KEY": GATEWAY_KEY, "CAPTURE_PROVIDER_KEY": PROVIDER_KEY}

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_URL = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/test"

BackendKind = Literal["sqlite", "postgresql"]
BACKENDS: tuple[BackendKind, ...] = ("sqlite", "postgresql")

PRICED_MODEL = "gpt-4o-mini"
UNPRICED_MODEL = "acme-local-llm-7b"
SHADOW_MODEL = "ft:gpt-4o-mini:acme::shadow1"

T = TypeVar("T")


# --- waiting --------------------------------------------------------------------------------------


def poll(
    probe: Callable[[], T | None], what: str, timeout: float = 15.0, interval: float = 0.05
) -> T:
    """``probe()`` until it returns something other than None (or False); fail after
    ``timeout`` seconds saying ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


async def until(condition: Callable[[], bool], seconds: float) -> bool:
    """In a test's event loop: wait up to ``seconds`` for ``condition()``; its last value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


# --- PostgreSQL databases of the tests' own -------------------------------------------------------


def postgres_unreachable() -> str | None:
    """Why the machine's PostgreSQL cannot be used, or None when it can."""
    try:
        asyncio.run(_admin("SELECT 1"))
    except Exception as exc:  # refused, unknown host, auth, timeout: all mean "cannot use it"
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} (database `test`) is unreachable: {exc}"
    return None


async def _admin(statement: str) -> None:
    """Run ``statement`` on the `test` database outside a transaction (CREATE/DROP DATABASE)."""
    engine = create_async_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5}
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def pg_url(database: str, port: int = PG_PORT) -> str:
    return f"postgresql+asyncpg://postgres@{PG_HOST}:{port}/{database}"


@dataclass
class Backend:
    """Where a test's gateways keep their captures: fresh SQLite files or fresh PostgreSQL
    databases, each made on demand and all removed at the end (``close``)."""

    kind: BackendKind
    workdir: Path
    prefix: str
    databases: list[str] = field(default_factory=list)

    def new_database(self) -> str:
        """A new, empty database: a SQLite file path, or a PostgreSQL database name."""
        if self.kind == "sqlite":
            return str(self.workdir / f"capture-{uuid.uuid4().hex[:12]}.db")
        name = f"{self.prefix}_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        self.databases.append(name)
        return name

    def url(self, database: str, port: int | None = None) -> str:
        """The SQLAlchemy URL of ``database``; for PostgreSQL, through ``port`` if given."""
        if self.kind == "sqlite":
            return f"sqlite+aiosqlite:///{database}"
        return pg_url(database, port or PG_PORT)

    def new_url(self) -> str:
        return self.url(self.new_database())

    def close(self) -> None:
        """Drop the databases (at once: one after the other, each waits for a checkpoint)."""

        async def drop_all() -> None:
            await asyncio.gather(
                *(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)') for name in names)
            )

        names, self.databases = self.databases, []
        if names:
            asyncio.run(drop_all())


@contextmanager
def open_backend(kind: BackendKind, workdir: Path, module: str) -> Iterator[Backend]:
    """A backend for one test module; skips when PostgreSQL is asked for and unreachable."""
    if kind == "postgresql":
        reason = postgres_unreachable()
        if reason is not None:
            pytest.skip(reason)
    prefix = "capture_" + re.sub(r"[^a-z0-9]+", "_", module.lower()).strip("_")[-24:]
    backend = Backend(kind, workdir, prefix)
    try:
        yield backend
    finally:
        backend.close()


# --- reading the capture tables directly ----------------------------------------------------------


class Rows:
    """The capture tables read with SQLAlchemy (``capture.store.Store``), on a private loop."""

    def __init__(self, url: str) -> None:
        self._runner = asyncio.Runner()
        self.store: Store = self._runner.run(Store.connect(url))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coroutine)

    def call(self, request_id: str) -> dict[str, Any] | None:
        return self.run(self.store.get_call(request_id))

    def feedback(self, request_id: str) -> list[dict[str, Any]]:
        return self.run(self.store.feedback_for(request_id))

    def count(self) -> int:
        return self.run(self.store.count_calls())

    def ids(self, request_ids: Sequence[str]) -> set[str]:
        """Which of ``request_ids`` are stored."""

        async def query() -> set[str]:
            found: set[str] = set()
            wanted = list(request_ids)
            async with self.store.engine.connect() as connection:
                for start in range(0, len(wanted), 500):
                    part = wanted[start : start + 500]
                    result = await connection.execute(
                        select(calls.c.id).where(calls.c.id.in_(part))
                    )
                    found.update(result.scalars())
            return found

        return self.run(query())

    def shadows_of(self, request_id: str) -> list[dict[str, Any]]:
        async def query() -> list[dict[str, Any]]:
            async with self.store.engine.connect() as connection:
                result = await connection.execute(
                    select(calls).where(calls.c.shadow_of == request_id)
                )
                return [dict(row) for row in result.mappings()]

        return self.run(query())

    def wait_for_call(self, request_id: str, timeout: float = 15.0) -> dict[str, Any]:
        return poll(lambda: self.call(request_id), f"the capture row of {request_id}", timeout)

    def wait_for_ids(self, request_ids: Sequence[str], timeout: float = 20.0) -> None:
        wanted = set(request_ids)

        def all_there() -> bool:
            return self.ids(list(wanted)) == wanted

        poll(all_there, f"all {len(wanted)} capture rows", timeout, interval=0.1)

    def close(self) -> None:
        try:
            self._runner.run(self.store.close())
        finally:
            self._runner.close()


@contextmanager
def rows_of(url: str) -> Iterator[Rows]:
    rows = Rows(url)
    try:
        yield rows
    finally:
        rows.close()


# --- taking the database away ---------------------------------------------------------------------


class SwitchableProxy:
    """A TCP proxy on a free loopback port in front of ``target``.

    ``off()`` closes every proxied connection and closes each new one as soon as it is accepted
    (the database is unreachable); ``on()`` relays again.
    """

    def __init__(self, target: tuple[str, int] = (PG_HOST, PG_PORT)) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._enabled = threading.Event()
        self._enabled.set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.refused = 0
        self._thread = threading.Thread(target=self._accept, name="pg-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._enabled.is_set():
                self.refused += 1
                _hang_up(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _hang_up(client)
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _hang_up(sock)
                with self._lock:
                    self._sockets.discard(sock)

    def off(self) -> None:
        self._enabled.clear()
        with self._lock:
            open_sockets = list(self._sockets)
            self._sockets.clear()
        for sock in open_sockets:
            _hang_up(sock)

    def on(self) -> None:
        self._enabled.set()

    def close(self) -> None:
        self._stopped.set()
        self.off()
        self._thread.join(timeout=5)
        self._listener.close()


def _hang_up(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@contextmanager
def sqlite_locked(path: str) -> Iterator[None]:
    """Hold the SQLite file's write lock: nobody else can write until the block ends."""
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
        connection.execute("COMMIT")
    finally:
        connection.close()


# --- the gateway ----------------------------------------------------------------------------------


def variant(model: str, weight: int = 1) -> dict[str, Any]:
    return {"provider": "sim", "model": model, "weight": weight}


def capture_config(
    simulator_url: str,
    database_url: str,
    routes: Mapping[str, Any] | None = None,
    **capture: Any,
) -> dict[str, Any]:
    """A gateway with key auth, a provider key, the capture tests' routes and a fast writer."""
    return {
        "server": {"log_level": "info"},
        "auth": {"keys": [{"name": "capture-tests", "key": "${CAPTURE_GATEWAY_KEY}"}]},
        "providers": {
            "sim": {"base_url": f"{simulator_url}/v1", "api_key": "${CAPTURE_PROVIDER_KEY}"}
        },
        "routes": dict(routes) if routes is not None else default_routes(),
        "capture": {
            "database_url": database_url,
            "flush_interval_ms": 50,
            "retry_max_backoff_s": 0.5,
            **capture,
        },
    }


def default_routes() -> dict[str, Any]:
    return {
        "assistant": {"variants": {"teacher": variant(PRICED_MODEL)}},
        "local": {"variants": {"only": variant(UNPRICED_MODEL)}},
        "plain-text": {"variants": {"only": variant(PRICED_MODEL)}, "redact": []},
        "unrecorded": {"variants": {"only": variant(PRICED_MODEL)}, "capture": False},
        "shadowed": {
            "variants": {"teacher": variant(PRICED_MODEL), "student": variant(SHADOW_MODEL, 0)},
            "shadow": {"variant": "student", "sample": 1.0},
        },
    }


def write_config(workdir: Path, config: Mapping[str, Any]) -> Path:
    path = workdir / f"gateway-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``gateway ARGS...`` in a process of its own, with the capture tests' environment."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **ENV},
    )


def serve_expecting_failure(config_path: Path, timeout: float = 30.0) -> tuple[int, str]:
    """Start ``gateway serve`` on a config that should not start; its exit code and output."""
    try:
        result = run_cli(
            "serve", "--config", str(config_path), "--port", str(free_port()), timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the gateway did not refuse to start within {timeout} s: {exc.output!r}")
    return result.returncode, result.stdout + result.stderr


# --- /metrics -------------------------------------------------------------------------------------


def capture_counter(gateway_url: str, outcome: str) -> float:
    """``gateway_capture_records_total{outcome=...}`` from the gateway's /metrics (0 if absent)."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    pattern = re.compile(
        r'^gateway_capture_records_total\{outcome="' + re.escape(outcome) + r'"\}\s+(\S+)$',
        re.MULTILINE,
    )
    match = pattern.search(text)
    return float(match.group(1)) if match else 0.0


def feedback_post(
    gateway_url: str, body: Any, *, key: str | None = GATEWAY_KEY, raw: bytes | None = None
) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    with httpx.Client(base_url=gateway_url, timeout=10) as client:
        if raw is not None:
            return client.post("/v1/feedback", content=raw, headers=headers)
        return client.post("/v1/feedback", json=body, headers=headers)


# --- calls ----------------------------------------------------------------------------------------


def gateway_sdk(gateway_url: str, timeout: float = 30.0) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway_url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=timeout
    )


def chat(
    sdk: openai.OpenAI,
    *,
    model: str = "assistant",
    stream: bool = False,
    content: str = "Tell me something about capture.",
    headers: Mapping[str, str] | None = None,
) -> str:
    """One chat call through the gateway, read to its end; its ``x-request-id``.

    Raises (openai.APIError) unless the call was answered 200 in full.
    """
    raw = sdk.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        max_tokens=8,
        stream=stream,
        extra_headers=dict(headers or {}),
    )
    if stream:
        for _ in raw.parse():
            pass
    else:
        raw.parse()
    request_id: str = raw.headers["x-request-id"]
    return request_id
