"""Log lines of a real gateway: every logger in one format (time, level, name), the capture
store's state as a gauge, and no credential from a query string in the access log."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from capture.engine import create_engine
from capture.migrate import upgrade
from gateway.keys import KeyStore, VirtualKeys
from tests.capture.tcp_proxy import TcpProxy
from tests.capture_support import (
    ENV,
    PG_ADMIN_URL,
    capture_config,
    chat,
    gateway_sdk,
    poll,
    sqlite_locked,
)
from tests.processes import Running, start_gateway

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
LINE = re.compile(rf"^{TIME} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")
"""``time LEVEL name: message`` (gateway.logs.LOG_FORMAT)."""
SECRET = "sk-live-Zq8wX1verysecretvalue"


def store_up(gateway: Running) -> float | None:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    match = re.search(r"^gateway_capture_store_up\s+(\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def rows(path: Path) -> int:
    with sqlite3.connect(path, timeout=30) as connection:
        count: int = connection.execute("SELECT count(*) FROM calls").fetchone()[0]
    return count


def test_capture_lines_carry_time_level_and_name_and_the_store_gauge_follows(
    tmp_path: Path, simulator: Running
) -> None:
    database = tmp_path / "capture.db"
    url = f"sqlite+aiosqlite:///{database}"
    upgrade(url)
    config = capture_config(simulator.url, url, statement_timeout_s=0.2)
    gateway = start_gateway(tmp_path, config, env=ENV)
    try:
        sdk = gateway_sdk(gateway.url)
        chat(sdk)
        poll(lambda: rows(database) == 1, "the first call's row")
        assert poll(lambda: store_up(gateway) == 1.0, "gateway_capture_store_up 1")

        with sqlite_locked(str(database)):
            chat(sdk)
            poll(lambda: store_up(gateway) == 0.0, "gateway_capture_store_up 0", timeout=20)
        poll(lambda: rows(database) == 2, "the second call's row once the lock is gone")
        poll(lambda: store_up(gateway) == 1.0, "gateway_capture_store_up back to 1")
    finally:
        gateway.stop()

    lines = gateway.log.read_text().splitlines()
    capture_lines = [line for line in lines if " capture.writer: " in line]
    assert any("capture database unavailable" in line for line in capture_lines), lines
    assert any("capture database back" in line for line in capture_lines), lines
    for line in capture_lines:
        assert LINE.match(line), line
    # Nothing at all bypasses the format (tracebacks aside: none here).
    bare = [line for line in lines if line.strip() and not LINE.match(line)]
    assert not bare, bare


def test_credentials_in_query_strings_are_masked_in_the_access_log(
    tmp_path: Path, simulator: Running
) -> None:
    config = capture_config(simulator.url, f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    config["server"] = {"log_level": "info", "access_log": True}
    gateway = start_gateway(tmp_path, config, env=ENV)
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            for query in (
                f"api_key={SECRET}&limit=2",
                f"key={SECRET}",
                f"limit=1&access_token={SECRET}",
                f"X-Amz-Signature={SECRET}&sig={SECRET}",
                f"Api-Key={SECRET}#frag",
            ):
                client.get(f"/v1/models?{query}")
            client.get("/healthz?verbose=1")
        poll(lambda: "verbose=1" in gateway.log.read_text(), "the access log's last line")
    finally:
        gateway.stop()

    log = gateway.log.read_text()
    assert SECRET not in log
    access = [line for line in log.splitlines() if " uvicorn.access: " in line]
    assert any("/v1/models?api_key=***&limit=2 " in line for line in access), access
    assert any("/v1/models?key=*** " in line for line in access), access
    assert any("/v1/models?limit=1&access_token=*** " in line for line in access), access
    assert any("X-Amz-Signature=***&sig=***" in line for line in access), access
    assert any("/healthz?verbose=1 " in line for line in access), access
    for line in access:
        assert LINE.match(line), line


def test_a_failed_key_reload_says_why_even_when_the_error_has_no_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connect that times out raises ``TimeoutError()``: its ``str`` is empty."""
    caplog.set_level(logging.WARNING, logger="gateway.keys")
    target = make_url(PG_ADMIN_URL)

    async def scenario() -> None:
        proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
        await proxy.stall()  # accepts, never answers
        url = target.set(host="127.0.0.1", port=proxy.port)
        engine = create_engine(url, connect_timeout_s=0.5)
        try:
            await VirtualKeys(KeyStore(engine)).reload()
        finally:
            await engine.dispose()
            await proxy.off()

    asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.keys"]
    assert messages == ["reloading virtual keys failed: TimeoutError"], messages
