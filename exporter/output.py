"""Writing JSONL files atomically: readers see the old file or the whole new one, never half.

Rows go to a temporary file beside the target; ``commit`` flushes it to disk and renames it
over the target; ``discard`` (or leaving the ``with`` block on an error) removes it. The
directory is checked for writing before the export reads anything.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from exporter.errors import OutputUnwritable

_BUFFER = 1 << 20


def prepare_directory(path: Path) -> Path:
    """``path`` created if need be and shown to be writable; OutputUnwritable if not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise OutputUnwritable(f"cannot write to {path}: {exc.strerror or exc}") from None
    return path


class AtomicJsonl:
    def __init__(self, target: Path) -> None:
        self.target = target
        self.rows = 0
        try:
            handle, name = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
            )
            self._temp = Path(name)
            self._file: IO[bytes] = os.fdopen(handle, "wb", buffering=_BUFFER)
        except OSError as exc:
            raise OutputUnwritable(f"cannot write {target}: {exc.strerror or exc}") from None

    def write(self, row: Any) -> None:
        self.write_line(orjson.dumps(row) + b"\n")

    def write_line(self, line: bytes) -> None:
        """A row already serialised, its newline included."""
        try:
            self._file.write(line)
        except OSError as exc:
            raise OutputUnwritable(f"cannot write {self.target}: {exc.strerror or exc}") from None
        self.rows += 1

    def write_all(self, rows: Iterable[Any]) -> None:
        for row in rows:
            self.write(row)

    def commit(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._temp, self.target)
        except OSError as exc:
            self.discard()
            raise OutputUnwritable(f"cannot write {self.target}: {exc.strerror or exc}") from None

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicJsonl:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None:
            self.discard()


def write_json(target: Path, value: Any) -> None:
    """One JSON document, atomically (reports, manifests, job records)."""
    try:
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(
                orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
            )
        os.replace(name, target)
    except OSError as exc:
        raise OutputUnwritable(f"cannot write {target}: {exc.strerror or exc}") from None
