"""The simulated Fireworks service's state and rules: its limits, the catalogue of base models,
errors in its shape, and the datasets, jobs (advancing in simulated time) and fine-tuned models
of each account. ``simulator.fireworks`` serves them over HTTP as Fireworks' API does."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from simulator.training import Step
from simulator.wire import ShapedError, new_id

CREATE_S = 0.2
VALIDATE_S = 0.2
MAX_UPLOAD_BYTES = 150 * 1024 * 1024
"""What ``:upload`` takes in one request (the SDK's docstring); larger files go through
``:getUploadEndpoint``."""
MAX_DATASET_BYTES = 1024 * 1024 * 1024
DEFAULT_EPOCHS = 1
DEFAULT_LEARNING_RATE = 1e-4
DEFAULT_LORA_RANK = 8
LORA_RANKS = (4, 8, 16, 32, 64)
DEFAULT_BATCH_TOKENS = 32_768
MAX_BATCH_TOKENS = 1_048_576
MAX_BATCH_SAMPLES = 4096
MAX_EPOCHS = 100
MAX_METRIC_ROWS = 2000
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
SIM_PREFIX = "/_sim/fireworks"

RESOURCE_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
ACCOUNT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
MODEL_NAME = re.compile(r"accounts/([a-z0-9][a-z0-9-]{0,62})/models/([a-z0-9][a-z0-9._-]{0,99})")


@dataclass(frozen=True, slots=True)
class BaseModel:
    context_length: int
    tunable: bool = True
    serverless: bool = True


BASE_MODELS: dict[str, BaseModel] = {
    "accounts/fireworks/models/llama-v3p1-8b-instruct": BaseModel(131_072),
    "accounts/fireworks/models/llama-v3p1-70b-instruct": BaseModel(131_072),
    "accounts/fireworks/models/llama-v3p2-1b-instruct": BaseModel(131_072),
    "accounts/fireworks/models/llama-v3p2-3b-instruct": BaseModel(131_072),
    "accounts/fireworks/models/llama-v3p3-70b-instruct": BaseModel(131_072),
    "accounts/fireworks/models/qwen2p5-7b-instruct": BaseModel(32_768),
    "accounts/fireworks/models/qwen2p5-72b-instruct": BaseModel(32_768),
    "accounts/fireworks/models/qwen3-4b": BaseModel(40_960),
    "accounts/fireworks/models/qwen3-8b": BaseModel(40_960),
    "accounts/fireworks/models/qwen3-32b": BaseModel(40_960),
    "accounts/fireworks/models/deepseek-v3": BaseModel(163_840, tunable=False),
}

TERMINAL = frozenset({"JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"})

SFT_FIELDS = frozenset(
    {
        "dataset", "displayName", "awsS3Config", "azureBlobStorageConfig", "baseModel",
        "batchSize", "batchSizeSamples", "samplerCheckpointSaveIntervalSteps", "earlyStop",
        "epochs", "evalAutoCarveout", "evaluationDataset", "gradientAccumulationSteps",
        "isTurbo", "jinjaTemplate", "learningRate", "learningRateWarmupSteps", "loraRank",
        "maxContextLength", "metricsFileSignedUrl", "mtpEnabled", "mtpFreezeBaseModel",
        "mtpNumDraftTokens", "nodes", "optimizerWeightDecay", "outputModel",
        "rendererHuggingFaceRepoId", "region", "usePurpose", "purpose", "reservationTarget",
        "useReservation", "wandbConfig", "warmStartFrom",
    }
)  # fmt: skip
DPO_FIELDS = frozenset(
    {
        "dataset", "displayName", "awsS3Config", "azureBlobStorageConfig", "lossConfig",
        "rendererHuggingFaceRepoId", "reservationTarget", "trainingConfig", "useReservation",
        "wandbConfig",
    }
)  # fmt: skip
TRAINING_CONFIG_FIELDS = frozenset(
    {
        "baseModel", "batchSize", "batchSizeSamples", "samplerCheckpointSaveIntervalSteps",
        "epochs", "gradientAccumulationSteps", "jinjaTemplate", "learningRate",
        "learningRateWarmupSteps", "loraRank", "maxContextLength", "optimizerWeightDecay",
        "outputModel", "region", "warmStartFrom",
    }
)  # fmt: skip
DATASET_FIELDS = frozenset(
    {
        "displayName", "evalProtocol", "evaluationResult", "exampleCount", "externalUrl",
        "format", "sourceJobName", "splitted", "transformed", "userUploaded",
    }
)  # fmt: skip
LOSS_METHODS = ("METHOD_UNSPECIFIED", "DPO", "ORPO")

GRPC_CODES = {
    "CANCELLED": (1, 499),
    "INVALID_ARGUMENT": (3, 400),
    "NOT_FOUND": (5, 404),
    "ALREADY_EXISTS": (6, 409),
    "PERMISSION_DENIED": (7, 403),
    "FAILED_PRECONDITION": (9, 400),
    "UNAUTHENTICATED": (16, 401),
}


class FireworksError(ShapedError):
    """A control-plane error: grpc-gateway's ``{"code", "message", "details"}``."""

    def __init__(self, code: str, message: str) -> None:
        number, status = GRPC_CODES[code]
        self.status_code = status
        super().__init__(
            text=orjson.dumps({"code": number, "message": message, "details": []}).decode(),
            content_type="application/json",
        )


def invalid(message: str) -> FireworksError:
    return FireworksError("INVALID_ARGUMENT", message)


class InferenceError(ShapedError):
    """An inference error, OpenAI-shaped as Fireworks answers them."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        self.status_code = status
        error = {"object": "error", "type": "invalid_request_error", "message": message}
        if code is not None:
            error["code"] = code
        super().__init__(
            text=orjson.dumps({"error": error}).decode(), content_type="application/json"
        )


MODEL_NOT_FOUND = "Model not found, inaccessible, and/or not deployed"


def timestamp(at: float) -> str:
    """RFC 3339 in UTC, as Google's JSON mapping writes a Timestamp."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Dataset:
    account: str
    id: str
    created_at: float
    display_name: str
    example_count: str | None
    format: str
    state: str = "UPLOADING"
    content: bytes = b""
    expected: dict[str, int] = field(default_factory=dict)
    """Files registered by ``:getUploadEndpoint``: name -> size."""
    received: dict[str, bytes] = field(default_factory=dict)
    updated_at: float = 0.0

    @property
    def name(self) -> str:
        return f"accounts/{self.account}/datasets/{self.id}"

    def describe(self) -> dict[str, Any]:
        lines = [line for line in self.content.splitlines() if line.strip()]
        count = self.example_count if self.example_count is not None else str(len(lines))
        answer: dict[str, Any] = {
            "name": self.name,
            "displayName": self.display_name,
            "createTime": timestamp(self.created_at),
            "updateTime": timestamp(self.updated_at or self.created_at),
            "state": self.state,
            "status": {"code": "OK", "message": ""},
            "exampleCount": count,
            "userUploaded": {},
            "format": self.format,
            "createdBy": "simulator@fireworks.local",
        }
        if self.state == "READY":
            tokens = sum(len(line) for line in lines) // 4
            answer["estimatedTokenCount"] = str(tokens)
        return answer


@dataclass(slots=True)
class FineTunedModel:
    account: str
    id: str
    base_model: str
    lora_rank: int
    job: str
    created_at: float

    @property
    def name(self) -> str:
        return f"accounts/{self.account}/models/{self.id}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "displayName": self.id,
            "createTime": timestamp(self.created_at),
            "updateTime": timestamp(self.created_at),
            "kind": "HF_PEFT_ADDON",
            "state": "READY",
            "status": {"code": "OK", "message": ""},
            "public": False,
            "tunable": True,
            "supportsLora": False,
            "supportsServerless": True,
            "contextLength": BASE_MODELS[self.base_model].context_length,
            "fineTuningJob": self.job,
            "peftDetails": {
                "baseModel": self.base_model,
                "r": self.lora_rank,
                "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            },
        }


def base_model_object(name: str, model: BaseModel) -> dict[str, Any]:
    return {
        "name": name,
        "displayName": name.rsplit("/", 1)[-1],
        "kind": "HF_BASE_MODEL",
        "state": "READY",
        "status": {"code": "OK", "message": ""},
        "public": True,
        "tunable": model.tunable,
        "supportsLora": model.tunable,
        "supportsServerless": model.serverless,
        "contextLength": model.context_length,
    }


@dataclass(slots=True)
class Job:
    kind: str
    """``sft`` or ``dpo``."""
    account: str
    id: str
    dataset: str
    evaluation_dataset: str | None
    base_model: str
    warm_start_from: str | None
    output_model: str
    epochs: int
    learning_rate: float
    lora_rank: int
    batch_size: int
    batch_size_samples: int | None
    max_context_length: int | None
    display_name: str
    created_at: float
    run_s: float
    steps: list[Step]
    per_epoch: int
    problem: str | None
    extra: dict[str, Any]
    """Other fields as given (``evalAutoCarveout``, ``earlyStop``, ``lossConfig``...)."""
    metrics_token: str = field(default_factory=lambda: new_id(""))
    state: str = "JOB_STATE_CREATING"
    status: dict[str, str] = field(default_factory=lambda: {"code": "OK", "message": ""})
    updated_at: float = 0.0
    completed_at: float | None = None
    revealed: int = 0

    @property
    def collection(self) -> str:
        return "supervisedFineTuningJobs" if self.kind == "sft" else "dpoJobs"

    @property
    def name(self) -> str:
        return f"accounts/{self.account}/{self.collection}/{self.id}"

    @property
    def running_since(self) -> float:
        return self.created_at + CREATE_S + VALIDATE_S

    def metrics_url(self, origin: str) -> str:
        return f"{origin}{SIM_PREFIX}/metrics/{self.metrics_token}.jsonl"

    def progress(self) -> dict[str, Any]:
        total = len(self.steps)
        percent = 100 if self.state == "JOB_STATE_COMPLETED" else 0
        if total and self.state not in ("JOB_STATE_CREATING", "JOB_STATE_VALIDATING"):
            percent = max(percent, int(100 * self.revealed / total))
        epoch = min(self.epochs - 1, self.revealed // max(1, self.per_epoch))
        return {"percent": percent, "epoch": max(0, epoch)}

    def training_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "outputModel": self.output_model,
            "epochs": self.epochs,
            "learningRate": self.learning_rate,
            "loraRank": self.lora_rank,
            "batchSize": self.batch_size,
        }
        if self.warm_start_from:
            config["warmStartFrom"] = self.warm_start_from
        else:
            config["baseModel"] = self.base_model
        if self.batch_size_samples is not None:
            config["batchSizeSamples"] = self.batch_size_samples
        if self.max_context_length is not None:
            config["maxContextLength"] = self.max_context_length
        return config

    def describe(self, origin: str) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "name": self.name,
            "displayName": self.display_name,
            "createTime": timestamp(self.created_at),
            "updateTime": timestamp(self.updated_at or self.created_at),
            "dataset": self.dataset,
            "state": self.state,
            "status": dict(self.status),
            "createdBy": "simulator@fireworks.local",
            "jobProgress": self.progress(),
        }
        if self.completed_at is not None:
            answer["completedTime"] = timestamp(self.completed_at)
        if self.kind == "sft":
            answer.update(self.training_config())
            if self.evaluation_dataset:
                answer["evaluationDataset"] = self.evaluation_dataset
            if self.revealed:
                answer["metricsFileSignedUrl"] = self.metrics_url(origin)
        else:
            answer["trainingConfig"] = self.training_config()
        answer.update(self.extra)
        return answer

    def metric_rows(self) -> list[dict[str, Any]]:
        rows = []
        for step in self.steps[: self.revealed]:
            row: dict[str, Any] = {
                "step": step.step,
                "epoch": round(step.step / max(1, self.per_epoch), 4),
                "train_loss": step.train_loss,
                "learning_rate": self.learning_rate,
            }
            if step.valid_loss is not None:
                row["eval_loss"] = step.valid_loss
            rows.append(row)
        return rows


class Store:
    def __init__(self) -> None:
        self.datasets: dict[str, Dataset] = {}
        self.jobs: dict[str, Job] = {}
        self.models: dict[str, FineTunedModel] = {}
        self.uploads: dict[str, tuple[str, str]] = {}
        """Signed-URL token -> (dataset name, file name)."""

    def advance(self, job: Job, now: float) -> None:
        """Move ``job`` to where the clock says it is."""
        if job.state in TERMINAL:
            return
        validating = job.created_at + CREATE_S
        running = job.running_since
        if job.state == "JOB_STATE_CREATING" and now >= validating:
            job.state, job.updated_at = "JOB_STATE_VALIDATING", validating
        if job.state == "JOB_STATE_VALIDATING" and now >= running:
            if job.problem is not None:
                job.state, job.updated_at, job.completed_at = "JOB_STATE_FAILED", running, running
                job.status = {"code": "INVALID_ARGUMENT", "message": job.problem}
                return
            job.state, job.updated_at = "JOB_STATE_RUNNING", running
        if job.state != "JOB_STATE_RUNNING":
            return
        total = len(job.steps)
        while job.revealed < total:
            at = running + job.run_s * job.steps[job.revealed].step / total
            if at > now:
                break
            job.revealed += 1
            job.updated_at = at
        if job.revealed == total:
            done = running + job.run_s
            job.state, job.updated_at, job.completed_at = "JOB_STATE_COMPLETED", done, done
            model_id = job.output_model.rsplit("/", 1)[-1]
            self.models[job.output_model] = FineTunedModel(
                job.account, model_id, job.base_model, job.lora_rank, job.name, done
            )

    def advance_all(self) -> None:
        now = time.time()
        for job in list(self.jobs.values()):
            self.advance(job, now)
