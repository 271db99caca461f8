"""``gateway finetune``: start a job from an export and follow it; ``status``, ``list``, ``cancel``.

    gateway finetune DATA_DIR --base gpt-4o-mini [--epochs N ...] [--no-follow]
    gateway finetune status JOB [--dir DATA_DIR]
    gateway finetune list
    gateway finetune cancel JOB
    gateway finetune resume JOB         (backends that can: local)

The service: ``--api-base`` (else ``$OPENAI_BASE_URL``, else OpenAI) and ``--api-key`` (else
``$OPENAI_API_KEY``). ``--backend`` picks the implementation: ``openai`` (the files +
fine_tuning API) or ``package.module:Class`` for your own ``FineTuneBackend``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from pathlib import Path
from typing import Any

import orjson

from exporter.commands.common import FAILED, OK, fail, guarded, print_json
from exporter.errors import BadFilter
from exporter.finetune.backend import FineTuneBackend, Hyperparameters, Job
from exporter.finetune.loop import follow, job_dir, save, start
from exporter.finetune.openai_api import OpenAIBackend
from exporter.finetune.plot import READING_GUIDE

ACTIONS = ("status", "list", "cancel", "resume")
BUILTIN_BACKENDS = {
    "together": "exporter.finetune.together_api:TogetherBackend",
    "fireworks": "exporter.finetune.fireworks_api:FireworksBackend",
    "local": "exporter.finetune.local:LocalBackend",
}


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fine-tuning service")
    g.add_argument(
        "--backend",
        default="openai",
        help="openai, together, fireworks, local, or package.module:Class",
    )
    g.add_argument(
        "--api-base",
        help="e.g. http://127.0.0.1:9000/v1 (else the backend's own: $OPENAI_BASE_URL, "
        "$TOGETHER_BASE_URL, ...)",
    )
    g.add_argument(
        "--api-key",
        help="else the backend's own variable: $OPENAI_API_KEY, $TOGETHER_API_KEY, "
        "$FIREWORKS_API_KEY",
    )
    g.add_argument(
        "--account",
        help="the account on the service, for those that have one (fireworks: else "
        "$FIREWORKS_ACCOUNT_ID)",
    )
    g.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="extra header on every call to the service (repeat for several)",
    )


TRAINING_OPTIONS = {
    "training": "--training",
    "lora_r": "--lora-r",
    "lora_alpha": "--lora-alpha",
    "lora_dropout": "--lora-dropout",
    "learning_rate": "--learning-rate",
    "dpo_beta": "--dpo-beta",
    "account": "--account",
    "output_dir": "--output-dir",
    "merge": "--merge",
    "max_length": "--max-length",
    "save_steps": "--save-steps",
    "lora_targets": "--lora-targets",
    "device": "--device",
}
"""Options passed to a backend's factory as keywords, only when given and only to a factory
that takes them (a backend that does not is a one-line error naming the option)."""


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (for the backends that take them: together, local, ...)")
    g.add_argument(
        "--training", choices=("lora", "full"), help="LoRA adapters (the default) or full"
    )
    g.add_argument("--lora-r", type=int, help="LoRA rank (else the base model's default)")
    g.add_argument("--lora-alpha", type=float, help="LoRA alpha (else twice the rank)")
    g.add_argument("--lora-dropout", type=float, help="LoRA dropout, 0 to <1")
    g.add_argument(
        "--learning-rate",
        type=float,
        help="the absolute learning rate, for services that take one (OpenAI: --lr-multiplier)",
    )
    g.add_argument("--dpo-beta", type=float, help="DPO's beta, for a preference export")
    g = p.add_argument_group("local training (--backend local)")
    g.add_argument(
        "--output-dir", type=Path, help="where local jobs live (default ./finetune-runs)"
    )
    g.add_argument(
        "--merge",
        action="store_true",
        default=None,
        help="also write the base model with the adapter merged in",
    )
    g.add_argument("--max-length", type=int, help="tokens per example (longer: truncated)")
    g.add_argument("--save-steps", type=int, help="a checkpoint every N steps")
    g.add_argument("--lora-targets", help="modules to adapt, comma-separated (default all-linear)")
    g.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"), help="default auto")


def _training_options(args: argparse.Namespace, factory: Any) -> dict[str, Any]:
    given = {
        name: getattr(args, name)
        for name in TRAINING_OPTIONS
        if getattr(args, name, None) is not None
    }
    if not given:
        return {}
    try:
        accepted = dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        accepted = {}
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        for name in given:
            if name not in accepted:
                raise BadFilter(
                    f"{TRAINING_OPTIONS[name]}: the {args.backend} backend does not take it"
                )
    return given


def backend_from(args: argparse.Namespace) -> FineTuneBackend:
    headers: dict[str, str] = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise BadFilter(f"--header {item!r}: give NAME:VALUE")
        headers[name.strip()] = value.strip()
    if args.backend == "openai":
        _training_options(args, OpenAIBackend)
        return OpenAIBackend(args.api_base, args.api_key, headers=headers)
    # The other built-in backends, imported only when chosen (their SDKs, or torch, are heavy).
    name = BUILTIN_BACKENDS.get(args.backend, args.backend)
    module_name, _, class_name = name.partition(":")
    try:
        factory: Any = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise BadFilter(
            f"--backend {args.backend}: no such class (give package.module:Class)"
        ) from None
    backend: FineTuneBackend = factory(
        base_url=args.api_base,
        api_key=args.api_key,
        headers=headers,
        **_training_options(args, factory),
    )
    return backend


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "finetune",
        help="fine-tune on an export and follow the job; also: status JOB, list, cancel JOB",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="DATA_DIR|status|list|cancel|resume")
    p.add_argument(
        "job", nargs="?", metavar="JOB", help="the job id, for status, cancel and resume"
    )
    p.add_argument("--base", default="gpt-4o-mini", help="the base model to fine-tune")
    p.add_argument("--epochs", type=int, help="else the export's suggestion")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr-multiplier", type=float)
    p.add_argument(
        "--auto", action="store_true", help="let the service choose every hyperparameter"
    )
    p.add_argument("--suffix", help="up to 64 characters in the model's name")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--tokenizer",
        type=Path,
        help="the base model's tokenizer directory (tokenizer.json, chat template): exact token "
        "counts and limits for an open-weight base (a local --base directory is read itself)",
    )
    p.add_argument(
        "--from",
        dest="parent",
        metavar="JOB|MODEL",
        help="continue from the previous student: a job under --dir's jobs/ (its model), or a "
        "model name / checkpoint / adapter path; recorded in the new student's lineage",
    )
    p.add_argument("--no-follow", action="store_true", help="start the job and return")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between looks at the job")
    p.add_argument("--timeout", type=float, help="stop following after this many seconds")
    p.add_argument(
        "--dir", type=Path, default=Path("."), help="the export (status: where jobs/ is)"
    )
    p.add_argument("--json", action="store_true")
    add_backend_arguments(p)
    add_training_arguments(p)
    p.set_defaults(func=lambda args: guarded(lambda: finetune(args)))


def _hyperparameters(args: argparse.Namespace) -> Hyperparameters | None:
    if args.auto:
        return Hyperparameters()
    if args.epochs is None and args.batch_size is None and args.lr_multiplier is None:
        return None
    from exporter.finetune.loop import suggested

    base = suggested(Path(args.target))
    return Hyperparameters(
        args.epochs if args.epochs is not None else base.n_epochs,
        args.batch_size if args.batch_size is not None else base.batch_size,
        args.lr_multiplier if args.lr_multiplier is not None else base.learning_rate_multiplier,
    )


LOSS_LABELS = {
    "train_loss_final": "train loss final (mean of the last 10% of steps)",
    "valid_loss_final": "valid loss final (the last evaluation)",
    "valid_loss_min": "valid loss lowest",
    "train_accuracy_final": "train accuracy final (mean of the last 10% of steps)",
}
"""The summary's figures as printed: which are averages. The service's "Step N" event lines
show the loss of that one step (noisy); the plot draws a moving average of them."""


def _describe(job: Job) -> str:
    line = f"{job.id}  {job.status:<16} {job.base_model}"
    if job.fine_tuned_model:
        line += f" -> {job.fine_tuned_model}"
    if job.trained_tokens:
        line += (
            f"  ({job.trained_tokens:,} trained tokens: the service's count, training file x "
            "epochs)"
        )
    if job.error:
        line += f"  error: {job.error}"
    return line


def _report(job: Job, summary: dict[str, Any], target: Path, as_json: bool) -> int:
    if as_json:
        print_json({"job": job.raw, "summary": summary, "records": str(target)})
        return OK if job.status != "failed" else FAILED
    print(_describe(job))
    for key, what in LOSS_LABELS.items():
        if key in summary:
            step = f" at step {summary['valid_loss_min_step']}" if key == "valid_loss_min" else ""
            print(f"  {what}{step}: {summary[key]}")
    for sign in summary.get("signs", []):
        print(f"  reading: {sign}")
    if "plot" in summary:
        print(f"  loss curves: {summary['plot']} (how to read them: {target / 'READING.txt'})")
    if job.fine_tuned_model:
        print(f"next: gateway register {job.id} --route ROUTE --shadow 0.2 ...")
    return OK if job.status != "failed" else FAILED


def resolve_parent(given: str | None, data_dir: Path) -> str | None:
    """``--from``: a job id saved under ``data_dir/jobs/`` (or the export dirs beside it) is
    its model (a local backend's adapter directory); anything else is taken as it is."""
    if not given:
        return None
    for base in (data_dir, data_dir.parent):
        record = job_dir(base, given) / "job.json"
        if record.is_file():
            saved = orjson.loads(record.read_bytes()).get("job") or {}
            model = saved.get("adapter_path") or saved.get("fine_tuned_model")
            if not model:
                raise BadFilter(f"--from {given}: that job has no model (is it finished?)")
            return str(model)
    return given


def finetune(args: argparse.Namespace) -> int:
    if args.target in ("status", "cancel", "resume") and not args.job:
        raise BadFilter(f"give the job: gateway finetune {args.target} JOB")
    backend = backend_from(args)
    if args.target == "list":
        jobs = backend.list_jobs()
        if args.json:
            print_json([job.raw for job in jobs])
        for job in [] if args.json else jobs:
            print(_describe(job))
        return OK
    if args.target == "cancel":
        print(_describe(backend.cancel(args.job)))
        return OK
    if args.target == "resume":
        resume = getattr(backend, "resume", None)
        if resume is None:
            raise BadFilter(f"--backend {args.backend}: its jobs cannot be resumed")
        job = resume(args.job)
        if not args.json:
            print(f"resumed {job.id}: {job.status}")
        return _follow_and_save(backend, job, args.dir, args)
    if args.target == "status":
        job = backend.get(args.job)
        target = job_dir(args.dir, job.id)
        summary = save(backend, job, target)
        if not args.json and not job.done:
            print("(still running: the curves so far)")
        return _report(job, summary, target, args.json)
    data_dir = Path(args.target)
    if not data_dir.is_dir():
        return fail(f"no export directory {data_dir} (or give status|list|cancel)")
    say = (lambda _: None) if args.json else print
    parent = resolve_parent(args.parent, data_dir)
    job = start(
        backend,
        data_dir,
        args.base,
        _hyperparameters(args),
        args.suffix,
        args.seed,
        say,
        parent=parent,
        tokenizer=args.tokenizer,
    )
    return _follow_and_save(backend, job, data_dir, args)


def _follow_and_save(backend: FineTuneBackend, job: Job, data_dir: Path, args: Any) -> int:
    say = (lambda _: None) if args.json else print
    if args.no_follow:
        print(
            f"started {job.id}: follow it with `gateway finetune status {job.id} --dir {data_dir}`"
        )
        return OK
    target = job_dir(data_dir, job.id)
    job = follow(backend, job.id, poll_s=args.poll, timeout_s=args.timeout, say=say)
    if not job.done:
        return OK
    summary = save(backend, job, target)
    if not args.json:
        print(READING_GUIDE.splitlines()[0] + f": see {target / 'READING.txt'}")
    return _report(job, summary, target, args.json)
