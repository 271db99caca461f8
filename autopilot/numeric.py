"""numpy for the autopilot, imported when a rollout first computes with it.

The gateway imports the autopilot's modules at start (its rollout service runs whenever capture
is on, to pick up a rollout started from the admin API), but most gateways never have a
rollout: numpy's import (~80-100 ms and ~15 MiB of RSS) would be paid by every start and every
worker for nothing. The numerical modules (``autopilot.sequential``, ``gates``, ``controller``)
therefore write ``np.zeros(...)`` as usual against this stand-in, and type-check against numpy
itself::

    if TYPE_CHECKING:
        import numpy as np
    else:
        from autopilot.numeric import np

The first attribute read (``np.zeros``) imports numpy; every later read goes straight to it.
Nothing at those modules' top level may read an attribute of ``np``, or the import happens
at start again (tests/autopilot/test_numeric.py checks that it does not).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class DeferredModule:
    """Stands in for a module: the first attribute read imports it; later reads go to it."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attribute)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<deferred module {self._name!r}, {state}>"


np = DeferredModule("numpy")
