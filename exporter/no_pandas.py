"""pandas kept out of the export's processes.

pyarrow imports pandas, when it is installed (the training extra brings it), on its first
compute call or NumPy conversion, and on converting a time-zone-aware time to or from Python:
46 MB of every process that reads the archive, for nothing the export uses. The worker
processes keep it out for good (they run nothing else); the export's own process while it
reads an archive. A ``None`` in ``sys.modules`` would not do: pyarrow's compiled import takes
the ``None`` for the module.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> Any:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas is kept out of the export", name=name)
        return None


def keep_pandas_out() -> _NoPandas | None:
    """From now on, importing pandas fails here (unless it is imported already: then nothing
    changes). The finder installed, to remove with ``let_pandas_in``."""
    if "pandas" in sys.modules:
        return None
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    return finder


def let_pandas_in(finder: _NoPandas | None) -> None:
    if finder is not None and finder in sys.meta_path:
        sys.meta_path.remove(finder)
