"""The simulated Together account's model catalogue: which base models it fine-tunes, each
with the limits ``GET /v1/fine-tunes/models/limits`` reports, what a token of training costs,
and the serverless models its chat endpoint answers besides the account's fine-tunes.

Figures follow Together's published limits and prices for each size class (LoRA and full
training, SFT and DPO); they are the simulator's, fixed, and only as right as a fixture needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LORA_MODULES = ["k_proj", "up_proj", "o_proj", "q_proj", "down_proj", "v_proj", "gate_proj"]


@dataclass(frozen=True, slots=True)
class BaseModel:
    name: str
    size_b: float
    """Parameters, in billions: the price class."""
    context: int
    lora_batch: tuple[int, int, int]
    """LoRA: (min batch, max SFT batch, max DPO batch)."""
    full_batch: tuple[int, int, int] | None
    """Full training the same way; None: LoRA only."""
    default_rank: int = 16
    max_rank: int = 64
    supports_tools: bool = True
    supports_reasoning: bool = False

    def limits(self) -> dict[str, Any]:
        """The ``FineTuneModelLimits`` object."""
        low, high, dpo = self.lora_batch
        limits: dict[str, Any] = {
            "model_name": self.name,
            "default_gradient_accumulation_steps": 1,
            "lora_training": {
                "default_rank": self.default_rank,
                "max_rank": self.max_rank,
                "min_batch_size": low,
                "max_batch_size": high,
                "max_batch_size_dpo": dpo,
                "target_modules": LORA_MODULES,
            },
            "max_learning_rate": 1.0,
            "min_learning_rate": 1e-8,
            "max_num_checkpoints": 20,
            "max_num_epochs": 20,
            "max_num_evals": 100,
            "max_seq_length_sft": self.context,
            "max_seq_length_dpo": self.context // 2,
            "min_max_seq_length": 512,
            "merge_output_lora": True,
            "supports_full_training": self.full_batch is not None,
            "supports_reasoning": self.supports_reasoning,
            "supports_tools": self.supports_tools,
            "supports_vision": False,
        }
        if self.full_batch is not None:
            low, high, dpo = self.full_batch
            limits["full_training"] = {
                "min_batch_size": low,
                "max_batch_size": high,
                "max_batch_size_dpo": dpo,
            }
        return limits

    def price_per_million(self, full: bool, dpo: bool) -> float:
        """USD per million trained tokens (training tokens x epochs, plus evaluation tokens)."""
        if self.size_b <= 16:
            price = 0.54 if full else 0.48
        elif self.size_b <= 69:
            price = 1.65 if full else 1.50
        else:
            price = 3.20 if full else 2.90
        return price * (2.5 if dpo else 1.0)


BASE_MODELS: dict[str, BaseModel] = {
    model.name: model
    for model in (
        BaseModel(
            "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", 8, 131072, (8, 32, 16), (8, 32, 16)
        ),
        BaseModel(
            "meta-llama/Meta-Llama-3.1-70B-Instruct-Reference", 70, 131072, (8, 16, 8), (32, 32, 16)
        ),
        BaseModel("meta-llama/Llama-3.2-1B-Instruct", 1, 131072, (8, 64, 32), (8, 64, 32)),
        BaseModel("meta-llama/Llama-3.2-3B-Instruct", 3, 131072, (8, 64, 32), (8, 64, 32)),
        BaseModel(
            "meta-llama/Llama-3.3-70B-Instruct-Reference", 70, 131072, (8, 16, 8), (32, 32, 16)
        ),
        BaseModel("Qwen/Qwen2.5-7B-Instruct", 7, 32768, (8, 32, 16), (8, 32, 16)),
        BaseModel("Qwen/Qwen2.5-14B-Instruct", 14, 32768, (8, 32, 16), (8, 32, 16)),
        BaseModel("Qwen/Qwen3-8B", 8, 40960, (8, 32, 16), (8, 32, 16), supports_reasoning=True),
        BaseModel(
            "mistralai/Mistral-7B-Instruct-v0.2",
            7,
            32768,
            (8, 32, 16),
            (8, 32, 16),
            supports_tools=False,
        ),
        BaseModel("google/gemma-3-12b-it", 12, 131072, (8, 32, 16), None, default_rank=8),
    )
}

SERVERLESS_MODELS: tuple[str, ...] = (
    "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
    "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
    "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "Qwen/Qwen2.5-7B-Instruct-Turbo",
    "Qwen/Qwen3-235B-A22B-Instruct-2507-tput",
    "mistralai/Mistral-7B-Instruct-v0.2",
    "deepseek-ai/DeepSeek-V3",
)
"""Models the chat endpoint answers without a fine-tune (Together's serverless names)."""


def base_model(name: str) -> BaseModel | None:
    return BASE_MODELS.get(name)
