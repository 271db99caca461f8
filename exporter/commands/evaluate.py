"""``gateway eval --route R --candidate V [--baseline teacher] [--sample 200]``.

Replays held-out captured prompts (the validation side of the export's split: pass the export
with ``--data DIR`` to use its split settings) to the candidate variant through a running
gateway, checks formats, has a judge compare each answer with the baseline's recorded one, and
reports win/tie/loss with 95% intervals, latency and cost side by side.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import orjson

from exporter.commands.common import OK, guarded, print_json, run_async
from exporter.commands.export import add_database_arguments
from exporter.database import database_url, open_store
from exporter.errors import BadFilter
from exporter.evaluate import report
from exporter.evaluate.held_out import trained_keys
from exporter.evaluate.run import EvalOptions, run_eval
from exporter.filters import Filters, parse_tags, parse_time
from exporter.output import write_json
from exporter.split import DEFAULT_SALT, DEFAULT_VALID_SHARE

KEY_ENV = "GATEWAY_API_KEY"


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "eval",
        help="compare a candidate variant with the recorded baseline on held-out prompts",
        description=__doc__,
    )
    add_database_arguments(p)
    p.add_argument("--route", required=True)
    p.add_argument("--candidate", required=True, help="the variant to evaluate, e.g. student")
    p.add_argument("--baseline", default="teacher", help="the recorded variant (default teacher)")
    p.add_argument("--sample", type=int, default=200, help="held-out prompts to replay")
    p.add_argument("--gateway", default="http://127.0.0.1:8080", help="the gateway's base URL")
    p.add_argument("--key", help=f"a gateway key with allow_variant_override (else ${KEY_ENV})")
    p.add_argument("--judge-model", help="the route that judges (default: this route's baseline)")
    p.add_argument("--data", type=Path, help="the export: its manifest's split settings are used")
    p.add_argument("--valid-share", type=float)
    p.add_argument("--split-salt")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--tag", action="append", default=[])
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="for the judge's answer order")
    p.add_argument("--out", type=Path, help="also write the report (JSON) here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda args: guarded(lambda: evaluate(args)))


def _split(args: argparse.Namespace) -> tuple[float, str]:
    share, salt = DEFAULT_VALID_SHARE, DEFAULT_SALT
    if args.data is not None:
        try:
            split = orjson.loads((args.data / "manifest.json").read_bytes())["split"]
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
            raise BadFilter(
                f"{args.data} has no export manifest.json with split settings"
            ) from None
        share, salt = float(split["valid_share"]), str(split["salt"])
    if args.valid_share is not None:
        share = args.valid_share
    if args.split_salt is not None:
        salt = args.split_salt
    return share, salt


def _trained(args: argparse.Namespace, share: float, salt: str) -> frozenset[bytes]:
    """The export's training prompts that hash to the validation side (see ``held_out``)."""
    if args.data is None or not (args.data / "train.jsonl").is_file():
        return frozenset()
    try:
        return trained_keys(args.data / "train.jsonl", share, salt)
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise BadFilter(
            f"{args.data / 'train.jsonl'} is no export's training file: {exc}"
        ) from None


def evaluate(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get(KEY_ENV)
    if not key:
        raise BadFilter(f"give a gateway key: --key or ${KEY_ENV}")
    if args.sample < 1 or args.concurrency < 1:
        raise BadFilter("--sample and --concurrency must be at least 1")
    share, salt = _split(args)
    options = EvalOptions(
        route=args.route,
        candidate=args.candidate,
        gateway_url=args.gateway.rstrip("/"),
        gateway_key=key,
        baseline=args.baseline,
        judge_model=args.judge_model,
        sample=args.sample,
        valid_share=share,
        split_salt=salt,
        trained=_trained(args, share, salt),
        filters=Filters(
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
            tags=parse_tags(args.tag),
        ),
        concurrency=args.concurrency,
        seed=args.seed,
    )

    async def go() -> int:
        async with open_store(database_url(args.database_url, args.config)) as store:
            built = await run_eval(store.engine, options)
        if args.out is not None:
            write_json(args.out, built)
        if args.json:
            print_json(built)
        else:
            print(report.render(built))
        return OK

    return run_async(go())
