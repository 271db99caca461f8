"""Where the archive lives: a folder (``file:///path``) or an S3-compatible bucket
(``s3://bucket/prefix``), and its manifest.

A location holds flat objects by name: the Parquet files (``calls-2026-12-01.parquet``) and
``manifest.json``. Every write is all or nothing: on disk a temporary file in the same folder
renamed over the name (``os.replace``), on S3 one PUT (a multipart upload, for a large file,
appears only when it completes). So a reader sees the old object or the new one, never half.

S3: any S3-compatible store (AWS, MinIO, Ceph, R2, moto's server), through boto3.
``endpoint_url`` and ``region`` come from the configuration (``capture.archive``); the keys from
``access_key_id``/``secret_access_key`` there (``${ENV}`` references) or else boto3's own chain
(``AWS_ACCESS_KEY_ID``..., a profile, an instance role). Keys are never logged nor written.

The manifest lists each archived file with its time range, row counts, size and sha256; one
writer at a time is assumed (``gateway db archive`` or the prune that archives before dropping,
which holds the retention lease on PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import orjson

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class ArchiveError(Exception):
    """The archive cannot be reached, read or written; the message is one line for people."""


_FILE_NAME = re.compile(r"calls-[0-9TZ-]{4,40}\.parquet")
"""What ``capture.archive.file_name`` writes: a manifest naming anything else (``../x``, a
path) is refused, not read or downloaded to."""


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    """One archived time range: its calls created in [start, end)."""

    name: str
    start: dt.datetime
    end: dt.datetime
    rows: int
    feedback: int
    bytes: int
    sha256: str
    archived_at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("start", "end", "archived_at"):
            out[key] = getattr(self, key).isoformat()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArchivedFile:
        try:
            entry = cls(
                name=str(data["name"]),
                start=dt.datetime.fromisoformat(data["start"]),
                end=dt.datetime.fromisoformat(data["end"]),
                rows=int(data["rows"]),
                feedback=int(data.get("feedback", 0)),
                bytes=int(data["bytes"]),
                sha256=str(data["sha256"]),
                archived_at=dt.datetime.fromisoformat(data["archived_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"{MANIFEST}: a file entry is malformed ({exc})") from None
        if not _FILE_NAME.fullmatch(entry.name):  # read as a path and downloaded under it
            raise ArchiveError(
                f"{MANIFEST}: a file entry's name is not an archive file's: {entry.name[:80]!r}"
            )
        return entry


class Location(Protocol):
    """A flat namespace of objects; every put replaces its object whole."""

    url: str

    def put_file(self, name: str, path: Path) -> None: ...
    def put_bytes(self, name: str, data: bytes) -> None: ...
    def get_bytes(self, name: str) -> bytes | None:
        """The object, or None when there is none by that name."""
        ...

    def download(self, name: str, path: Path) -> None: ...


@dataclass(frozen=True, slots=True)
class S3Options:
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None


class LocalLocation:
    def __init__(self, url: str, base: Path) -> None:
        self.url = url
        self.base = base

    def _path(self, name: str) -> Path:
        return self.base / name

    @contextmanager
    def _replacing(self, name: str) -> Iterator[Path]:
        try:
            self.base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchiveError(f"cannot create {self.base}: {exc.strerror}") from None
        handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.base)
        os.close(handle)
        try:
            yield Path(temporary)
            os.replace(temporary, self._path(name))
        except OSError as exc:
            raise ArchiveError(f"cannot write {self._path(name)}: {exc.strerror}") from None
        finally:
            Path(temporary).unlink(missing_ok=True)

    def put_file(self, name: str, path: Path) -> None:
        with (
            self._replacing(name) as temporary,
            path.open("rb") as source,
            temporary.open("wb") as target,
        ):
            while chunk := source.read(1 << 20):
                target.write(chunk)
            target.flush()
            os.fsync(target.fileno())

    def put_bytes(self, name: str, data: bytes) -> None:
        with self._replacing(name) as temporary, temporary.open("wb") as target:
            target.write(data)
            target.flush()
            os.fsync(target.fileno())

    def get_bytes(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArchiveError(f"cannot read {self._path(name)}: {exc.strerror}") from None

    def download(self, name: str, path: Path) -> None:
        data_path = self._path(name)
        try:
            with data_path.open("rb") as source, path.open("wb") as target:
                while chunk := source.read(1 << 20):
                    target.write(chunk)
        except OSError as exc:
            raise ArchiveError(f"cannot read {data_path}: {exc.strerror}") from None

    def local_path(self, name: str) -> Path:
        """Local files are read in place (no copy)."""
        return self._path(name)


class S3Location:
    def __init__(self, url: str, bucket: str, prefix: str, options: S3Options) -> None:
        import boto3
        from botocore.config import Config

        self.url = url
        self.bucket = bucket
        self.prefix = prefix
        try:
            self._client = boto3.client(
                "s3",
                endpoint_url=options.endpoint_url or None,
                region_name=options.region or None,
                aws_access_key_id=options.access_key_id or None,
                aws_secret_access_key=options.secret_access_key or None,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10),
            )
        except Exception as exc:
            raise ArchiveError(f"cannot open {url}: {_brief(exc)}") from None

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _error(self, verb: str, name: str, exc: Exception) -> ArchiveError:
        return ArchiveError(f"cannot {verb} s3://{self.bucket}/{self._key(name)}: {_brief(exc)}")

    def put_file(self, name: str, path: Path) -> None:
        try:
            self._client.upload_file(str(path), self.bucket, self._key(name))
        except Exception as exc:
            raise self._error("write", name, exc) from None

    def put_bytes(self, name: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)
        except Exception as exc:
            raise self._error("write", name, exc) from None

    def get_bytes(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=self._key(name))
            return answer["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._error("read", name, exc) from None
        except Exception as exc:
            raise self._error("read", name, exc) from None

    def download(self, name: str, path: Path) -> None:
        try:
            self._client.download_file(self.bucket, self._key(name), str(path))
        except Exception as exc:
            raise self._error("read", name, exc) from None


def _brief(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def open_location(url: str, s3: S3Options | None = None) -> LocalLocation | S3Location:
    """The location of an archive URL: ``file:///abs/path``, a plain path, or
    ``s3://bucket[/prefix]``; ArchiveError naming what is wrong otherwise."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise ArchiveError(f"archive URL {url!r}: give file:///absolute/path")
        path = unquote(parsed.path) if parsed.scheme == "file" else url
        if not path:
            raise ArchiveError(f"archive URL {url!r} has no path")
        return LocalLocation(url, Path(path).expanduser())
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ArchiveError(f"archive URL {url!r} has no bucket (give s3://bucket/prefix)")
        return S3Location(url, parsed.netloc, parsed.path.strip("/"), s3 or S3Options())
    raise ArchiveError(f"archive URL {url!r}: the scheme must be file:// or s3://")


def read_manifest(location: Location) -> list[ArchivedFile]:
    """The archived files, oldest range first (empty for a new archive)."""
    data = location.get_bytes(MANIFEST)
    if data is None:
        return []
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ArchiveError(f"{location.url}/{MANIFEST} is not JSON") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("files"), list):
        raise ArchiveError(f"{location.url}/{MANIFEST} has no list of files")
    files = [ArchivedFile.from_json(entry) for entry in parsed["files"]]
    return sorted(files, key=lambda entry: (entry.start, entry.end, entry.name))


def write_manifest(location: Location, files: list[ArchivedFile]) -> None:
    ordered = sorted(files, key=lambda entry: (entry.start, entry.end, entry.name))
    body = {"version": MANIFEST_VERSION, "files": [entry.as_json() for entry in ordered]}
    location.put_bytes(MANIFEST, orjson.dumps(body, option=orjson.OPT_INDENT_2))


def record_file(location: Location, entry: ArchivedFile) -> None:
    """The manifest with ``entry`` in place of any entry of the same name."""
    files = [old for old in read_manifest(location) if old.name != entry.name]
    write_manifest(location, [*files, entry])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
