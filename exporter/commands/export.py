"""``gateway export`` (captured calls -> training files) and ``gateway validate FILE``."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from exporter import report
from exporter.check_file import validate_file
from exporter.commands.common import FAILED, OK, USAGE, fail, guarded, print_json, run_async
from exporter.database import (
    archive_errors,
    archive_source,
    database_url,
    describe_url,
    first_line,
    open_store,
)
from exporter.errors import BadFilter, DatabaseUnavailable
from exporter.filters import (
    DEFAULT_FINISH_REASONS,
    ENDPOINT_CHOICES,
    Filters,
    check,
    parse_tags,
    parse_time,
)
from exporter.neardup import DEFAULT_NGRAM, DEFAULT_NUM_PERM, DEFAULT_THRESHOLD, NearDupOptions
from exporter.pair_judge import JudgeSettings, PairJudge
from exporter.pipeline import ExportOptions, ExportResult, run_export
from exporter.preference import DEFAULT_MARGIN, run_preference_export
from exporter.selection import DEFAULT_PAGE_SIZE
from exporter.split import DEFAULT_GROUP_THRESHOLD, DEFAULT_SALT, DEFAULT_VALID_SHARE
from exporter.system_prompt import SystemPrompt


def add_database_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="the gateway's YAML config: its capture.database_url is read")
    p.add_argument(
        "--database-url",
        help="capture database (else $GATEWAY_DATABASE_URL, else sqlite+aiosqlite:///gateway.db)",
    )
    p.add_argument(
        "--archive",
        metavar="URL",
        help="also read the calls archived out of the database (file:///path or "
        "s3://bucket/prefix), with the same filters; else the config's capture.archive; "
        "'off': the database alone",
    )


def add_filter_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("selection")
    g.add_argument("--route", help="the route (model name the app sent)")
    g.add_argument("--variant", help="the variant that answered, e.g. teacher")
    g.add_argument("--model", dest="upstream_model", help="the upstream model that answered")
    g.add_argument("--since", help="start: a duration ago (7d, 12h) or an ISO date/time")
    g.add_argument("--until", help="end (exclusive): a duration ago or an ISO date/time")
    g.add_argument(
        "--tag", action="append", default=[], help="k=v; repeat for several (all must match)"
    )
    g.add_argument("--min-feedback", type=float, help="mean feedback score at least this (-1..1)")
    g.add_argument(
        "--finish-reason",
        default=",".join(DEFAULT_FINISH_REASONS),
        help="comma-separated; 'any' for all (default: stop,tool_calls)",
    )
    g.add_argument("--include-shadow", action="store_true", help="include shadow copies")
    g.add_argument(
        "--endpoint",
        choices=list(ENDPOINT_CHOICES),
        default="all",
        help="chat: calls captured from /v1/chat/completions and /v1/messages (Anthropic's "
        "Messages API, read from its normalised chat view); messages: /v1/messages only; "
        "responses: /v1/responses (converted to chat examples); all (the default): every one",
    )
    g.add_argument("--min-tokens", type=int, help="stored prompt+completion tokens at least")
    g.add_argument("--max-tokens", type=int, help="stored prompt+completion tokens at most")


def filters_from(args: argparse.Namespace) -> Filters:
    reasons = (
        ()
        if args.finish_reason == "any"
        else tuple(r.strip() for r in args.finish_reason.split(",") if r.strip())
    )
    return check(
        Filters(
            route=args.route,
            variant=args.variant,
            upstream_model=args.upstream_model,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
            tags=parse_tags(args.tag),
            min_feedback=args.min_feedback,
            finish_reasons=reasons,
            shadow="include" if args.include_shadow else "exclude",
            endpoints=ENDPOINT_CHOICES[args.endpoint],
            min_tokens=args.min_tokens,
            max_tokens=args.max_tokens,
        )
    )


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "export",
        help="turn captured calls into fine-tuning files (train.jsonl, valid.jsonl, report)",
        description="Select captured calls, curate them and write OpenAI fine-tuning JSONL.",
    )
    add_database_arguments(p)
    add_filter_arguments(p)
    g = p.add_argument_group("curation")
    g.add_argument("--system-prompt", choices=["keep", "drop"], default="keep")
    g.add_argument("--replace-system-prompt", metavar="TEXT", help="use this system prompt instead")
    g.add_argument("--no-dedup", action="store_true", help="keep exact duplicates")
    g.add_argument("--no-near-dup", action="store_true", help="keep near duplicates")
    g.add_argument(
        "--near-dup-threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"Jaccard similarity of word n-grams (default {DEFAULT_THRESHOLD})",
    )
    g.add_argument(
        "--ngram",
        type=int,
        default=DEFAULT_NGRAM,
        help=f"words per shingle (default {DEFAULT_NGRAM})",
    )
    g.add_argument(
        "--num-perm",
        type=int,
        default=DEFAULT_NUM_PERM,
        help=f"MinHash permutations (default {DEFAULT_NUM_PERM})",
    )
    g.add_argument(
        "--leak-check",
        choices=["drop", "fail", "off"],
        default="drop",
        help="rows with an e-mail/phone/card/secret pattern (default: drop them)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, help="output directory (required unless --dry-run)")
    g.add_argument("--dry-run", action="store_true", help="count only, write nothing")
    g.add_argument("--format", choices=["chat", "dpo"], default="chat")
    g.add_argument(
        "--pairs",
        choices=["feedback", "shadow"],
        default="feedback",
        help="where DPO pairs come from (with --format dpo)",
    )
    g.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        help=f"least score difference of a DPO pair (default {DEFAULT_MARGIN})",
    )
    g.add_argument(
        "--judge-model",
        metavar="ROUTE",
        help="judge shadow pairs with this route through --gateway (instead of feedback)",
    )
    g.add_argument("--gateway", default="http://127.0.0.1:8080", help="for --judge-model")
    g.add_argument("--key", help="gateway key for --judge-model (else $GATEWAY_API_KEY)")
    g.add_argument(
        "--weight",
        choices=["none", "last"],
        default="none",
        help="last: train on the captured answer only (earlier turns weight 0)",
    )
    g.add_argument("--valid-share", type=float, default=DEFAULT_VALID_SHARE)
    g.add_argument("--split-salt", default=DEFAULT_SALT)
    g.add_argument(
        "--split-group-threshold",
        type=float,
        default=DEFAULT_GROUP_THRESHOLD,
        help="prompts at least this similar (word 3-gram Jaccard) share a side of the split "
        f"(default {DEFAULT_GROUP_THRESHOLD})",
    )
    g.add_argument(
        "--no-split-groups",
        action="store_true",
        help="split each row by its own prompt's hash only",
    )
    g.add_argument(
        "--base",
        default="gpt-4o-mini",
        help="base model: tokenizer, limit, price (an OpenAI model, a hosted open-weight one "
        "such as meta-llama/Meta-Llama-3.1-8B-Instruct, or a local model's directory)",
    )
    g.add_argument(
        "--tokenizer",
        type=Path,
        metavar="DIR",
        help="count with this tokenizer.json and chat template (the local base model's "
        "directory) instead of the base's encoding",
    )
    g.add_argument("--max-example-tokens", type=int, help="per-example token limit override")
    g.add_argument("--training-price", type=float, help="USD per 1M training tokens")
    g.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE)
    g.add_argument("--limit", type=int, help="read at most this many calls")
    g.add_argument(
        "--workers",
        type=int,
        help="worker processes that read and prepare pages (default: one per CPU; 0: none, "
        "all in this process; an export of a few pages starts none)",
    )
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=lambda args: guarded(lambda: export(args)))

    p = commands.add_parser("validate", help="check a fine-tuning JSONL file and print its report")
    p.add_argument("file", type=Path)
    p.add_argument(
        "--base",
        default="gpt-4o-mini",
        help="base model: an OpenAI model, a hosted open-weight one, or a local directory",
    )
    p.add_argument(
        "--tokenizer", type=Path, metavar="DIR", help="count with this tokenizer.json and template"
    )
    p.add_argument("--max-example-tokens", type=int)
    p.add_argument("--training-price", type=float)
    p.add_argument(
        "--validation", action="store_true", help="a validation file: no minimum row count"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda args: guarded(lambda: validate(args)))


def options_from(args: argparse.Namespace) -> ExportOptions:
    if args.out is None and not args.dry_run:
        raise BadFilter("give --out DIR, or --dry-run")
    if not 0.0 <= args.valid_share < 1.0:
        raise BadFilter("--valid-share must be in [0, 1)")
    if args.page_size < 1:
        raise BadFilter("--page-size must be at least 1")
    workers = getattr(args, "workers", None)
    if workers is not None and not 0 <= workers <= 64:
        raise BadFilter("--workers must be between 0 and 64")
    if args.replace_system_prompt is not None:
        system_prompt = SystemPrompt("replace", args.replace_system_prompt)
    else:
        system_prompt = SystemPrompt(args.system_prompt)
    try:
        near = (
            None
            if args.no_near_dup
            else NearDupOptions(args.near_dup_threshold, args.ngram, args.num_perm)
        )
    except ValueError as exc:
        raise BadFilter(str(exc)) from None
    if not args.no_split_groups and not 0.0 < args.split_group_threshold < 1.0:
        raise BadFilter("--split-group-threshold must be between 0 and 1")
    return ExportOptions(
        filters=filters_from(args),
        out_dir=None if args.dry_run else args.out,
        base_model=args.base,
        system_prompt=system_prompt,
        exact_dedup=not args.no_dedup,
        near_dup=near,
        leak_check=args.leak_check,
        valid_share=args.valid_share,
        split_salt=args.split_salt,
        split_groups=None if args.no_split_groups else args.split_group_threshold,
        weight=args.weight,
        token_limit=args.max_example_tokens,
        training_price=args.training_price,
        page_size=args.page_size,
        limit=args.limit,
        workers=workers,
        tokenizer=args.tokenizer,
    )


async def _export(args: argparse.Namespace, options: ExportOptions) -> ExportResult:
    url = database_url(args.database_url, args.config)
    options = dataclasses.replace(options, archive=archive_source(args.archive, args.config))
    async with open_store(url) as store:
        try:
            if args.format == "dpo":
                judge = _pair_judge(args)
                with archive_errors():
                    return await run_preference_export(
                        store.engine, options, args.pairs, args.margin, judge
                    )
            with archive_errors():
                return await run_export(store.engine, options)
        except (OSError, SQLAlchemyError) as exc:  # the connection died mid-way
            raise DatabaseUnavailable(
                f"reading {describe_url(url)} failed: {first_line(exc)}"
            ) from None


def _pair_judge(args: argparse.Namespace) -> PairJudge | None:
    if args.judge_model is None:
        return None
    if args.pairs != "shadow":
        raise BadFilter("--judge-model judges shadow pairs: give --pairs shadow")
    key = args.key or os.environ.get("GATEWAY_API_KEY")
    if not key:
        raise BadFilter("--judge-model needs a gateway key: --key or $GATEWAY_API_KEY")
    return PairJudge(JudgeSettings(args.gateway.rstrip("/"), key, args.judge_model))


def export(args: argparse.Namespace) -> int:
    options = options_from(args)

    async def go() -> int:
        result = await _export(args, options)
        built = result.report
        if args.json:
            print_json(
                {
                    "filters": options.filters.describe(),
                    **built,
                    "files": {k: str(v) for k, v in result.files.items()},
                }
            )
        else:
            print(
                f"filters: {options.filters.describe()}; system prompt "
                f"{options.system_prompt.describe()}"
            )
            print(report.render(built))
            if result.files:
                print("wrote " + ", ".join(str(path) for path in result.files.values()))
            elif options.out_dir is None:
                print("dry run: nothing written")
        return FAILED if built["errors"] else OK

    return run_async(go())


def validate(args: argparse.Namespace) -> int:
    if not args.file.exists():
        return fail(f"no such file: {args.file}", USAGE)
    side = "valid" if args.validation else "train"
    built = validate_file(
        args.file, args.base, args.max_example_tokens, args.training_price, side, args.tokenizer
    )
    if args.json:
        print_json(built)
    else:
        purpose = "validation" if args.validation else "training"
        print(f"{built['format']} rows, checked as {purpose} data")
        print(report.render(built))
    return FAILED if built["errors"] else OK
