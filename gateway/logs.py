"""Log lines: one format for every logger, and no credential in an access log line.

``logging_config(level)`` is the ``dictConfig`` the ``gateway serve`` command applies (uvicorn
applies it again in each worker): our packages' loggers (``gateway``, ``capture``, ``router``,
``exporter``) and uvicorn's write ``time LEVEL name: message`` to stderr at the configured
level; anything else (libraries, asyncio) reaches the same handler through the root logger, at
WARNING. Uvicorn's access lines go through ``MaskCredentials``: a query string's values whose
names look like credentials (``?api_key=...``, ``?key=``, ``token``, ``sig``...) are replaced by
``***``, so a client putting a key in a URL does not put it in the log.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OUR_LOGGERS = ("gateway", "capture", "router", "exporter", "uvicorn", "uvicorn.access")
MASK = "***"

_CREDENTIAL = re.compile(
    r"key|token|secret|passw|pwd|auth|signature|credential|session|cookie|jwt|bearer|^sig$"
    r"|^code$|^pass$"
)


def is_credential_name(name: str) -> bool:
    """Does a query parameter's name look like it carries a credential?"""
    normal = unquote(name).lower().replace("-", "").replace("_", "").replace(".", "")
    return _CREDENTIAL.search(normal) is not None


def mask_query(target: str) -> str:
    """``target`` (a path with its query string) with credential-looking values masked."""
    path, sep, query = target.partition("?")
    if not sep or not query:
        return target
    fragment = ""
    if "#" in query:
        query, _, rest = query.partition("#")
        fragment = "#" + rest
    parts = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if value and is_credential_name(name):
            part = f"{name}{eq}{MASK}"
        parts.append(part)
    return f"{path}?{'&'.join(parts)}{fragment}"


class MaskCredentials(logging.Filter):
    """For ``uvicorn.access``: its record's args are ``(client, method, path with query,
    http version, status)``; the path's credential-looking query values are masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or len(args) < 3:
            return True
        target = args[2]
        if isinstance(target, str) and "?" in target:
            record.args = (*args[:2], mask_query(target), *args[3:])
        return True


def logging_config(level: str, log_format: str = LOG_FORMAT) -> dict[str, Any]:
    """One format for our lines, uvicorn's and everyone else's, applied in every worker too."""
    level = level.upper()
    ours = {"handlers": ["stderr"], "level": level, "propagate": False}
    loggers: dict[str, Any] = {name: dict(ours) for name in OUR_LOGGERS}
    loggers["uvicorn.access"]["filters"] = ["mask_credentials"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": log_format}},
        "filters": {"mask_credentials": {"()": "gateway.logs.MaskCredentials"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": loggers,
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
