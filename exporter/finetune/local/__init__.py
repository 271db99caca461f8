"""``--backend local``: LoRA fine-tuning on this machine with TRL and PEFT (``pip install
.[train]``), run in a background process that the CLI follows through files.

Modules: backend (``LocalBackend``, the ``FineTuneBackend``: light, imports no torch), state
(a job's directory and its files), data (export rows as token ids and labels, by the base
model's chat template), train (the training process: SFT or DPO, checkpoints, resume, the
adapter and the manifest), tiny (a tiny model made from an export, for tests and the demo).
"""

from exporter.finetune.local.backend import LocalBackend

__all__ = ["LocalBackend"]
