"""The TRL trainer that runs a ``Plan``: the export's rows tokenized into datasets (rows with
nothing left to train on within ``max_length`` are dropped and counted), the base model (a
PeftModel on the parent adapter when continuing from one), the ``SFTConfig`` or ``DPOConfig``,
and ``SFTTrainer`` or ``DPOTrainer`` with a fresh LoRA adapter. ``train`` runs it and records
what it does."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.errors import InvalidDataset
from exporter.finetune.local import data
from exporter.finetune.local import state as jobfiles
from exporter.finetune.local.plan import Plan

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback

CHECKPOINTS_KEPT = 2


@dataclass(slots=True)
class Prepared:
    plan: Plan
    tokenizer: PreTrainedTokenizerBase
    template_source: str
    train: Dataset
    valid: Dataset | None
    counts: dict[str, int]
    tokens: int


def _rows(path: Path, method: str) -> list[tuple[str, dict[str, Any]]]:
    rows = [(f"{path.name} line {n}", row) for n, row in data.read_rows(path)]
    for where, row in rows:
        if data.is_preference(row) != (method == "dpo"):
            kind = "a preference row" if method != "dpo" else "a chat row"
            raise InvalidDataset(f"{where}: {kind} in a {method} file")
    return rows


def prepare(plan: Plan) -> Prepared:
    """The tokenizer and the tokenized datasets."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(plan.base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    template = data.training_template(tokenizer)
    own = tokenizer.chat_template
    source = "the model's own" if template == own else "TRL's training variant of the model's"
    limit = plan.max_length
    counts = {"train": 0, "valid": 0, "too_long": 0, "nothing_trained": 0}
    tokens = 0

    def build(path: Path, side: str) -> Dataset:
        nonlocal tokens
        columns: dict[str, list[list[int]]] = {}
        for where, row in _rows(path, plan.method):
            if plan.method == "dpo":
                pair = data.preference(tokenizer, template, row, where)
                if limit is not None and len(pair.prompt_ids) >= limit:
                    counts["too_long"] += 1
                    continue
                values = {
                    "prompt_ids": pair.prompt_ids,
                    "chosen_ids": pair.chosen_ids,
                    "rejected_ids": pair.rejected_ids,
                }
                size = len(pair.prompt_ids) + len(pair.chosen_ids) + len(pair.rejected_ids)
            else:
                example = data.supervised(tokenizer, template, row, where)
                labels = example.labels[:limit] if limit else example.labels
                if all(label == data.IGNORE for label in labels):
                    counts["nothing_trained" if limit is None else "too_long"] += 1
                    continue
                values = {"input_ids": example.input_ids, "labels": example.labels}
                size = len(example.input_ids)
            for key, value in values.items():
                columns.setdefault(key, []).append(value)
            counts[side] += 1
            if side == "train":
                tokens += size
        if not columns:
            raise InvalidDataset(f"{path.name}: no row left to train on")
        return Dataset.from_dict(columns)

    train = build(plan.train_file, "train")
    valid = build(plan.valid_file, "valid") if plan.valid_file else None
    return Prepared(plan, tokenizer, source, train, valid, counts, tokens)


def total_steps(plan: Plan, rows: int) -> int:
    return max(1, math.ceil(rows / plan.batch_size)) * plan.epochs


def load_model(plan: Plan) -> Any:
    """The base model (a PeftModel on the parent adapter when continuing from one)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        plan.device.precision, torch.float32
    )
    model: Any = AutoModelForCausalLM.from_pretrained(plan.base_path, dtype=dtype)
    if plan.parent:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, plan.parent, is_trainable=True)
    return model


def training_arguments(plan: Plan, prepared: Prepared, steps: int) -> Any:
    """SFTConfig or DPOConfig."""
    from trl.trainer.dpo_config import DPOConfig
    from trl.trainer.sft_config import SFTConfig

    every = max(1, math.ceil(steps / 10))
    common: dict[str, Any] = {
        "output_dir": str(plan.run / jobfiles.CHECKPOINTS),
        "num_train_epochs": plan.epochs,
        "per_device_train_batch_size": plan.batch_size,
        "per_device_eval_batch_size": plan.batch_size,
        "learning_rate": plan.learning_rate,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": plan.save_steps or every,
        "save_total_limit": CHECKPOINTS_KEPT,
        "eval_strategy": "steps" if prepared.valid is not None else "no",
        "eval_steps": every,
        "report_to": "none",
        "seed": plan.seed,
        "data_seed": plan.seed,
        "bf16": plan.device.precision == "bf16",
        "fp16": plan.device.precision == "fp16",
        "use_cpu": plan.device.type == "cpu",
        "gradient_checkpointing": plan.device.type == "cuda",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "max_length": plan.max_length,
    }
    if plan.method == "dpo":
        return DPOConfig(**common, beta=plan.dpo_beta)
    return SFTConfig(**common, assistant_only_loss=False, packing=False)


def build_trainer(
    plan: Plan, prepared: Prepared, callbacks: list[TrainerCallback] | None = None
) -> Trainer:
    """The TRL trainer over the prepared datasets (labels already masked: the trainer uses
    them as they are)."""
    from peft import LoraConfig, PeftModel
    from trl.trainer.dpo_trainer import DPOTrainer
    from trl.trainer.sft_trainer import SFTTrainer

    model = load_model(plan)
    peft_config = None
    if not isinstance(model, PeftModel):
        alpha = plan.lora_alpha
        lora: dict[str, Any] = {
            "r": plan.lora_r,
            "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
            "lora_dropout": plan.lora_dropout,
            "target_modules": plan.lora_targets,
            "task_type": "CAUSAL_LM",
        }
        peft_config = LoraConfig(**lora)
    steps = total_steps(plan, len(prepared.train))
    args = training_arguments(plan, prepared, steps)
    if plan.method == "dpo":

        class PreTokenizedDPO(DPOTrainer):
            """Rows are already cut into prompt/chosen/rejected ids by ``data.preference``."""

            def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
                return dataset

        trainer: Trainer = PreTokenizedDPO(
            model=model,
            args=args,
            train_dataset=prepared.train,
            eval_dataset=prepared.valid,
            processing_class=prepared.tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    else:
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=prepared.train,
            eval_dataset=prepared.valid,
            processing_class=prepared.tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    return trainer
