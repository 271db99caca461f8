"""Request ids: UUIDv7 as 32 hex digits, so ids sort by time (good for the capture store)."""

from __future__ import annotations

import os
import time


def new_request_id() -> str:
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76  # version 7
        | ((rand >> 62) & 0xFFF) << 64
        | 0b10 << 62  # RFC 4122 variant
        | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    )
    return f"{value:032x}"
