"""The ``gateway`` command: serve, simulate, check-config, hash-key, db, keys, rollout."""

from __future__ import annotations

import argparse
import logging
import logging.config
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.draining import STREAM_END_MARGIN_S
from gateway.rolloutcli import add_commands as add_rollout_commands

if TYPE_CHECKING:
    from gateway.settings import Settings

# The settings (pydantic, YAML, the router's config) are imported by the commands that read
# them, not here: an export's worker processes start by running the ``gateway`` script again
# (multiprocessing's spawn), which imports this module, and load nothing they do not use.

log = logging.getLogger("gateway")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _logging_config(level: str) -> dict[str, Any]:
    """One format (``LOG_FORMAT``) for every line: ours (gateway, capture, router, exporter),
    uvicorn's, and the rest through the root logger; credentials masked in access lines
    (``gateway.logs``). Applied in every worker process too."""
    from gateway.logs import logging_config

    return logging_config(level, LOG_FORMAT)


def _fail(message: str) -> int:
    print(f"gateway: {message}", file=sys.stderr)
    return 2


def _wait_until_up(url: str, process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _start_simulator(port: int, profile: str | None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(_simulator_command("127.0.0.1", port, profile))
    if not _wait_until_up(f"http://127.0.0.1:{port}/_sim/health", process, 15.0):
        process.terminate()
        raise RuntimeError(f"the simulated upstream did not start on port {port}")
    return process


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import CONFIG_ENV, UPSTREAM_OVERRIDE_ENV
    from gateway.metrics import MULTIPROCESS_ENV
    from gateway.settings import ConfigError, load_settings

    logging.config.dictConfig(_logging_config(args.log_level or "info"))
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}")
    server = settings.server
    simulate = args.simulator == "on" or (
        args.simulator == "auto" and not os.environ.get("OPENAI_API_KEY")
    )
    simulator: subprocess.Popen[bytes] | None = None
    if simulate:
        url = f"http://127.0.0.1:{args.simulator_port}/v1"
        reason = "OPENAI_API_KEY is not set" if args.simulator == "auto" else "--simulator on"
        log.warning(
            "%s: every provider is served by the simulated upstream at %s; answers are simulated",
            reason,
            url,
        )
        try:
            simulator = _start_simulator(args.simulator_port, args.simulator_profile)
        except RuntimeError as exc:
            return _fail(str(exc))
        os.environ[UPSTREAM_OVERRIDE_ENV] = url
    os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    workers = args.workers or server.workers
    metrics_dir: tempfile.TemporaryDirectory[str] | None = None
    if workers > 1 and not os.environ.get(MULTIPROCESS_ENV):
        # Each worker writes its metrics here; a scrape of any worker merges them all.
        metrics_dir = tempfile.TemporaryDirectory(prefix="gateway-metrics-")
        os.environ[MULTIPROCESS_ENV] = metrics_dir.name
    host = args.host or server.host
    port = server.port if args.port is None else args.port
    log.info(
        "gateway on http://%s:%d, %d route(s): %s",
        host,
        port,
        len(settings.routes),
        ", ".join(settings.routes) or "none",
    )
    try:
        uvicorn.run(
            "gateway.app:create_app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=server.access_log,
            log_config=_logging_config(args.log_level or server.log_level),
            server_header=False,
            backlog=4096,
            # The gateway ends its open streams itself at server.shutdown_timeout_s (with an
            # error event, gateway/draining.py); uvicorn's limit only cancels what remains.
            timeout_graceful_shutdown=math.ceil(server.shutdown_timeout_s + STREAM_END_MARGIN_S),
        )
    finally:
        if metrics_dir is not None:
            metrics_dir.cleanup()
        if simulator is not None:
            simulator.terminate()
            simulator.wait(timeout=10)
    return 0


def _capture_url(args: argparse.Namespace) -> tuple[str | None, int]:
    from gateway.settings import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return None, _fail(f"configuration error: {exc}")
    return settings.capture.database_url, 0


def db_upgrade(args: argparse.Namespace) -> int:
    from capture.migrate import current, head, upgrade
    from gateway.capturing import describe_url

    url, status = _capture_url(args)
    if url is None:
        return status
    try:
        before = current(url)
        upgrade(url)
    except Exception as exc:
        return _fail(f"cannot upgrade {describe_url(url)}: {exc}")
    print(f"{describe_url(url)}: {before or 'empty'} -> {head()}")
    return 0


def db_current(args: argparse.Namespace) -> int:
    from capture.migrate import current, head, known_revisions
    from gateway.capturing import describe_url

    url, status = _capture_url(args)
    if url is None:
        return status
    try:
        revision = current(url)
    except Exception as exc:
        return _fail(f"cannot read {describe_url(url)}: {exc}")
    if revision == head():
        state = "up to date"
    elif revision is not None and revision not in known_revisions():
        state = f"unknown to this version (head {head()}): upgraded by a newer gateway"
    else:
        state = f"needs `gateway db upgrade` (head {head()})"
    print(f"{describe_url(url)}: {revision or 'empty'}, {state}")
    return 0


def db_prune(args: argparse.Namespace) -> int:
    import asyncio

    from capture.retention import parse_duration, prune_url
    from gateway.capturing import describe_url
    from gateway.settings import ConfigError, load_settings

    try:
        older_than = parse_duration(args.older_than)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        capture = load_settings(args.config).capture
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}")
    url = capture.database_url
    if capture.archive is not None and not args.no_archive:
        # prune deletes without archiving: with an archive configured, that loses training data
        return _fail(
            "capture.archive is set: use `gateway db archive --older-than "
            f"{args.older_than} --drop` (archives each partition, then drops it), or "
            "--no-archive to delete without archiving"
        )
    try:
        pruned = asyncio.run(prune_url(url, older_than, unit=capture.partition))
    except Exception as exc:
        return _fail(f"cannot prune {describe_url(url)}: {exc}")
    print(
        f"removed {pruned.calls} call(s) older than {args.older_than} from {describe_url(url)}"
        f" ({len(pruned.partitions)} partition(s) dropped, {pruned.content} stored part(s) no"
        " call refers to any more collected)"
    )
    return 0


def _archive_cutoff(args: argparse.Namespace, hot_days: int | None) -> Any:
    """The cutoff of ``db archive``: --before, --older-than, else capture.archive.hot_days."""
    import datetime as dt

    from capture.retention import parse_duration

    now = dt.datetime.now(dt.UTC)
    if args.before:
        try:
            moment = dt.datetime.fromisoformat(args.before)
        except ValueError:
            raise ValueError(f"--before {args.before!r}: give a date like 2026-11-01") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    if args.older_than:
        return now - parse_duration(args.older_than)
    if hot_days is None:
        raise ValueError("give --before DATE or --older-than 30d, or set capture.archive.hot_days")
    return now - dt.timedelta(days=hot_days)


def db_archive(args: argparse.Namespace) -> int:
    import asyncio

    from capture.archive import archive_and_prune, archive_before
    from capture.archive_location import ArchiveError, S3Options, open_location
    from capture.retention import collect_content
    from capture.store import Store
    from gateway.capturing import describe_url
    from gateway.settings import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}")
    capture = settings.capture
    configured = capture.archive
    url = args.to or (configured.url if configured else None)
    if not url:
        return _fail(
            "no archive: give --to URL (file:///path, s3://bucket/prefix) or set "
            "capture.archive.url"
        )
    try:
        cutoff = _archive_cutoff(args, configured.hot_days if configured else None)
        location = open_location(url, configured.s3_options() if configured else S3Options())
    except (ValueError, ArchiveError) as exc:
        return _fail(str(exc))

    async def run() -> tuple[list[Any], int]:
        store = await Store.connect(capture.database_url)
        try:
            await store.check_schema(args.config)
            if not args.drop:
                return await archive_before(
                    store.engine, location, cutoff, unit=capture.partition
                ), 0
            pruned = await archive_and_prune(store.engine, location, cutoff, unit=capture.partition)
            await collect_content(store.engine)
            return list(pruned.archived), pruned.calls
        finally:
            await store.close()

    try:
        archived, dropped = asyncio.run(run())
    except ArchiveError as exc:
        return _fail(f"archive failed, nothing more dropped: {exc}")
    except Exception as exc:
        return _fail(f"cannot archive {describe_url(capture.database_url)}: {exc}")
    for entry in archived:
        print(
            f"{location.url.rstrip('/')}/{entry.name}: {entry.rows} calls, {entry.feedback} "
            f"feedback, {entry.bytes / 1e6:.1f} MB, sha256 {entry.sha256[:16]}"
        )
    done = f"archived {len(archived)} range(s) before {cutoff.isoformat(timespec='seconds')}"
    print(f"{done}; dropped {dropped} call(s)" if args.drop else f"{done}; nothing dropped")
    return 0


def keys_command(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from capture.engine import create_engine
    from gateway.keys import KeySpec, KeyStore, notify
    from gateway.settings import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}")

    async def run() -> int:
        engine = create_engine(settings.capture.database_url)
        redis = None
        if settings.redis is not None:
            from gateway.app import connect_redis

            redis = connect_redis(settings.redis)
        store = KeyStore(engine)
        channel = f"{settings.redis.prefix if settings.redis else 'gateway'}:keys"
        try:
            if args.keys_command == "create":
                routes = [r for r in (args.routes or "").split(",") if r] or None
                unknown = sorted(set(routes or []) - set(settings.routes))
                if unknown:
                    return _fail(f"unknown route(s): {', '.join(unknown)}")
                spec = KeySpec(
                    args.name,
                    routes,
                    args.rpm,
                    args.tpm,
                    args.daily_budget,
                    args.monthly_budget,
                    args.allow_variant_override,
                )
                key, described = await store.create(spec)
                await notify(redis, channel)
                print(json.dumps({**described, "key": key}, indent=2))
                print(
                    "Keep the key now: it is not stored and cannot be shown again.", file=sys.stderr
                )
            elif args.keys_command == "list":
                for item in await store.list(args.all):
                    state = f"revoked {item['revoked_at']}" if item["revoked_at"] else "active"
                    print(f"{item['id']}  {item['prefix']}...  {item['name']}  {state}")
            else:
                count = await store.revoke(args.key)
                if not count:
                    return _fail(f"no active key with id or name {args.key!r}")
                await notify(redis, channel)
                print(f"revoked {count} key(s)")
            return 0
        finally:
            await engine.dispose()
            if redis is not None:
                await redis.aclose()

    try:
        return asyncio.run(run())
    except Exception as exc:
        return _fail(f"keys {args.keys_command} failed: {exc}")


def _simulator_command(host: str, port: int, profile: str | None) -> list[str]:
    """The simulator is a program of its own (``python -m simulator``): the gateway runs it,
    it never imports it."""
    command = [sys.executable, "-m", "simulator", "--host", host, "--port", str(port)]
    if profile:
        command += ["--profile", profile]
    return command


def simulate(args: argparse.Namespace) -> int:
    command = _simulator_command(args.host, args.port, args.profile)
    os.execv(command[0], command)


def check_config(args: argparse.Namespace) -> int:
    from gateway.settings import ConfigError, load_settings

    try:
        settings: Settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}")
    auth = "none" if settings.auth == "none" else f"{len(settings.auth.keys)} key(s)"
    print(f"{args.config}: ok; auth {auth}; providers: {', '.join(settings.providers)}")
    for name, route in settings.routes.items():
        variants = ", ".join(
            f"{vname}={v.provider}:{v.model} (weight {v.weight})"
            for vname, v in route.variants.items()
        )
        print(f"  route {name}: {variants}")
    return 0


def hash_key_command(args: argparse.Namespace) -> int:
    from gateway.settings import hash_key

    key = sys.stdin.readline().strip() if args.key == "-" else args.key
    if not key:
        return _fail("no key given")
    print(hash_key(key))
    return 0


def build_parser(with_exporter: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="run the gateway")
    p.add_argument("--config", required=True, help="YAML configuration file")
    p.add_argument("--host", help="overrides server.host")
    p.add_argument("--port", type=int, help="overrides server.port")
    p.add_argument("--workers", type=int, help="overrides server.workers")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--simulator",
        choices=["off", "on", "auto"],
        default="off",
        help="serve every provider from a simulated upstream started beside the gateway; "
        "auto: only when OPENAI_API_KEY is not set",
    )
    p.add_argument("--simulator-port", type=int, default=9000)
    p.add_argument("--simulator-profile", help="latency/fault profile for the simulator")
    p.set_defaults(func=serve)

    p = commands.add_parser("simulate", help="run the simulated OpenAI-compatible upstream")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--profile", help="YAML latency and fault profile")
    p.set_defaults(func=simulate)

    p = commands.add_parser("db", help="the capture database: upgrade, current, prune, archive")
    db = p.add_subparsers(dest="db_command", required=True)
    q = db.add_parser("upgrade", help="migrate the capture database to this version's schema")
    q.add_argument("--config", required=True)
    q.set_defaults(func=db_upgrade)
    q = db.add_parser("current", help="print the capture database's schema revision")
    q.add_argument("--config", required=True)
    q.set_defaults(func=db_current)
    q = db.add_parser("prune", help="delete captured calls older than a duration")
    q.add_argument("--config", required=True)
    q.add_argument("--older-than", required=True, help="e.g. 30d, 12h, 90m")
    q.add_argument(
        "--no-archive",
        action="store_true",
        help="delete even though capture.archive is set (nothing is archived)",
    )
    q.set_defaults(func=db_prune)
    q = db.add_parser(
        "archive",
        help="write old partitions to Parquet files (capture.archive); --drop: then drop them",
    )
    q.add_argument("--config", required=True)
    when = q.add_mutually_exclusive_group()
    when.add_argument("--before", metavar="DATE", help="archive what ends by this UTC date")
    when.add_argument("--older-than", help="e.g. 30d (default: capture.archive.hot_days)")
    q.add_argument("--to", metavar="URL", help="file:///path or s3://bucket/prefix")
    q.add_argument(
        "--drop",
        action="store_true",
        help="drop each partition (SQLite: delete each day) once its file is written",
    )
    q.set_defaults(func=db_archive)

    p = commands.add_parser("keys", help="virtual keys: create, list, revoke")
    keys = p.add_subparsers(dest="keys_command", required=True)
    q = keys.add_parser("create", help="make a key (printed once)")
    q.add_argument("--config", required=True)
    q.add_argument("--name", required=True)
    q.add_argument("--routes", help="comma-separated model names it may call (default: all)")
    q.add_argument("--rpm", type=int)
    q.add_argument("--tpm", type=int)
    q.add_argument("--daily-budget", type=float, help="USD per UTC day")
    q.add_argument("--monthly-budget", type=float, help="USD per UTC month")
    q.add_argument("--allow-variant-override", action="store_true")
    q.set_defaults(func=keys_command)
    q = keys.add_parser("list", help="list keys (never the keys themselves)")
    q.add_argument("--config", required=True)
    q.add_argument("--all", action="store_true", help="include revoked keys")
    q.set_defaults(func=keys_command)
    q = keys.add_parser("revoke", help="revoke a key by id or name")
    q.add_argument("--config", required=True)
    q.add_argument("key")
    q.set_defaults(func=keys_command)

    add_rollout_commands(commands)

    if with_exporter:
        from exporter.cli import add_commands as add_exporter_commands

        add_exporter_commands(commands)

    p = commands.add_parser("check-config", help="validate a configuration file")
    p.add_argument("config")
    p.set_defaults(func=check_config)

    p = commands.add_parser("hash-key", help="print the sha256 of a gateway key for the config")
    p.add_argument("key", nargs="?", default="-", help="the key, or - to read it from stdin")
    p.set_defaults(func=hash_key_command)
    return parser


def main(argv: list[str] | None = None) -> None:
    words = sys.argv[1:] if argv is None else argv
    # The exporter's commands import numpy and friends: not worth a second of every start.
    fast = bool(words) and words[0] in ("serve", "simulate", "hash-key", "check-config", "rollout")
    args = build_parser(with_exporter=not fast).parse_args(argv)
    sys.exit(args.func(args))
