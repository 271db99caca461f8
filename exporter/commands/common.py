"""What every exporter command shares: one-line errors, exit codes, JSON output.

Exit codes: 0 done; 1 the work failed (database unreachable, output unwritable, a job that
failed, a dataset with errors); 2 a bad filter or option; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from exporter.errors import BadFilter, ExporterError

OK = 0
FAILED = 1
USAGE = 2


def fail(message: str, code: int = FAILED) -> int:
    print(f"gateway: {message}", file=sys.stderr)
    return code


def guarded(run: Callable[[], int]) -> int:
    """``run()``, with the exporter's errors as one line on stderr and an exit code."""
    try:
        return run()
    except BadFilter as exc:
        return fail(str(exc), USAGE)
    except ExporterError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted", 130)


def run_async(coroutine: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coroutine)


def print_json(value: Any) -> None:
    sys.stdout.write(
        orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"
    )
