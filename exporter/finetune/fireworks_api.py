"""``FineTuneBackend`` over Fireworks AI's fine-tuning API, through its official Python SDK
(``fireworks-ai``: ``pip install '.[hosted]'``), imported only when this backend is chosen.

    export FIREWORKS_API_KEY=... FIREWORKS_ACCOUNT_ID=...
    gateway finetune DATA --backend fireworks --base llama-v3p1-8b-instruct

The key comes from ``--api-key`` or ``$FIREWORKS_API_KEY``, the account (Fireworks keeps
datasets, jobs and models per account) from ``--account`` or ``$FIREWORKS_ACCOUNT_ID``, the
service from ``--api-base`` or ``$FIREWORKS_BASE_URL`` (else ``https://api.fireworks.ai``; a
trailing ``/v1`` or ``/inference/v1`` is dropped, since the SDK adds its own paths).

What each step is on Fireworks:

- ``upload``: one dataset per file (``datasets.create``, then ``datasets.upload`` for a file up
  to 150 MB, else ``get_upload_endpoint``, a PUT to the signed URL and ``validate_upload``); the
  file's id is the dataset's name, ``accounts/{account}/datasets/{id}``.
- ``create``: chat rows start a supervised fine-tuning job, preference rows a DPO job. Fireworks
  trains LoRA adapters: ``--lora-r`` is the rank (else Fireworks' default), ``--training full``
  and LoRA alpha/dropout are refused. ``n_epochs`` is ``epochs``; ``batch_size`` (examples per
  batch) is ``batchSizeSamples`` (Fireworks' ``batchSize`` counts tokens); the learning rate is
  ``--learning-rate`` as given, else OpenAI's multiplier read against Fireworks' default,
  ``multiplier / 0.1 * 1e-4`` (the export's usual 0.1 is Fireworks' 1e-4). The validation file
  is the ``evaluationDataset`` of a supervised job (DPO jobs take none: it is left out).
  ``--suffix`` names the output model (``{suffix}-{random}``), else it is the job's id; the
  seed is not taken by Fireworks. ``--from MODEL`` (a LoRA model of the account) is
  ``warmStartFrom``; ``--dpo-beta`` is the DPO loss's ``beta``. A base given without an account
  (``llama-v3p1-8b-instruct``) is looked up under ``accounts/fireworks/models/``.
- Jobs are named by their id (the last part of their resource name); ``get`` looks among the
  supervised jobs, then the DPO jobs. States: JOB_STATE_COMPLETED (and EARLY_STOPPED) is
  succeeded, FAILED and EXPIRED failed, CANCELLED cancelled, CREATING and PENDING queued,
  VALIDATING validating_files, CANCELLING cancelling, PAUSED paused, the rest running. A job
  warm-started from a LoRA model names only that model: its base is read from the model.
- ``events``: Fireworks has no events API, so the job's are derived from what it shows: its
  creation, its current state (or how it ended, with the status message), and one
  ``metrics`` event per step of its metrics file, as OpenAI's events carry them.
- ``metrics``: the metrics file behind the job's signed URL (``metricsFileSignedUrl`` of a
  supervised job, ``get_metrics_file_endpoint`` of a DPO job), JSON lines read for ``step``
  and the training and evaluation losses under the usual names (``train_loss``/``loss``/
  ``train/loss``, ``eval_loss``/``valid_loss``/``eval/loss``).
- ``fine_tuned_model``: the job's ``outputModel``, ``accounts/{account}/models/{id}``, once it
  has succeeded: the name Fireworks' OpenAI-compatible endpoint
  (``https://api.fireworks.ai/inference/v1``) answers to.

Every failure is a one-line ``BackendError`` with Fireworks' own message; a missing key names
``FIREWORKS_API_KEY``, a missing account ``FIREWORKS_ACCOUNT_ID``, a base model Fireworks cannot
fine-tune is named with some it can.

This module makes the calls; what they return (a job's state, its metrics file, the events
derived from them) is read in ``fireworks_reports``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from exporter.errors import BackendError, BadFilter
from exporter.finetune.backend import Job, JobEvent, JobSpec, MetricPoint
from exporter.finetune.fireworks_reports import job_events, job_from, metrics_from_jsonl

if TYPE_CHECKING:
    from fireworks import Fireworks

T = TypeVar("T")

DEFAULT_LEARNING_RATE = 1e-4
"""Fireworks' default learning rate for LoRA fine-tuning; OpenAI's usual multiplier (0.1)
maps to it."""
SINGLE_UPLOAD_BYTES = 150 * 1024 * 1024
"""The most ``datasets.upload`` takes in one request; larger files go through signed URLs."""
BASE_ACCOUNT = "accounts/fireworks/models/"
EXAMPLE_BASE = "accounts/fireworks/models/llama-v3p1-8b-instruct"
SIGNED_URL_TIMEOUT = httpx.Timeout(600.0, connect=10.0)


def _slug(text: str, limit: int) -> str:
    """Text as a Fireworks resource id part: lowercase letters, digits and hyphens."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].strip("-")


def _unique(prefix: str) -> str:
    """A resource id that starts with a letter and is not used yet: ``prefix-xxxxxxxx``."""
    stem = _slug(prefix, 50) or "gateway"
    if not stem[0].isalpha():
        stem = "g-" + stem
    return f"{stem}-{os.urandom(4).hex()}"


def _message(body: Any, fallback: str) -> str:
    """Fireworks' message from an error body: its gateway's ``{"code", "message"}`` or the
    inference path's ``{"error": {"message"}}``."""
    if isinstance(body, dict):
        if isinstance(body.get("message"), str):
            return str(body["message"])
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return fallback


class StatusError(BackendError):
    """A refusal from Fireworks, with its HTTP status."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class FireworksBackend:
    name = "fireworks"

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        account: str | None = None,
        training: str | None = None,
        lora_r: int | None = None,
        learning_rate: float | None = None,
        dpo_beta: float | None = None,
        single_upload_bytes: int = SINGLE_UPLOAD_BYTES,
    ) -> None:
        if training == "full":
            raise BadFilter(
                "--training full: Fireworks' fine-tuning trains LoRA adapters; leave it out"
            )
        key = api_key if api_key is not None else os.environ.get("FIREWORKS_API_KEY", "")
        if not key:
            raise BackendError("no Fireworks API key: set FIREWORKS_API_KEY (or give --api-key)")
        account = account or os.environ.get("FIREWORKS_ACCOUNT_ID", "")
        if not account:
            raise BackendError(
                "no Fireworks account: set FIREWORKS_ACCOUNT_ID (or give --account), the id "
                "in your models' names accounts/<id>/..."
            )
        try:
            from fireworks import Fireworks
        except ImportError:
            raise BackendError(
                "--backend fireworks needs Fireworks' SDK: pip install 'distillation-gateway"
                "[hosted]' (or pip install fireworks-ai)"
            ) from None
        given = base_url or os.environ.get("FIREWORKS_BASE_URL") or None
        if given:
            given = given.rstrip("/")
            for tail in ("/inference/v1", "/v1"):
                given = given.removesuffix(tail)
        self.base_url = given or "https://api.fireworks.ai"
        self.account = account
        self.lora_r = lora_r
        self.learning_rate = learning_rate
        self.dpo_beta = dpo_beta
        self.single_upload_bytes = single_upload_bytes
        self._bases: dict[str, str] = {}
        self._client: Fireworks = Fireworks(
            api_key=key, account_id=account, base_url=given, default_headers=headers or None
        )

    # -- calls --------------------------------------------------------------------------------

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, with the SDK's errors as one-line BackendErrors."""
        import fireworks

        try:
            return call()
        except fireworks.APIStatusError as exc:
            detail = _message(exc.body, exc.response.reason_phrase or "refused")
            raise StatusError(
                f"{what}: {exc.status_code} {detail}", exc.status_code, detail
            ) from None
        except fireworks.APIConnectionError as exc:
            raise BackendError(f"{what}: cannot reach {self.base_url} ({exc.message})") from None
        except (fireworks.FireworksError, ValueError) as exc:
            raise BackendError(f"{what}: {exc}") from None

    def _model_name(self, model: str, account: str) -> str:
        return model if "/" in model else f"accounts/{account}/models/{model}"

    # -- files --------------------------------------------------------------------------------

    def upload(self, path: Path, purpose: str = "fine-tune") -> str:
        try:
            size = path.stat().st_size
            with path.open("rb") as file:
                examples = sum(1 for line in file if line.strip())
        except OSError as exc:
            raise BackendError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not examples:
            raise BackendError(f"{path} is empty: nothing to upload")
        datasets = self._client.datasets
        dataset_id = _unique(f"gateway-{path.stem}")
        what = f"uploading {path.name} as dataset {dataset_id}"
        spec: Any = {
            "user_uploaded": {},
            "example_count": str(examples),
            "display_name": path.name[:60],
        }
        dataset = self._call(what, lambda: datasets.create(dataset_id=dataset_id, dataset=spec))
        filename = path.name if path.name.endswith(".jsonl") else f"{path.stem}.jsonl"
        if size <= self.single_upload_bytes:
            with path.open("rb") as file:
                self._call(what, lambda: datasets.upload(dataset_id, file=(filename, file)))
        else:
            self._upload_signed(what, dataset_id, path, filename, size)
        dataset = self._call(what, lambda: datasets.get(dataset_id))
        if dataset.state != "READY":
            raise BackendError(f"{what}: the dataset is {dataset.state}, not READY")
        return dataset.name or f"accounts/{self.account}/datasets/{dataset_id}"

    def _upload_signed(
        self, what: str, dataset_id: str, path: Path, filename: str, size: int
    ) -> None:
        """A file over one request's limit: its signed URL, a PUT, then validate."""
        datasets = self._client.datasets
        answer = self._call(
            what,
            lambda: datasets.get_upload_endpoint(
                dataset_id, filename_to_size={filename: str(size)}
            ),
        )
        url = (answer.filename_to_signed_urls or {}).get(filename)
        if not url:
            raise BackendError(f"{what}: Fireworks gave no upload URL for {filename}")
        headers = {
            "content-type": "application/octet-stream",
            "x-goog-content-length-range": f"{size},{size}",
        }
        try:
            with path.open("rb") as file:
                response = httpx.put(url, content=file, headers=headers, timeout=SIGNED_URL_TIMEOUT)
        except (OSError, httpx.HTTPError) as exc:
            raise BackendError(f"{what}: the upload to its signed URL failed: {exc}") from None
        if response.status_code >= 300:
            raise BackendError(
                f"{what}: the signed URL answered {response.status_code} {response.text[:200]}"
            )
        self._call(what, lambda: datasets.validate_upload(dataset_id, body={}))

    # -- jobs ---------------------------------------------------------------------------------

    def create(self, spec: JobSpec) -> Job:
        hp = spec.hyperparameters
        config: dict[str, Any] = {}
        parent = spec.parent
        if parent:
            config["warm_start_from"] = self._model_name(parent, self.account)
        else:
            config["base_model"] = self._model_name(spec.base_model, "fireworks")
        if hp.n_epochs is not None:
            config["epochs"] = hp.n_epochs
        if hp.batch_size is not None:
            config["batch_size_samples"] = hp.batch_size
        if self.learning_rate is not None:
            config["learning_rate"] = self.learning_rate
        elif hp.learning_rate_multiplier is not None:
            rate = hp.learning_rate_multiplier / 0.1 * DEFAULT_LEARNING_RATE
            config["learning_rate"] = float(f"{rate:.3g}")
        if self.lora_r is not None:
            config["lora_rank"] = self.lora_r
        if spec.suffix:
            config["output_model"] = _unique(spec.suffix)
        display = f"gateway {spec.method}: {spec.training_file.rsplit('/', 1)[-1]}"[:60]
        what = f"creating the {spec.method} job on Fireworks"
        if spec.method == "dpo":
            loss: Any = {"method": "DPO"}
            if self.dpo_beta is not None:
                loss["dpo"] = {"beta": self.dpo_beta}
            training: Any = config
            created: Any = self._create(
                spec,
                what,
                lambda: self._client.dpo_jobs.create(
                    dataset=spec.training_file,
                    display_name=display,
                    training_config=training,
                    loss_config=loss,
                ),
            )
        else:
            if self.dpo_beta is not None:
                raise BadFilter("--dpo-beta: only for a preference export (a DPO job)")
            extra: dict[str, Any] = {}
            if spec.validation_file:
                extra["evaluation_dataset"] = spec.validation_file
            created = self._create(
                spec,
                what,
                lambda: self._client.supervised_fine_tuning_jobs.create(
                    dataset=spec.training_file, display_name=display, **config, **extra
                ),
            )
        return self._job_from(created.to_dict(mode="json"))

    def _create(self, spec: JobSpec, what: str, call: Callable[[], T]) -> T:
        """The job's creation, with a refused model named with the fix."""
        try:
            return self._call(what, call)
        except StatusError as exc:
            parent = spec.parent
            named = self._model_name(parent, self.account) if parent else None
            named = named or self._model_name(spec.base_model, "fireworks")
            if named not in exc.detail or exc.status not in (400, 404):
                raise
            if parent:
                raise BackendError(
                    f"--from {parent}: {exc.detail} (give a LoRA model of account "
                    f"{self.account}, accounts/{self.account}/models/<id>)"
                ) from None
            raise BackendError(
                f"--base {spec.base_model}: {exc.detail}; give a base model Fireworks can "
                f"fine-tune, such as {self._tunable_examples()}"
            ) from None

    def check_base(self, model: str) -> None:
        """A base Fireworks does not have, or cannot tune, is an error before any upload (the
        loop calls this first, so no dataset is left behind in the account)."""
        name = self._model_name(model, "fireworks")
        account, _, model_id = name.removeprefix("accounts/").partition("/models/")
        what = f"looking up the base model {name}"
        try:
            found = self._call(what, lambda: self._client.models.get(model_id, account_id=account))
        except StatusError as exc:
            if exc.status != 404:
                raise
            raise BackendError(
                f"--base {model}: Fireworks has no model {name}; give a base model it can "
                f"fine-tune, such as {self._tunable_examples()}"
            ) from None
        if getattr(found, "tunable", True) is False:
            raise BackendError(
                f"--base {model}: Fireworks cannot fine-tune {name}; give a base model it can "
                f"fine-tune, such as {self._tunable_examples()}"
            )

    def _tunable_examples(self) -> str:
        try:
            page = self._client.models.list(account_id="fireworks", page_size=200)
            names = [m.name for m in page.models if m.tunable and m.name]
        except Exception:  # only a hint for an error already being reported
            names = []
        return ", ".join(names[:6]) if names else EXAMPLE_BASE

    def _raw(self, job_id: str) -> dict[str, Any]:
        """The job as Fireworks describes it: a supervised job, else a DPO job."""
        job_id = job_id.rstrip("/").rsplit("/", 1)[-1]
        sft = self._client.supervised_fine_tuning_jobs
        dpo = self._client.dpo_jobs
        what = f"job {job_id}"
        try:
            return _dump(self._call(what, lambda: sft.get(job_id)))
        except StatusError as exc:
            if exc.status != 404:
                raise
        try:
            return _dump(self._call(what, lambda: dpo.get(job_id)))
        except StatusError as exc:
            if exc.status != 404:
                raise
        raise BackendError(
            f"no Fireworks job {job_id} in account {self.account} (see `gateway finetune list "
            "--backend fireworks`)"
        )

    def _job_from(self, raw: dict[str, Any]) -> Job:
        return job_from(raw, self._base_of)

    def _base_of(self, model: str) -> str:
        """The base model under a LoRA model (a job warm-started from it names only it)."""
        if model not in self._bases:
            account, _, model_id = model.removeprefix("accounts/").partition("/models/")
            try:
                found = self._client.models.get(model_id, account_id=account)
                details = found.peft_details
                self._bases[model] = details.base_model if details else model
            except Exception:  # the job is still described, with the model it started from
                return model
        return self._bases[model]

    def get(self, job_id: str) -> Job:
        return self._job_from(self._raw(job_id))

    def list_jobs(self, limit: int = 20) -> list[Job]:
        sft = self._client.supervised_fine_tuning_jobs
        dpo = self._client.dpo_jobs
        listed = self._call("listing jobs", lambda: sft.list(page_size=limit))
        raws = [_dump(job) for job in listed.supervised_fine_tuning_jobs]
        preference = self._call("listing DPO jobs", lambda: dpo.list(page_size=limit))
        raws += [_dump(job) for job in preference.dpo_jobs]
        raws.sort(key=lambda raw: str(raw.get("createTime") or ""), reverse=True)
        return [self._job_from(raw) for raw in raws[:limit]]

    def cancel(self, job_id: str) -> Job:
        raw = self._raw(job_id)
        name = str(raw.get("name") or "")
        short = name.rsplit("/", 1)[-1]
        what = f"cancelling {short}"
        if "/dpoJobs/" in name:
            self._call(what, lambda: self._client.dpo_jobs.cancel(short, body={}))
        else:
            self._call(
                what, lambda: self._client.supervised_fine_tuning_jobs.cancel(short, body={})
            )
        return self.get(short)

    # -- progress -----------------------------------------------------------------------------

    def _metrics_url(self, raw: dict[str, Any]) -> str | None:
        name = str(raw.get("name") or "")
        if "/dpoJobs/" not in name:
            url = raw.get("metricsFileSignedUrl")
            return url if isinstance(url, str) and url else None
        short = name.rsplit("/", 1)[-1]
        answer = self._call(
            f"the metrics of {short}",
            lambda: self._client.dpo_jobs.get_metrics_file_endpoint(short),
        )
        return answer.signed_url or None

    def _metrics_text(self, raw: dict[str, Any]) -> str:
        """The job's metrics file so far ("" before its first step)."""
        url = self._metrics_url(raw)
        if url is None:
            return ""
        try:
            response = httpx.get(url, timeout=SIGNED_URL_TIMEOUT)
        except httpx.HTTPError as exc:
            raise BackendError(f"reading the job's metrics file: {exc}") from None
        if response.status_code >= 300:
            raise BackendError(f"reading the job's metrics file: {response.status_code}")
        return response.text

    def metrics(self, job: Job) -> list[MetricPoint]:
        raw = job.raw if job.raw.get("name") else self._raw(job.id)
        return metrics_from_jsonl(self._metrics_text(raw))

    def events(self, job_id: str) -> list[JobEvent]:
        raw = self._raw(job_id)
        return job_events(raw, self._job_from(raw), self._metrics_text(raw))


def _dump(job: Any) -> dict[str, Any]:
    """A job of the SDK as the JSON Fireworks sent."""
    dumped: dict[str, Any] = job.to_dict(mode="json")
    return dumped
