"""``gateway eval --route R --candidate V [--baseline teacher] [--sample 200]``, and before
any training ``gateway eval --route R --bases MODEL[,MODEL...] --host-url URL [--shots K]``.

Replays held-out captured prompts (the validation side of the export's split: pass the export
with ``--data DIR`` to use its split settings) to the candidate variant through a running
gateway, checks formats, has a judge compare each answer with the baseline's recorded one, and
reports win/tie/loss with 95% intervals, latency and cost side by side.

With ``--bases``, the candidates are base models as a host serves them (``--host-url``: the
host's OpenAI-compatible base URL, Together, Fireworks, vLLM; its key from the environment
variable ``--host-key-env`` names), each tried zero-shot and, with ``--shots K``, with K
captured training-side examples as prior turns; one table ranks them under the teacher's row.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import orjson
import pydantic
import yaml

from capture.config import ModelPrice
from capture.pricing import Price, PriceLike
from capture.students import current_student
from exporter.commands.common import OK, guarded, print_json, run_async
from exporter.commands.export import add_database_arguments
from exporter.database import archive_errors, archive_source, database_url, open_store
from exporter.errors import BadFilter
from exporter.evaluate import bases_report, report
from exporter.evaluate.bases import BasesOptions, run_bases
from exporter.evaluate.held_out import trained_keys
from exporter.evaluate.run import EvalOptions, run_eval
from exporter.filters import Filters, parse_tags, parse_time
from exporter.lineage import describe
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
    p.add_argument("--candidate", help="the variant to evaluate, e.g. student")
    g = p.add_argument_group("candidate base models, before any training")
    g.add_argument(
        "--bases",
        metavar="MODEL[,MODEL...]",
        help="base models to compare with the teacher, as --host-url serves them",
    )
    g.add_argument(
        "--host-url",
        help="the host's OpenAI-compatible base URL, e.g. https://api.together.xyz/v1, "
        "https://api.fireworks.ai/inference/v1, http://vllm:8000/v1",
    )
    g.add_argument(
        "--host-key-env",
        metavar="VAR",
        help="the environment variable holding the host's key (e.g. TOGETHER_API_KEY); "
        "none: no key is sent",
    )
    g.add_argument(
        "--shots",
        type=int,
        default=0,
        metavar="K",
        help="also try each base with K captured training-side examples as prior turns",
    )
    g.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="MODEL=IN,OUT",
        help="USD per 1M input and output tokens of a model (repeat for several); over "
        "capture's price table and the --config's capture.prices",
    )
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


def parse_price(text: str) -> tuple[str, Price]:
    """``MODEL=IN,OUT`` (USD per 1M tokens) as the model and its price."""
    model, sep, numbers = text.rpartition("=")
    parts = numbers.split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if not sep or not model.strip() or len(values) != 2 or any(not v >= 0 for v in values):
        raise BadFilter(
            f"--price {text!r}: give MODEL=IN,OUT in USD per 1M tokens, e.g. "
            "--price meta-llama/Llama-3.1-8B-Instruct=0.18,0.18"
        )
    return model.strip(), Price(values[0], None, values[1])


def config_prices(path: str) -> dict[str, PriceLike]:
    """The ``capture.prices`` of the gateway's config file (empty when it has none)."""
    try:
        data: Any = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise BadFilter(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise BadFilter(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    capture = data.get("capture") if isinstance(data, dict) else None
    prices = capture.get("prices") if isinstance(capture, dict) else None
    if not isinstance(prices, dict):
        return {}
    try:
        return {str(name): ModelPrice.model_validate(value) for name, value in prices.items()}
    except pydantic.ValidationError as exc:
        raise BadFilter(f"{path}: capture.prices: {exc.errors()[0]['msg']}") from None


def _host_key(args: argparse.Namespace) -> str | None:
    if args.host_key_env is None:
        return None
    key = os.environ.get(args.host_key_env)
    if not key:
        raise BadFilter(
            f"the host's key: environment variable {args.host_key_env} is not set "
            "(set it, or leave --host-key-env out for a host without keys)"
        )
    return key


def _bases_options(args: argparse.Namespace, key: str) -> BasesOptions:
    bases = tuple(dict.fromkeys(b.strip() for b in args.bases.split(",") if b.strip()))
    if not bases:
        raise BadFilter("--bases: give one model or more, comma-separated")
    if not args.host_url:
        raise BadFilter(
            "--bases needs --host-url: the host's OpenAI-compatible base URL, e.g. "
            "https://api.together.xyz/v1"
        )
    if not args.host_url.startswith(("http://", "https://")):
        raise BadFilter(f"--host-url {args.host_url!r}: give an http:// or https:// URL")
    if args.shots < 0:
        raise BadFilter("--shots must be 0 or more")
    prices: dict[str, PriceLike] = dict(config_prices(args.config)) if args.config else {}
    prices.update(parse_price(item) for item in args.price)
    share, salt = _split(args)
    return BasesOptions(
        route=args.route,
        bases=bases,
        host_url=args.host_url.rstrip("/"),
        host_key=_host_key(args),
        gateway_url=args.gateway.rstrip("/"),
        gateway_key=key,
        shots=args.shots,
        prices=prices,
        baseline=args.baseline,
        judge_model=args.judge_model,
        sample=args.sample,
        valid_share=share,
        split_salt=salt,
        trained=_trained(args, share, salt),
        filters=_filters(args),
        concurrency=args.concurrency,
        seed=args.seed,
        archive=archive_source(args.archive, args.config),
    )


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        tags=parse_tags(args.tag),
    )


def evaluate(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get(KEY_ENV)
    if not key:
        raise BadFilter(f"give a gateway key: --key or ${KEY_ENV}")
    if args.sample < 1 or args.concurrency < 1:
        raise BadFilter("--sample and --concurrency must be at least 1")
    if (args.candidate is None) == (args.bases is None):
        raise BadFilter(
            "give --candidate VARIANT (a registered student) or --bases MODEL[,MODEL...] "
            "(base models at --host-url, before training)"
        )
    if args.bases is not None:
        return _evaluate_bases(args, _bases_options(args, key))
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
        filters=_filters(args),
        concurrency=args.concurrency,
        seed=args.seed,
        prices=config_prices(args.config) if args.config else {},
        archive=archive_source(args.archive, args.config),
    )

    async def go() -> int:
        async with open_store(database_url(args.database_url, args.config)) as store:
            with archive_errors():
                built = await run_eval(store.engine, options)
            student = await current_student(store.engine, args.route, args.candidate)
        # Which data made the candidate (its lineage, as `gateway register` stored it).
        built["lineage"] = student["lineage"] if student is not None else None
        if args.out is not None:
            write_json(args.out, built)
        if args.json:
            print_json(built)
        else:
            print(report.render(built))
            if student is not None:
                print("\n".join(["", "the candidate:", *describe(student)]))
            else:
                print(f"\nthe candidate {args.candidate}: no lineage stored (register it)")
        return OK

    return run_async(go())


def _evaluate_bases(args: argparse.Namespace, options: BasesOptions) -> int:
    async def go() -> int:
        async with open_store(database_url(args.database_url, args.config)) as store:
            with archive_errors():
                built = await run_bases(store.engine, options)
        if args.out is not None:
            write_json(args.out, built)
        if args.json:
            print_json(built)
        else:
            print(bases_report.render(built))
        return OK

    return run_async(go())
