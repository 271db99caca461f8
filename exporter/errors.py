"""The exporter's errors. The CLI prints each as one line and exits non-zero.

ExporterError                 base class; ``str(error)`` is the whole message
├── BadFilter                 a filter or option that cannot be used (``--since 7x``)
├── DatabaseUnavailable       the capture database cannot be reached or read
├── OutputUnwritable          the output directory or a file in it cannot be written
├── InvalidDataset            a file given to validate or fine-tune is not usable
├── BackendError              the fine-tuning service refused or failed a call
├── RegisterError             the route cannot take the new variant
├── EvalError                 the evaluation cannot run (no held-out prompts, gateway down)
└── WorkerFailed              a worker process of the export died
"""

from __future__ import annotations


class ExporterError(Exception):
    """Base class of the exporter's errors."""


class BadFilter(ExporterError):
    pass


class DatabaseUnavailable(ExporterError):
    pass


class OutputUnwritable(ExporterError):
    pass


class InvalidDataset(ExporterError):
    pass


class BackendError(ExporterError):
    pass


class RegisterError(ExporterError):
    pass


class EvalError(ExporterError):
    pass


class WorkerFailed(ExporterError):
    pass
