"""Which capture database to read, and opening it with one-line errors.

The URL comes from ``--database-url``, else ``$GATEWAY_DATABASE_URL``, else the
``capture.database_url`` of the gateway's config file (``--config``, with its ``${ENV}``
references resolved). The gateway's settings model is not imported (the exporter must not
depend on the gateway): only that key is read, and ``capture.archive``.

The archive (``exporter.archive_source``), read beside the database with the same filters:
``--archive URL``, else the config's ``capture.archive.url`` (with its ``endpoint_url``,
``region`` and keys); ``--archive off`` reads the database alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from capture.archive_location import ArchiveError, S3Options
from capture.errors import SchemaOutOfDate
from capture.store import Store
from exporter.errors import BadFilter, DatabaseUnavailable

if TYPE_CHECKING:
    from exporter.archive_source import ArchiveSource

DEFAULT_URL = "sqlite+aiosqlite:///gateway.db"
URL_ENV = "GATEWAY_DATABASE_URL"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def describe_url(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"


def _resolve(text: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        value = os.environ.get(match.group(1))
        if value is None:
            if match.group(2) is None:
                raise BadFilter(
                    f"capture.database_url: environment variable {match.group(1)} is not set"
                )
            return match.group(2)
        return value

    return _ENV_REF.sub(substitute, text)


def _capture_section(path: str | Path) -> dict[str, Any]:
    try:
        data: Any = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise BadFilter(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise BadFilter(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    capture = data.get("capture") if isinstance(data, dict) else None
    return capture if isinstance(capture, dict) else {}


def url_from_config(path: str | Path) -> str:
    url = _capture_section(path).get("database_url")
    return _resolve(url) if isinstance(url, str) else DEFAULT_URL


ARCHIVE_OFF = "off"
_ARCHIVE_KEYS = ("url", "endpoint_url", "region", "access_key_id", "secret_access_key")


def _archive_settings(config: str | None) -> dict[str, str]:
    section = _capture_section(config).get("archive") if config else None
    if not isinstance(section, dict):
        return {}
    return {
        key: _resolve(value)
        for key in _ARCHIVE_KEYS
        if isinstance(value := section.get(key), str) and value
    }


@contextmanager
def archive_errors() -> Iterator[None]:
    """An archive that fails mid-read (unreachable, a file unreadable) as DatabaseUnavailable."""
    try:
        yield
    except ArchiveError as exc:
        raise DatabaseUnavailable(str(exc)) from None


def archive_source(given: str | None, config: str | None) -> ArchiveSource | None:
    """The archive to read beside the database: ``--archive`` (``off``: none), else the
    config's ``capture.archive``; None when there is none. DatabaseUnavailable in one line
    for an archive that cannot be opened."""
    if given == ARCHIVE_OFF:
        return None
    settings = _archive_settings(config)
    url = given or settings.get("url")
    if not url:
        return None
    options = S3Options(
        endpoint_url=settings.get("endpoint_url"),
        region=settings.get("region"),
        access_key_id=settings.get("access_key_id"),
        secret_access_key=settings.get("secret_access_key"),
    )
    from exporter.archive_source import open_archive  # pyarrow: only when an archive is read

    try:
        return open_archive(url, options)
    except ArchiveError as exc:
        raise DatabaseUnavailable(str(exc)) from None


def database_url(url: str | None, config: str | None) -> str:
    if url:
        return url
    if config:
        return url_from_config(config)
    return os.environ.get(URL_ENV) or DEFAULT_URL


def first_line(exc: BaseException) -> str:
    """An exception as one short line (drivers' messages run over several)."""
    text = str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL that does not exist (opening it would create an empty one)."""
    if url.startswith("sqlite") and "///" in url:
        path = Path(url.split("///", 1)[1])
        if str(path) not in ("", ":memory:") and not path.exists():
            return path
    return None


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[Store]:
    """A store whose schema is this code's; DatabaseUnavailable in one line otherwise."""
    missing = _missing_sqlite_file(url)
    if missing is not None:
        raise DatabaseUnavailable(f"no capture database at {missing}")
    try:
        store = await Store.connect(url)
    except Exception as exc:
        raise DatabaseUnavailable(f"cannot open {describe_url(url)}: {first_line(exc)}") from None
    try:
        try:
            await store.check_schema()
        except SchemaOutOfDate as exc:
            raise DatabaseUnavailable(f"{describe_url(url)}: {exc}") from None
        except Exception as exc:
            raise DatabaseUnavailable(
                f"cannot read {describe_url(url)}: {first_line(exc)}"
            ) from None
        yield store
    finally:
        await store.close()
