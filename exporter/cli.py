"""The exporter's commands on the ``gateway`` command line.

    gateway export ...          captured calls -> train.jsonl, valid.jsonl, report.json
    gateway validate FILE       check a fine-tuning file, print its report
    gateway finetune DIR ...    upload, start a job, follow it; also status JOB, list, cancel JOB
    gateway register JOB ...    add the fine-tuned model to a route (admin API or config file)
    gateway eval ...            replay held-out prompts to a candidate variant, judge, compare

``gateway/cli.py`` calls ``add_commands(subparsers)``; each command sets ``func`` to a
function of the parsed arguments that returns the exit code.
"""

from __future__ import annotations

import argparse

from exporter.commands import evaluate, export, finetune, register


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export.add(subparsers)
    finetune.add(subparsers)
    register.add(subparsers)
    evaluate.add(subparsers)


def main(argv: list[str] | None = None) -> int:
    """The exporter's commands alone: ``python -m exporter ...`` (same as ``gateway ...``)."""
    parser = argparse.ArgumentParser(prog="python -m exporter")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
