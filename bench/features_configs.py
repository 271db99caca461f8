"""The gateways the features benchmark measures, and the stores they keep their state in.

A configuration (:class:`ConfigSpec`, the list in :data:`SPECS`) is one gateway process: its
spec and issue target, the YAML it is started with (:func:`config_for`), the call it is sent
(:func:`chat_body`, bench/post.lua's body as bytes) and starting it (:func:`start_gateway`,
``gateway db upgrade`` first where capture is on). Its state lives in :class:`Stores`: a
SQLite file in the run's directory, a scratch PostgreSQL database (:func:`postgres_scratch`,
created and dropped) and a Redis prefix of the run's own (:func:`redis_prefix`, its keys
deleted after); a store that cannot be reached is a reason, not an error.

bench/features.py runs these; bench/tail.py and bench/start_memory.py start their gateways and
scratch stores the same way.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench import client, procs

ROUTE = procs.ROUTE
KEY = procs.GATEWAY_KEY
UPSTREAM_MODEL = procs.UPSTREAM_MODEL
AB_MODELS = {
    "a": UPSTREAM_MODEL,
    "b": "gpt-4o-mini-2024-07-18",
    "next": "ft:gpt-4o-mini-2024-07-18:bench::shadow",
}
"""The 2-variant route's upstream models (``next`` is the shadow); all on the simulator."""
LIMITS: dict[str, Any] = {"rpm": 10_000_000, "tpm": 1_000_000_000, "daily_budget_usd": 1_000_000}
CACHE_TTL_S = 600
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant. Answer in one short sentence."},
    {"role": "user", "content": "What does a gateway in front of a model API do?"},
]
"""bench/post.lua's messages."""
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_CONFIGS = ("limits-redis", "limits-redis-percall", "cache-redis")
Progress = Callable[[str], None]


# --- configurations -------------------------------------------------------------------------

TargetKind = Literal["delta_p50", "ratio_p50", "absolute_p50"]


@dataclass(frozen=True)
class Target:
    """An issue's target for one configuration."""

    kind: TargetKind
    """``delta_p50``: overhead p50 minus the base's at most ``limit`` ms; ``ratio_p50``: that
    difference at most ``limit`` times the base's overhead; ``absolute_p50``: the gateway's p50
    under ``limit`` ms."""
    limit: float
    issue: int

    @property
    def text(self) -> str:
        if self.kind == "delta_p50":
            return f"overhead p50 ≤ (a) + {self.limit:g} ms (issue {self.issue})"
        if self.kind == "ratio_p50":
            return f"overhead p50 within {self.limit:.0%} of (a) (issue {self.issue})"
        return f"p50 at the gateway < {self.limit:g} ms (issue {self.issue})"


@dataclass(frozen=True)
class ConfigSpec:
    """One gateway configuration under test (one gateway process)."""

    id: str
    """``a`` .. ``f2``, as in the report."""
    name: str
    """Short name: the process's name, the YAML file's and the JSON's key."""
    label: str
    deterministic: bool = False
    """Its calls carry ``temperature: 0, seed: 1`` (compared with the same body direct)."""
    target: Target | None = None
    capture: Literal["sqlite", "postgres"] | None = None
    """The capture store, when capture is on."""


SPECS: tuple[ConfigSpec, ...] = (
    ConfigSpec("a", "base", "base: one variant, capture off, no limits"),
    ConfigSpec(
        "b",
        "capture-sqlite",
        "capture on, SQLite (temp file)",
        target=Target("delta_p50", 0.2, 4),
        capture="sqlite",
    ),
    ConfigSpec(
        "c",
        "capture-postgres",
        "capture on, PostgreSQL (scratch database)",
        target=Target("delta_p50", 0.2, 4),
        capture="postgres",
    ),
    ConfigSpec(
        "d",
        "ab-shadow",
        "2 variants 50/50, shadow 20% on a third, capture off",
        target=Target("ratio_p50", 0.10, 3),
    ),
    ConfigSpec(
        "e",
        "limits-redis",
        "key with RPM/TPM limits and a daily budget, Redis",
        target=Target("delta_p50", 0.3, 7),
    ),
    ConfigSpec(
        "e2",
        "limits-redis-percall",
        "the same key, credits off (`redis.credits: false`): every call waits for Redis",
    ),
    ConfigSpec(
        "g",
        "rollout-sqlite",
        "(b) with a rollout in its shadow stage: 20% copied to a candidate, pairs judged and "
        "evidence read in the background every second",
        target=Target("delta_p50", 0.2, 14),
        capture="sqlite",
    ),
    ConfigSpec(
        "f1",
        "cache-memory",
        "cache hits, in memory",
        deterministic=True,
        target=Target("absolute_p50", 1.0, 7),
    ),
    ConfigSpec(
        "f2",
        "cache-redis",
        "cache hits, Redis",
        deterministic=True,
        target=Target("absolute_p50", 1.0, 7),
    ),
)
BASE = SPECS[0]


def spec(name: str) -> ConfigSpec:
    return next(s for s in SPECS if s.name == name)


@dataclass
class Stores:
    """Where the configurations keep their state; a reason when a store cannot be used."""

    sqlite_url: str
    postgres_url: str | None = None
    postgres_reason: str | None = None
    redis_url: str = DEFAULT_REDIS_URL
    redis_prefix: str = "bench-features"
    redis_reason: str | None = None

    def sqlite_for(self, config: ConfigSpec) -> str:
        """Each SQLite configuration's own file (``capture-features.db`` for (b))."""
        if config.name == "capture-sqlite":
            return self.sqlite_url
        return self.sqlite_url.removesuffix(".db") + f"-{config.name}.db"

    def unavailable(self, config: ConfigSpec) -> str | None:
        if config.capture == "postgres" and self.postgres_url is None:
            return self.postgres_reason or "no PostgreSQL"
        if config.name in REDIS_CONFIGS and self.redis_reason is not None:
            return self.redis_reason
        return None


def config_for(config: ConfigSpec, upstream_port: int, port: int, stores: Stores) -> dict[str, Any]:
    """The gateway configuration (the parsed YAML) of one configuration under test."""
    data = procs.gateway_config(upstream_port, port)
    data["capture"] = {"enabled": False}
    route: dict[str, Any] = {"variants": {"only": {"provider": "sim", "model": UPSTREAM_MODEL}}}
    extra: dict[str, Any] = {}
    key: dict[str, Any] = {"name": "bench", "key": KEY}
    if config.capture == "sqlite":
        data["capture"] = {"enabled": True, "database_url": stores.sqlite_for(config)}
    elif config.capture == "postgres":
        data["capture"] = {"enabled": True, "database_url": stores.postgres_url}
    if config.name == "rollout-sqlite":
        route = {
            "variants": {
                "teacher": {"provider": "sim", "model": UPSTREAM_MODEL, "weight": 100},
                "student": {"provider": "sim", "model": AB_MODELS["b"], "weight": 0},
            },
            "rollout": {"candidate": "student", "stages": [0.0, 0.05], "shadow_sample": 0.2},
        }
        extra["bench-judge"] = {"variants": {"judge": {"provider": "sim", "model": UPSTREAM_MODEL}}}
        data["autopilot"] = {"interval_s": 1.0, "judge_route": "bench-judge", "judge_batch": 20}
    elif config.name == "ab-shadow":
        route = {
            "variants": {
                "a": {"provider": "sim", "model": AB_MODELS["a"], "weight": 50},
                "b": {"provider": "sim", "model": AB_MODELS["b"], "weight": 50},
                "next": {"provider": "sim", "model": AB_MODELS["next"], "weight": 0},
            },
            "shadow": {"variant": "next", "sample": 0.2},
        }
    elif config.name.startswith("limits-redis"):
        key.update(LIMITS)
        data["redis"] = {"url": stores.redis_url, "prefix": f"{stores.redis_prefix}-{config.name}"}
        if config.name == "limits-redis-percall":
            data["redis"]["credits"] = False
    elif config.name.startswith("cache-"):
        route["cache"] = {"ttl_s": CACHE_TTL_S}
        if config.name == "cache-redis":
            data["redis"] = {"url": stores.redis_url, "prefix": f"{stores.redis_prefix}-cache"}
    data["auth"] = {"keys": [key]}
    data["routes"] = {ROUTE: route, **extra}
    return data


def chat_body(model: str, deterministic: bool, stream: bool = False) -> bytes:
    """The call bench/post.lua sends, as bytes."""
    data: dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": 16}
    if stream:
        data["stream"] = True
    if deterministic:
        data.update(temperature=0, seed=1)
    return json.dumps(data, separators=(",", ":")).encode()


HEADERS = {
    "authorization": f"Bearer {KEY}",
    "content-type": "application/json",
    "x-sim-ttft-ms": "0",
    "x-sim-token-ms": "0",
}


# --- stores ---------------------------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


async def _create_database(admin_url: str, name: str) -> str:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    parsed = make_url(admin_url)
    engine = create_async_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return parsed.set(database=name).render_as_string(hide_password=False)


async def _drop_database(admin_url: str, name: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


async def count_rows(database_url: str) -> int:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            value = (await connection.execute(text("SELECT count(*) FROM calls"))).scalar_one()
            return int(value)
    finally:
        await engine.dispose()


@contextlib.contextmanager
def postgres_scratch(admin_url: str, progress: Progress) -> Iterator[tuple[str | None, str | None]]:
    """(url, None) of a fresh database on ``admin_url``'s server, dropped after; or (None, why)."""
    name = f"bench_features_{secrets.token_hex(4)}"
    try:
        url = client.run_async(lambda: _create_database(admin_url, name))
    except Exception as exc:
        yield None, f"PostgreSQL unreachable ({one_line(exc)})"
        return
    progress(f"features: scratch database {name} created")
    try:
        yield url, None
    finally:
        try:
            client.run_async(lambda: _drop_database(admin_url, name))
            progress(f"features: scratch database {name} dropped")
        except Exception as exc:
            progress(f"features: could not drop the scratch database {name}: {one_line(exc)}")


@contextlib.contextmanager
def redis_prefix(url: str, progress: Progress) -> Iterator[tuple[str, str | None]]:
    """(a prefix of this run's own, None), or (prefix, why Redis cannot be used); the keys
    under the prefix are deleted after."""
    import redis

    prefix = f"bench-features-{secrets.token_hex(4)}"
    connection = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        connection.ping()
    except Exception as exc:
        connection.close()
        yield prefix, f"Redis unreachable ({one_line(exc)})"
        return
    try:
        yield prefix, None
    finally:
        try:
            keys = list(connection.scan_iter(match=f"{prefix}*", count=1000))
            for start in range(0, len(keys), 500):
                connection.delete(*keys[start : start + 500])
            progress(f"features: {len(keys)} Redis keys under {prefix}* deleted")
        except Exception as exc:
            progress(f"features: could not delete the Redis keys {prefix}*: {one_line(exc)}")
        finally:
            connection.close()


# --- gateways -------------------------------------------------------------------------------


def db_upgrade(config_path: Path) -> str | None:
    """``gateway db upgrade``; None, or what went wrong."""
    argv = [*procs.gateway_command(), "db", "upgrade", "--config", str(config_path)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        return "gateway db upgrade did not finish in 120 s"
    if done.returncode != 0:
        return f"gateway db upgrade failed: {(done.stderr or done.stdout).strip()[:300]}"
    return None


def start_gateway(
    config: ConfigSpec, workdir: Path, upstream_port: int, stores: Stores
) -> procs.Service:
    port = procs.free_port()
    path = procs.write_yaml(
        workdir / f"gateway-{config.name}.yaml", config_for(config, upstream_port, port, stores)
    )
    if config.capture is not None:
        problem = db_upgrade(path)
        if problem is not None:
            raise procs.StartError(problem)
    argv = procs.serve_command(path, port)
    service = procs.spawn(f"gateway-{config.name}", argv, port, workdir)
    try:
        procs.wait_until(service, procs.chat_request(service.url), 60.0)
    except BaseException:
        service.stop()
        raise
    return service
