"""Real processes for the exporter's end-to-end tests: the simulator and a gateway that
captures into a SQLite file, with an admin key and a key that may force variants."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.processes import Running, start_gateway, start_simulator

GATEWAY_KEY = "sk-exporter-test"
ADMIN_KEY = "sk-exporter-admin"
SIM_PROFILE = {
    "default": {"ttft_ms": 0, "token_ms": 0},
    "models": {"ft:*": {"ttft_ms": 5, "token_ms": 0}, "gpt-4*": {"ttft_ms": 20, "token_ms": 0}},
}


@dataclass
class Loop:
    simulator: Running
    gateway: Running
    config: Path
    database: Path
    workdir: Path

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.database}"


def loop_config(simulator_url: str, database: Path) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"name": "eval", "key": GATEWAY_KEY, "allow_variant_override": True}]},
        "admin": {"keys": [{"name": "ops", "key": ADMIN_KEY}]},
        "providers": {"sim": {"base_url": f"{simulator_url}/v1", "api_key": "sk-sim"}},
        "routes": {
            "support": {"variants": {"teacher": {"provider": "sim", "model": "gpt-4o"}}},
            "judge": {"variants": {"teacher": {"provider": "sim", "model": "gpt-4o"}}},
            "assistant": {"variants": {"teacher": {"provider": "sim", "model": "gpt-4o"}}},
            "raw": {
                "variants": {"teacher": {"provider": "sim", "model": "gpt-4o"}},
                "redact": [],
            },
        },
        "capture": {"database_url": f"sqlite+aiosqlite:///{database}", "flush_interval_ms": 20},
    }


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """Simulator + capturing gateway, shared by the session's end-to-end tests."""
    workdir = tmp_path_factory.mktemp("exporter-loop")
    simulator = start_simulator(workdir, SIM_PROFILE)
    database = workdir / "capture.db"
    gateway = start_gateway(workdir, loop_config(simulator.url, database))
    config = next(workdir.glob("gateway-*.yaml"))
    try:
        yield Loop(simulator, gateway, config, database, workdir)
    finally:
        gateway.stop()
        simulator.stop()


@dataclass
class Captured:
    loop: Loop
    ids: dict[str, list[str]]
    """Request ids by kind: plain, streamed, tools, repeat, raw."""


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Look an order up by its number.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]


def _wait_for_rows(url: str, count: int, seconds: float = 10.0) -> None:
    import asyncio
    import time

    from capture.store import Store

    async def stored() -> int:
        store = await Store.connect(url)
        try:
            return await store.count_calls()
        finally:
            await store.close()

    deadline = time.monotonic() + seconds
    while asyncio.run(stored()) < count:
        assert time.monotonic() < deadline, "the gateway did not store the calls in time"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def captured(stack: Loop) -> Captured:
    loop = stack
    """Teacher traffic through the gateway with the openai SDK, stored by its capture."""
    import httpx
    import openai

    from tests.exporter.factory import questions

    client = openai.OpenAI(base_url=f"{loop.gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    system = {"role": "system", "content": "You are Acme's support agent. Be brief."}
    ids: dict[str, list[str]] = {"plain": [], "streamed": [], "tools": [], "repeat": [], "raw": []}
    asked = questions(60, seed=7)

    def ask(text: str, kind: str, route: str = "support", **extra: Any) -> None:
        messages: Any = [system, {"role": "user", "content": text}]
        raw = client.chat.completions.with_raw_response.create(
            model=route, messages=messages, **extra
        )
        raw.parse()
        ids[kind].append(raw.headers["x-request-id"])

    for text in asked[:40]:
        ask(text, "plain")
    for text in asked[40:50]:
        streamed: Any = [system, {"role": "user", "content": text}]
        with client.chat.completions.with_streaming_response.create(
            model="support", messages=streamed, stream=True
        ) as response:
            for _ in response.iter_lines():
                pass
            ids["streamed"].append(response.headers["x-request-id"])
    for text in asked[50:56]:
        ask(f"Where is order {text[-12:]}?", "tools", tools=TOOLS)
    for text in asked[:3]:
        ask(text, "repeat")
    ask("My e-mail is jane.doe@example.com, call me", "raw", route="raw")
    ask("Reset my password please", "raw", route="raw")
    with httpx.Client(
        base_url=loop.gateway.url, headers={"authorization": f"Bearer {GATEWAY_KEY}"}
    ) as http:
        for request_id in ids["plain"][:20]:
            body = {"request_id": request_id, "score": 1.0}
            assert http.post("/v1/feedback", json=body).status_code == 200
        for request_id in ids["plain"][20:25]:
            assert (
                http.post("/v1/feedback", json={"request_id": request_id, "score": 0.0}).status_code
                == 200
            )
    _wait_for_rows(loop.database_url, sum(len(v) for v in ids.values()))
    return Captured(loop, ids)
