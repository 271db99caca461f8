"""``gateway register JOB --route R [--weight N] [--shadow S] (--admin URL | --config FILE)``.

JOB is a fine-tuning job id (its ``fine_tuned_model`` is looked up: in ``DIR/jobs/JOB`` when
the job was followed from here, else on the service) or a model name (``ft:...``).

Open-weight students: ``--provider NAME --provider-url URL`` serves it from an OpenAI-compatible
endpoint (a host's, or vLLM/SGLang with the adapter's name as the model; ``--load-adapter URL``
asks a running vLLM to load the adapter the local backend wrote), and ``--price IN,OUT`` or
``--gpu-hour-usd X --tokens-per-s Y`` prices it (written to ``capture.prices``). The student's
lineage (backend, job, base model, parent, hyperparameters, the export it was trained on) is
stored in the capture database (``--database-url``, else ``$GATEWAY_DATABASE_URL``, else the
config's ``capture.database_url``), where the dashboard and ``gateway eval`` show it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import orjson

from capture.students import record_student
from exporter.commands.common import OK, guarded, print_json
from exporter.commands.finetune import add_backend_arguments, backend_from
from exporter.database import URL_ENV, database_url, describe_url, open_store
from exporter.errors import BadFilter, DatabaseUnavailable, RegisterError
from exporter.finetune.loop import job_dir
from exporter.lineage import job_record, lineage_of, student_price
from exporter.register import AdminClient, NewVariant, default_name, register_in_file, register_live


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "register",
        help="add a fine-tuned model to a route, at a weight or in shadow",
        description=__doc__,
    )
    p.add_argument("job", metavar="JOB|MODEL")
    p.add_argument("--route", required=True)
    p.add_argument("--name", help="the variant's name (default: student-<model id>)")
    p.add_argument("--provider", help="default: the provider of the route's first variant")
    p.add_argument("--weight", type=int, default=0, help="share of live traffic (default 0)")
    p.add_argument("--shadow", type=float, help="copy this share (0-1) of the route's calls to it")
    p.add_argument("--timeout", type=float, help="seconds; the provider's read_timeout if unset")
    p.add_argument("--admin", metavar="URL", help="a running gateway, e.g. http://127.0.0.1:8080")
    p.add_argument("--admin-key", help="else $GATEWAY_ADMIN_KEY")
    p.add_argument("--config", type=Path, help="edit this config file (then reload with --admin)")
    p.add_argument("--dir", type=Path, default=Path("."), help="where jobs/JOB was saved")
    p.add_argument(
        "--provider-url",
        help="with --config: add --provider with this base_url when the file lacks it "
        "(e.g. http://vllm:8000/v1, https://api.together.xyz/v1)",
    )
    p.add_argument("--provider-key-env", help="the new provider's key variable (api_key: ${VAR})")
    p.add_argument("--price", metavar="IN,OUT", help="USD per 1M input and output tokens")
    p.add_argument("--gpu-hour-usd", type=float, help="what an hour of the serving GPU costs")
    p.add_argument("--tokens-per-s", type=float, help="measured throughput of the served model")
    p.add_argument(
        "--load-adapter",
        metavar="URL",
        help="a running vLLM (e.g. http://vllm:8000/v1): load the local backend's adapter under "
        "the student's name (POST /load_lora_adapter; vLLM needs "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)",
    )
    p.add_argument("--database-url", help="where the lineage is stored (see above)")
    p.add_argument("--json", action="store_true")
    add_backend_arguments(p)
    p.set_defaults(func=lambda args: guarded(lambda: register(args)))


def resolve_model(args: argparse.Namespace) -> str:
    if args.job.startswith("ft:") or ":" in args.job:
        return str(args.job)
    record = job_dir(args.dir, args.job) / "job.json"
    if record.is_file():
        saved = orjson.loads(record.read_bytes()).get("job") or {}
        if saved.get("fine_tuned_model"):
            return str(saved["fine_tuned_model"])
    job = backend_from(args).get(args.job)
    if job.status != "succeeded" or not job.fine_tuned_model:
        raise RegisterError(f"job {job.id} is {job.status}: there is no model to register yet")
    return job.fine_tuned_model


def register(args: argparse.Namespace) -> int:
    if args.admin is None and args.config is None:
        raise BadFilter("give --admin URL (a running gateway), --config FILE, or both")
    if args.shadow is not None and not 0.0 < args.shadow <= 1.0:
        raise BadFilter("--shadow is a share of calls: more than 0, at most 1")
    if args.weight < 0:
        raise BadFilter("--weight must not be negative")
    model = resolve_model(args)
    price = student_price(args.price, args.gpu_hour_usd, args.tokens_per_s)
    if args.provider_url is not None and (args.provider is None or args.config is None):
        raise BadFilter(
            "--provider-url adds a provider to the config: give --provider and --config"
        )
    record = job_record(args.dir, args.job)
    lineage = lineage_of(record, model)
    if price is not None:
        lineage["price"] = price.as_dict()
    if args.load_adapter is not None:
        load_adapter(args.load_adapter, model, record)
    new = NewVariant(
        route=args.route,
        name=args.name or default_name(model),
        model=model,
        provider=args.provider,
        weight=args.weight,
        shadow=args.shadow,
        timeout=args.timeout,
        price=(price.input, price.output) if price is not None else None,
        provider_url=args.provider_url,
        provider_key_env=args.provider_key_env,
    )
    done: dict[str, object] = {"variant": new.name, "model": model, "route": new.route}
    how = f"weight {new.weight}" + (f", shadow {new.shadow:g}" if new.shadow is not None else "")
    if args.config is not None:
        replaced = register_in_file(args.config, new)
        done["config"] = str(args.config)
        if not args.json:
            print(f"added {new.name} ({model}, {how}) to route {new.route} in {args.config}")
            if replaced:
                print(f"  the shadow was {replaced}; it is {new.name} now")
    if args.admin is not None:
        admin = AdminClient(args.admin, args.admin_key)
        try:
            if args.config is not None:
                done["reloaded"] = admin.call("POST", "/admin/reload")
                message = f"reloaded {args.admin}: it serves {new.name} now"
            else:
                done["route_now"] = register_live(admin, new)
                message = (
                    f"added {new.name} ({model}, {how}) to route {new.route} on {args.admin} "
                    "(until its next reload: add --config FILE to keep it)"
                )
        finally:
            admin.close()
        if not args.json:
            print(message)
    stored = store_lineage(args, new, lineage)
    done["lineage"] = lineage if stored else None
    if price is not None and args.config is None and not args.json:
        print("  the price is in the lineage only: add --config FILE to count it in costs")
    if args.json:
        print_json(done)
    return OK


def store_lineage(args: argparse.Namespace, new: NewVariant, lineage: dict[str, Any]) -> bool:
    """Store the student's lineage in the capture database; whether it was."""
    explicit = args.database_url or os.environ.get(URL_ENV)
    url = database_url(args.database_url, str(args.config) if args.config else None)

    async def write() -> None:
        async with open_store(url) as store:
            await record_student(
                store.engine,
                route=new.route,
                variant=new.name,
                model=new.model,
                provider=new.provider,
                backend=lineage.get("backend"),
                base_model=lineage.get("base_model"),
                parent_model=lineage.get("parent"),
                job_id=lineage.get("job"),
                lineage=lineage,
            )

    try:
        asyncio.run(write())
    except DatabaseUnavailable as exc:
        if explicit:
            raise
        if not args.json:
            print(f"  lineage not stored ({exc}): give --database-url")
        return False
    if not args.json:
        print(f"  lineage stored in {describe_url(url)}")
    return True


def load_adapter(url: str, model: str, record: dict[str, Any] | None) -> None:
    """Ask a running vLLM to serve the local backend's adapter as ``model``."""
    job = (record or {}).get("job") or {}
    path = job.get("adapter_path") if isinstance(job, dict) else None
    if not path:
        raise BadFilter("--load-adapter: the job's record has no adapter_path (a local job?)")
    try:
        response = httpx.post(
            url.rstrip("/") + "/load_lora_adapter",
            json={"lora_name": model, "lora_path": str(path)},
            timeout=120.0,
        )
    except httpx.HTTPError as exc:
        raise RegisterError(f"cannot reach vLLM at {url}: {exc}") from None
    if response.status_code >= 400:
        raise RegisterError(
            f"vLLM did not load the adapter: {response.status_code} {response.text[:300]}"
        )
