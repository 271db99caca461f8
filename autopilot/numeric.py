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

The first attribute read (``np.zeros``) imports numpy; later reads of it are plain reads.
Nothing at those modules' top level may read an attribute of ``np``, or the import happens
at start again (tests/autopilot/test_numeric.py checks that it does not).
"""

from __future__ import annotations

import importlib
from typing import Any


class DeferredModule:
    """Stands in for a module: the first read of an attribute imports the module and keeps the
    attribute on this object, so that later reads cost what a module attribute's does (the
    simulator reads ``np.*`` in its inner loops). Not for a module whose attributes change."""

    def __init__(self, name: str) -> None:
        self._deferred_name = name

    def __getattr__(self, attribute: str) -> Any:
        held = self.__dict__
        value = getattr(importlib.import_module(held["_deferred_name"]), attribute)
        held[attribute] = value
        return value

    def __repr__(self) -> str:
        state = "imported" if len(self.__dict__) > 1 else "not imported yet"
        return f"<deferred module {self._deferred_name!r}, {state}>"


np = DeferredModule("numpy")
