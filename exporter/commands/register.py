"""``gateway register JOB --route R [--weight N] [--shadow S] (--admin URL | --config FILE)``.

JOB is a fine-tuning job id (its ``fine_tuned_model`` is looked up: in ``DIR/jobs/JOB`` when
the job was followed from here, else on the service) or a model name (``ft:...``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from exporter.commands.common import OK, guarded, print_json
from exporter.commands.finetune import add_backend_arguments, backend_from
from exporter.errors import BadFilter, RegisterError
from exporter.finetune.loop import job_dir
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
    new = NewVariant(
        route=args.route,
        name=args.name or default_name(model),
        model=model,
        provider=args.provider,
        weight=args.weight,
        shadow=args.shadow,
        timeout=args.timeout,
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
    if args.json:
        print_json(done)
    return OK
