"""Frames between the gateway and its capture writer process (``capture.writer_process``).

A frame is a 4-byte big-endian length and a pickle of a tuple whose first item names the
message. Both ends are this project's own code, started by the gateway with its own Python
over an anonymous pipe, so pickle is safe here: nothing else can write to that pipe.

The gateway to the writer::

    ("init", {settings, log_level, log_format, normalize})   first, once; settings as
                                  JSON, normalize "module:function" or None
    ("records", [values, ...])    call records as ``record_values`` tuples
    ("flush",)                    write what is queued now (feedback waits for a call)
    ("prices", {model: price})    a reload changed ``capture.prices``
    ("drain", deadline_s)         write everything, retrying until the deadline, then exit
    ("stop",)                     give up what is queued and exit

The writer to the gateway::

    ("state", settled, stats)     records settled (stored, given up or refused) so far, counters
    ("done", settled, stats)      the last one, before it exits
"""

from __future__ import annotations

import asyncio
import operator
import pickle
import struct
from dataclasses import fields
from typing import Any

from capture.record import CallRecord

HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 30
"""A larger frame is a broken pipe or a bug, not a message."""

RECORD_FIELDS = tuple(field.name for field in fields(CallRecord))
record_values = operator.attrgetter(*RECORD_FIELDS)
"""A ``CallRecord``'s fields as a tuple, in ``RECORD_FIELDS``' order (cheaper to pickle than the
record itself, whose slots are pickled through Python code)."""


class ChannelError(Exception):
    """A frame that cannot be read: too large, or not a tuple naming a message."""


def record_from(values: tuple[Any, ...]) -> CallRecord:
    return CallRecord(**dict(zip(RECORD_FIELDS, values, strict=True)))


def encode(message: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message; None at the end of the stream (the other end closed or exited), also
    when it ends inside a frame."""
    try:
        header = await reader.readexactly(HEADER.size)
        (length,) = HEADER.unpack(header)
        if length > MAX_FRAME:
            raise ChannelError(f"a frame of {length} bytes")
        data = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None
    message = pickle.loads(data)
    if not isinstance(message, tuple) or not message or not isinstance(message[0], str):
        raise ChannelError(f"not a message: {type(message).__name__}")
    return message
