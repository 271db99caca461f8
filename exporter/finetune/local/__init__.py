"""``--backend local``: LoRA fine-tuning on this machine with TRL and PEFT (``pip install
.[train]``), run in a background process that the CLI follows through files.

Modules: backend (``LocalBackend``, the ``FineTuneBackend``: light, imports no torch), state
(a job's directory and its files), data (export rows as token ids and labels, by the base
model's chat template), plan (what a run trains: the config with its defaults, the device),
trainer (the TRL trainer for a plan: tokenized datasets, model, SFT or DPO config), train (the
training process: checkpoints, resume, metrics and events, the adapter and the manifest), tiny
(a tiny model made from an export, for tests and the demo).
"""

from exporter.finetune.local.backend import LocalBackend

__all__ = ["LocalBackend"]
