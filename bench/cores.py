"""Where the tail benchmark's processes run: the gateway on a core of its own, the rest elsewhere.

On a machine of a few cores everything the benchmark starts shares them: the simulator, the load
generators, and the stores the gateway talks to (PostgreSQL, Redis). A gateway pinned to one core
measures what one core of gateway does only when nothing else runs there; otherwise its calls
wait for whatever the scheduler put beside them. ``pinned`` puts this process (and so wrk, py-spy
and the asyncio client, which it starts), the simulator and, where they run on this machine and
may be moved, the PostgreSQL and Redis servers on the other cores, as a database on another host
would be; their former cores are given back after. The gateway itself (and the capture writer it
starts, which inherits its core) is pinned by ``taskset`` when it is spawned (bench/tail.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil

from bench import procs


@dataclass
class Pinning:
    """The gateway on one core, everything else of the benchmark on the others."""

    gateway: set[int]
    others: set[int]
    saved: set[int]
    stores: list[str] = field(default_factory=list)
    """The stores' servers moved to the other cores, as "PostgreSQL (pid 12)"."""
    unmoved: list[str] = field(default_factory=list)
    """The stores that could not be moved, each with the reason."""

    @property
    def text(self) -> str:
        others = ",".join(map(str, sorted(self.others)))
        text = (
            f"the gateway pinned to core {','.join(map(str, sorted(self.gateway)))}, the "
            f"simulator, wrk, the asyncio client and py-spy to core {others}"
        )
        if self.stores:
            text += f"; the stores' servers ({', '.join(self.stores)}) to core {others} too"
        if self.unmoved:
            text += f"; not moved: {'; '.join(self.unmoved)}"
        return text


def plan_pinning() -> Pinning | None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    return Pinning({cores[-1]}, set(cores[:-1]), set(cores))


def _tasks(pid: int) -> list[int]:
    """The process's threads (a process's affinity is each thread's own)."""
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def set_affinity(pid: int, cores: set[int]) -> None:
    """The process, its threads and its descendants on ``cores``; PermissionError when one of
    them may not be moved by this user (the others are moved), nothing when gone."""
    try:
        process = psutil.Process(pid)
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return
    denied: PermissionError | None = None
    for member in members:
        for tid in _tasks(member.pid):
            try:
                os.sched_setaffinity(tid, cores)
            except PermissionError as exc:
                denied = exc
            except OSError:
                pass  # the thread ended meanwhile
    if denied is not None:
        raise denied


@dataclass
class Store:
    """A store's server on this machine: its name and the process that starts its workers."""

    name: str
    pid: int


def local_server(pid: int | None, name: str) -> Store | None:
    """The server process behind a connection's pid, when it runs on this machine: for
    PostgreSQL the postmaster (every backend is its child), for Redis the server itself."""
    if pid is None:
        return None
    word = {"PostgreSQL": "postgres"}.get(name, name).lower()  # as its processes are named
    try:
        process = psutil.Process(pid)
        if word not in " ".join([process.name(), *process.cmdline()]).lower():
            return None  # a server elsewhere: the pid is another process's here
        if name == "PostgreSQL":
            parent = process.parent()
            if parent is not None and word in parent.name().lower():
                process = parent
        return Store(name, process.pid)
    except psutil.Error:
        return None


def store_servers(postgres_url: str | None, redis_url: str | None) -> list[Store]:
    """The PostgreSQL and Redis servers behind these URLs that run on this machine (asked for
    their pids: ``pg_backend_pid()``, ``INFO server``); none that cannot be reached."""
    found: list[Store] = []
    if postgres_url is not None:
        with contextlib.suppress(Exception):
            found.extend(filter(None, [_postgres_server(postgres_url)]))
    if redis_url is not None:
        with contextlib.suppress(Exception):
            found.extend(filter(None, [local_server(_redis_pid(redis_url), "Redis")]))
    return found


def _postgres_server(url: str) -> Store | None:
    """Found while the connection is open: its backend is gone once it closes."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from bench import client

    async def ask() -> Store | None:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                value = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                return local_server(int(value), "PostgreSQL")
        finally:
            await engine.dispose()

    return client.run_async(ask)


def _redis_pid(url: str) -> int | None:
    import redis

    connection = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        value = connection.info("server").get("process_id")
    finally:
        connection.close()
    return int(value) if value is not None else None


@contextlib.contextmanager
def pinned(
    pinning: Pinning | None, simulator: procs.Service, stores: list[Store] | None = None
) -> Iterator[None]:
    """This thread (and so wrk, py-spy and the client), the simulator and ``stores`` on the
    other cores; everything back on its former cores after."""
    if pinning is None:
        yield
        return
    os.sched_setaffinity(0, pinning.others)
    set_affinity(simulator.process.pid, pinning.others)
    moved: list[tuple[Store, set[int]]] = []
    for store in stores or []:
        label = f"{store.name} (pid {store.pid})"
        try:
            before = set(os.sched_getaffinity(store.pid))
        except OSError as exc:
            pinning.unmoved.append(f"{label}: {exc.strerror or exc}")
            continue
        moved.append((store, before))  # given back even when only some of it moved
        try:
            set_affinity(store.pid, pinning.others)
        except OSError as exc:
            pinning.unmoved.append(f"{label}: {exc.strerror or exc}")
            continue
        pinning.stores.append(label)
    try:
        yield
    finally:
        os.sched_setaffinity(0, pinning.saved)
        set_affinity(simulator.process.pid, pinning.saved)
        for store, before in moved:
            with contextlib.suppress(OSError):
                set_affinity(store.pid, before)
