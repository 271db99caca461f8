"""``--backend local``: LoRA fine-tuning on this machine with TRL and PEFT.

``upload`` copies the file under the runs directory (a job trains on what was uploaded);
``create`` checks the base model and the rows, writes the job's directory and starts
``python -m exporter.finetune.local.train RUN_DIR`` in the background (its own session, so the
CLI can return and the job goes on); ``get``, ``list_jobs``, ``events`` and ``metrics`` read
the files it writes; ``cancel`` stops the process; ``resume`` starts it again on a job that
was interrupted (killed, crashed, cancelled): training goes on from the last checkpoint.

The heavy libraries (torch, transformers, peft, trl: ``pip install .[train]``) are imported
only inside the methods that need them; importing this module costs nothing. Base models are
a local directory or a Hugging Face id: an id already in the Hugging Face cache is used from
there; with ``HF_HUB_OFFLINE=1`` nothing else is looked up, and an id that is not cached is a
one-line error naming the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from exporter.errors import BackendError, BadFilter, InvalidDataset
from exporter.finetune.backend import Job, JobEvent, JobSpec, MetricPoint
from exporter.finetune.local import state

TRAIN_MODULE = "exporter.finetune.local.train"
CANCEL_GRACE_S = 20.0
MISSING = (
    "the local backend needs the training libraries: pip install 'distillation-gateway[train]' "
    "(torch, transformers, peft, trl)"
)


HOSTED_ONLY = ("gpt-", "ft:", "o1", "o3", "o4", "claude-", "gemini-")
"""Model names that no Hugging Face repository holds: a clear error rather than a Hub lookup."""


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _looks_like_path(given: str) -> bool:
    return given.startswith((".", "/", "~")) or given.count("/") > 1


def resolve_base(given: str) -> dict[str, Any]:
    """Where the base model's files are: a local directory, or a Hugging Face id (from the
    cache, or checked on the Hub when online); BadFilter naming the fix when it is neither."""
    path = Path(given).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BadFilter(
                f"--base {given}: no config.json in that directory (give a Hugging Face model "
                "directory, as save_pretrained writes it, or a model id)"
            )
        return {**_describe_model(path), "given": given, "path": str(path.resolve())}
    if given.startswith(HOSTED_ONLY):
        raise BadFilter(
            f"--base {given}: a hosted model; the local backend trains open-weight models: give "
            "a Hugging Face id (e.g. Qwen/Qwen2.5-0.5B-Instruct) or a model directory"
        )
    if path.exists() or _looks_like_path(given) or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", given):
        raise BadFilter(f"--base {given}: no such model directory")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise BackendError(MISSING) from None
    try:
        cached = Path(snapshot_download(given, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        cached = None
    if cached is not None and (cached / "config.json").is_file():
        described = _describe_model(cached)
        return {**described, "given": given, "path": str(cached), "revision": cached.name}
    if _offline():
        raise BadFilter(
            f"--base {given}: not a local directory, and not in the Hugging Face cache while "
            f"HF_HUB_OFFLINE is set: download it first (`hf download {given}`), or give the "
            "model's directory"
        )
    return _check_on_hub(given)


def _check_on_hub(given: str) -> dict[str, Any]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        info = HfApi().model_info(given)
    except GatedRepoError:
        raise BadFilter(
            f"--base {given}: a gated model: accept its terms on the Hub and log in "
            "(`hf auth login`), or give a local directory"
        ) from None
    except RepositoryNotFoundError:
        raise BadFilter(
            f"--base {given}: no such model on the Hugging Face Hub (check the id, or give a "
            "local directory)"
        ) from None
    except Exception as exc:  # network: huggingface_hub raises requests' and httpx's errors
        raise BackendError(
            f"--base {given}: cannot reach the Hugging Face Hub ({type(exc).__name__}): "
            "download the model where you can and give its directory"
        ) from None
    return {"given": given, "path": given, "revision": info.sha, "source": "hub"}


def _describe_model(path: Path) -> dict[str, Any]:
    config = state.read_json(path / "config.json")
    return {
        "source": "local",
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures"),
    }


def _sha256(path: Path) -> tuple[str, int, int]:
    """sha256, bytes and non-blank lines of a file."""
    digest = hashlib.sha256()
    size = lines = 0
    with path.open("rb") as file:
        for line in file:
            digest.update(line)
            size += len(line)
            lines += bool(line.strip())
    return digest.hexdigest(), size, lines


class LocalBackend:
    name = "local"

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        output_dir: Path | str | None = None,
        training: str | None = None,
        lora_r: int | None = None,
        lora_alpha: float | None = None,
        lora_dropout: float | None = None,
        lora_targets: str | None = None,
        learning_rate: float | None = None,
        dpo_beta: float | None = None,
        merge: bool | None = None,
        max_length: int | None = None,
        save_steps: int | None = None,
        device: str | None = None,
    ) -> None:
        del base_url, api_key, headers  # nothing is called over the network
        if training not in (None, "lora"):
            raise BadFilter(
                f"--training {training}: the local backend trains LoRA adapters (add --merge for "
                "a full model with the adapter merged in)"
            )
        for flag, value, low, high in (
            ("--lora-r", lora_r, 1, None),
            ("--max-length", max_length, 8, None),
            ("--save-steps", save_steps, 1, None),
        ):
            if value is not None and (value < low or (high is not None and value > high)):
                raise BadFilter(f"{flag} {value}: give at least {low}")
        if lora_dropout is not None and not 0.0 <= lora_dropout < 1.0:
            raise BadFilter(f"--lora-dropout {lora_dropout}: give 0 to <1")
        if learning_rate is not None and learning_rate <= 0:
            raise BadFilter(f"--learning-rate {learning_rate}: give a positive rate")
        self.runs_dir = Path(output_dir) if output_dir else state.DEFAULT_RUNS_DIR
        self.options: dict[str, Any] = {
            "lora_r": lora_r,
            "lora_alpha": lora_alpha,
            "lora_dropout": lora_dropout,
            "lora_targets": lora_targets,
            "learning_rate": learning_rate,
            "dpo_beta": dpo_beta,
            "merge": bool(merge),
            "max_length": max_length,
            "save_steps": save_steps,
            "device": device,
        }

    # -- files -----------------------------------------------------------------------------

    def _files(self) -> Path:
        files = self.runs_dir / "files"
        try:
            files.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot write to {files}: {exc.strerror or exc}") from None
        return files

    def upload(self, path: Path, purpose: str = "fine-tune") -> str:
        """Copy the file under the runs directory; its id (``file-`` and its sha256)."""
        try:
            digest, size, rows = _sha256(path)
        except OSError as exc:
            raise BackendError(f"cannot read {path}: {exc.strerror or exc}") from None
        file_id = f"file-{digest[:24]}"
        files = self._files()
        copy = files / f"{file_id}.jsonl"
        if not copy.is_file():
            temporary = files / f".{file_id}.{os.getpid()}.tmp"
            shutil.copyfile(path, temporary)
            os.replace(temporary, copy)
        export = path.resolve().parent
        report = state.read_json(export / "report.json")
        meta = {
            "id": file_id,
            "purpose": purpose,
            "filename": path.name,
            "source": str(path.resolve()),
            "copy": str(copy.resolve()),
            "sha256": digest,
            "bytes": size,
            "rows": rows,
            "export": {
                "dir": str(export),
                "manifest": state.read_json(export / "manifest.json") or None,
                "counts": {k: report[k] for k in ("selected", "kept", "splits") if k in report}
                or None,
            },
        }
        state.write_json(files / f"{file_id}.json", meta)
        return file_id

    def _file(self, file_id: str) -> dict[str, Any]:
        meta = state.read_json(self.runs_dir / "files" / f"{file_id}.json")
        if not meta or not Path(meta.get("copy", "")).is_file():
            raise BackendError(f"no uploaded file {file_id} under {self.runs_dir / 'files'}")
        return meta

    # -- jobs ------------------------------------------------------------------------------

    def _run(self, job_id: str) -> Path:
        run = self.runs_dir / job_id
        if not re.fullmatch(r"[\w.\-]+", job_id) or not (run / state.JOB).is_file():
            raise BackendError(
                f"no local job {job_id} under {self.runs_dir} (give the --output-dir it was "
                "started with)"
            )
        return run

    def create(self, spec: JobSpec) -> Job:
        if spec.method not in ("supervised", "dpo"):
            raise BadFilter(f"method {spec.method}: the local backend trains supervised or dpo")
        base = resolve_base(spec.base_model)
        parent = self._parent(spec.parent)
        training = self._file(spec.training_file)
        validation = self._file(spec.validation_file) if spec.validation_file else None
        if base["source"] == "local" or base.get("revision"):
            _check_rows(base["path"], Path(training["copy"]), spec.method)
        job_id = f"ftjob-{secrets.token_hex(8)}"
        label = re.sub(r"[^\w.\-]+", "-", spec.suffix).strip("-") if spec.suffix else ""
        name = f"student-{label}-{job_id[-8:]}" if label else f"student-{job_id[-8:]}"
        run = self.runs_dir / job_id
        try:
            run.mkdir(parents=True)
        except OSError as exc:
            raise BackendError(f"cannot write to {run}: {exc.strerror or exc}") from None
        hyperparameters = spec.hyperparameters.as_dict()
        config = {
            "id": job_id,
            "fine_tuned_model": name,
            "method": spec.method,
            "base": base,
            "parent": parent,
            "training_file": training,
            "validation_file": validation,
            "hyperparameters": hyperparameters,
            "options": self.options,
            "suffix": spec.suffix,
            "seed": spec.seed,
        }
        state.write_json(run / state.CONFIG, config)
        state.write_json(
            run / state.JOB,
            {
                "id": job_id,
                "object": "fine_tuning.job",
                "backend": self.name,
                "status": "queued",
                "model": spec.base_model,
                "fine_tuned_model": None,
                "adapter_name": name,
                "created_at": int(time.time()),
                "finished_at": None,
                "method": {"type": spec.method},
                "hyperparameters": hyperparameters,
                "training_file": spec.training_file,
                "validation_file": spec.validation_file,
                "parent": parent,
                "seed": spec.seed,
                "run_dir": str(run.resolve()),
                "error": None,
            },
        )
        state.add_event(run, f"created: {spec.method} on {spec.base_model}, as {name}")
        self._start(run)
        return self.get(job_id)

    def _parent(self, parent: str | None) -> str | None:
        if not parent:
            return None
        path = Path(parent).expanduser()
        if not (path / "adapter_config.json").is_file():
            raise BadFilter(
                f"--from {parent}: the local backend continues from a LoRA adapter directory "
                "(a local job's adapter/, with adapter_config.json)"
            )
        return str(path.resolve())

    def _start(self, run: Path) -> None:
        """The training process, in its own session (it outlives the CLI), its output in
        train.log."""
        root = str(Path(__file__).resolve().parents[3])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        with (run / state.LOG).open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", TRAIN_MODULE, str(run.resolve())],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        state.update_job(run, pid=process.pid)

    def get(self, job_id: str) -> Job:
        run = self._run(job_id)
        raw = state.read_json(run / state.JOB)
        if raw.get("status") in ("queued", "running") and not state.is_running(run, raw.get("pid")):
            raw = state.read_json(run / state.JOB)  # it may have just finished
            starting = raw.get("status") == "queued" and state.pid_alive(raw.get("pid"))
            if raw.get("status") in ("queued", "running") and not starting:
                step = raw.get("checkpoint_step")
                where = f"the last checkpoint is at step {step}" if step else "no checkpoint yet"
                raw = {
                    **raw,
                    "status": "failed",
                    "interrupted": True,
                    "error": {
                        "message": (
                            f"interrupted: the training process ended without finishing "
                            f"({where}); continue with `gateway finetune resume {job_id} "
                            f"--backend local --output-dir {self.runs_dir}`"
                        )
                    },
                }
        return _job_from(raw)

    def list_jobs(self, limit: int = 20) -> list[Job]:
        if not self.runs_dir.is_dir():
            return []
        found = []
        for record in self.runs_dir.glob(f"*/{state.JOB}"):
            raw = state.read_json(record)
            if raw.get("id"):
                found.append((raw.get("created_at") or 0, raw["id"]))
        found.sort(reverse=True)
        return [self.get(job_id) for _, job_id in found[:limit]]

    def events(self, job_id: str) -> list[JobEvent]:
        run = self._run(job_id)
        return [
            JobEvent(
                id=str(raw.get("id")),
                created_at=int(raw.get("created_at") or 0),
                level=str(raw.get("level") or "info"),
                message=str(raw.get("message") or ""),
                type=str(raw.get("type") or "message"),
                data=raw.get("data") if isinstance(raw.get("data"), dict) else None,
            )
            for raw in state.read_jsonl(run / state.EVENTS)
        ]

    def cancel(self, job_id: str) -> Job:
        run = self._run(job_id)
        job = self.get(job_id)
        if job.done:
            raise BackendError(f"{job_id} is already {job.status}: nothing to cancel")
        pid = job.raw.get("pid")
        if isinstance(pid, int) and state.pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGCONT)  # a stopped process handles SIGTERM once continued
            deadline = time.monotonic() + CANCEL_GRACE_S
            while state.pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if state.pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        raw = state.read_json(run / state.JOB)
        if raw.get("status") not in ("succeeded", "failed", "cancelled"):
            state.update_job(run, status="cancelled", finished_at=int(time.time()))
            state.add_event(run, "cancelled", level="warn")
        return self.get(job_id)

    def resume(self, job_id: str) -> Job:
        """Start the training process again on an interrupted, failed or cancelled job: it
        goes on from the last checkpoint (from the start when there is none)."""
        run = self._run(job_id)
        job = self.get(job_id)
        if job.status in ("queued", "running"):
            raise BackendError(f"{job_id} is still {job.status}")
        if job.status == "succeeded":
            raise BackendError(f"{job_id} already succeeded: nothing to resume")
        done = state.checkpoints(run)
        where = f"checkpoint-{done[-1][0]}" if done else "the start (no checkpoint was saved)"
        state.update_job(run, status="queued", error=None, finished_at=None, interrupted=None)
        state.add_event(run, f"resume requested: from {where}")
        self._start(run)
        return self.get(job_id)

    def metrics(self, job: Job) -> list[MetricPoint]:
        run = self._run(job.id)
        merged: dict[int, dict[str, Any]] = {}
        for row in state.read_jsonl(run / state.METRICS):
            step = row.get("step")
            if isinstance(step, int):
                merged.setdefault(step, {}).update(row)
        return [
            MetricPoint(
                step=step,
                train_loss=_float(row.get("train_loss")),
                train_accuracy=_float(row.get("train_accuracy")),
                valid_loss=_float(row.get("valid_loss")),
                valid_accuracy=_float(row.get("valid_accuracy")),
            )
            for step, row in sorted(merged.items())
        ]


def _job_from(raw: dict[str, Any]) -> Job:
    error = raw.get("error")
    return Job(
        id=str(raw["id"]),
        status=str(raw.get("status") or "unknown"),
        base_model=str(raw.get("model") or ""),
        fine_tuned_model=raw.get("fine_tuned_model") if raw.get("status") == "succeeded" else None,
        created_at=raw.get("created_at"),
        finished_at=raw.get("finished_at"),
        trained_tokens=raw.get("trained_tokens"),
        hyperparameters=raw.get("hyperparameters") or {},
        error=error.get("message") if isinstance(error, dict) else None,
        result_files=list(raw.get("result_files") or []),
        raw=raw,
    )


def _check_rows(base_path: str, path: Path, method: str) -> None:
    """The base model's tokenizer renders the first rows (a template that cannot is an
    error now, not minutes later in the training process)."""
    try:
        from transformers import AutoTokenizer

        from exporter.finetune.local import data
    except ImportError:
        raise BackendError(MISSING) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path)
    except (OSError, ValueError) as exc:
        raise BadFilter(f"--base {base_path}: cannot load its tokenizer: {exc}") from None
    template = data.training_template(tokenizer)
    for count, (number, row) in enumerate(data.read_rows(path)):
        if count == 3:
            break
        where = f"{path.name} line {number}"
        if data.is_preference(row) != (method == "dpo"):
            raise InvalidDataset(f"{where}: not a {method} row")
        if method == "dpo":
            data.preference(tokenizer, template, row, where)
        else:
            data.supervised(tokenizer, template, row, where)
