"""An archive's keys listed by a process of its own, so that the export's process never loads
pyarrow (~60 MB of each process that does: ``exporter.archive_source`` says when).

The listing process reads each file's filtered columns a row group at a time
(``archive_read.file_keys``) and appends a frame per row group to a file in the export's
temporary folder: the group's number, its selected calls' times and ids (pickled behind an
8-byte length), then an end frame, or an error frame with the error's one line. It runs ahead
of the export, a few seconds for a million calls, and exits; the export reads the frames as
they come, waiting for more while the process runs. A process that stops before its end frame
is an error, never a shorter listing.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import struct
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from capture.archive_location import ArchiveError
from exporter.archive_source import Listed, listed
from exporter.filters import Filters

_LENGTH = struct.Struct("<Q")
POLL_S = 0.005
"""How long the export waits before looking again for a frame the process has not written."""
_CHUNK = 1 << 20

File = tuple[str, str]
"""A file to list: its local path and its name in errors (the archive's URL and its name)."""


def _list_into(files: list[File], filters: Filters, out: str) -> None:
    """The listing process: each file's keys, a frame per row group, then the end frame."""
    from exporter.no_pandas import keep_pandas_out

    keep_pandas_out()
    with open(out, "wb") as sink:

        def send(frame: tuple[Any, ...]) -> None:
            data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
            sink.write(_LENGTH.pack(len(data)))
            sink.write(data)
            sink.flush()

        try:
            from exporter.archive_read import file_keys

            for number, (path, label) in enumerate(files):
                for group, moments, ids in file_keys(Path(path), label, filters):
                    send(("keys", number, group, moments, ids))
        except ArchiveError as exc:
            send(("error", str(exc)))
            return
        except Exception as exc:  # one line for the export's caller, never a traceback
            first = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
            send(("error", f"cannot list the archive's calls: {first}"))
            return
        send(("end",))


def _frame(buffer: bytearray) -> tuple[Any, ...] | None:
    """The first whole frame in ``buffer``, taken out of it; None while it holds none."""
    if len(buffer) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack_from(buffer)
    end = _LENGTH.size + size
    if len(buffer) < end:
        return None
    frame: tuple[Any, ...] = pickle.loads(bytes(buffer[_LENGTH.size : end]))
    del buffer[:end]
    return frame


async def listed_apart(
    files: list[File], filters: Filters, folder: Path
) -> AsyncGenerator[list[Listed], None]:
    """``files``' selected calls' keys, in their order, a row group at a time, each with its
    file's path and its row group's number (``ArchiveSource.keys``), listed by a process of
    its own writing into ``folder``."""
    out = folder / "archive-keys.frames"
    out.write_bytes(b"")
    process = multiprocessing.get_context("spawn").Process(
        target=_list_into, args=(files, filters, str(out)), name="export-listing", daemon=True
    )
    process.start()
    try:
        with out.open("rb") as source:
            buffer = bytearray()
            while True:
                frame = _frame(buffer)
                if frame is None:
                    exited = process.exitcode is not None  # before reading: then all is there
                    chunk = source.read(_CHUNK)
                    if chunk:
                        buffer += chunk
                    elif exited:
                        raise ArchiveError(
                            "the archive's listing stopped before its end "
                            f"(exit code {process.exitcode})"
                        )
                    else:
                        await asyncio.sleep(POLL_S)
                    continue
                if frame[0] == "end":
                    break
                if frame[0] == "error":
                    raise ArchiveError(frame[1])
                _, number, group, moments, ids = frame
                yield listed(files[number][0], group, moments, ids)
        await asyncio.to_thread(process.join)
    finally:
        if process.is_alive():
            process.kill()
            process.join()
        out.unlink(missing_ok=True)
