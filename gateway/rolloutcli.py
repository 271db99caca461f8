"""``gateway rollout start|status|abort``: a running gateway's rollouts, over its admin API.

    gateway rollout start ROUTE --candidate V [--incumbent V] [--stages 0,0.05,0.25,0.5]
        [--target 0.9] [--holdout 0.1] [--slice-keys task,tenant] [--max-slices N] [--delta D] ...
    gateway rollout status [ROUTE] [--json]
    gateway rollout abort ROUTE [--reason TEXT]

Every command takes ``--admin URL`` (else ``$GATEWAY_ADMIN_URL``, else http://127.0.0.1:8080)
and ``--admin-key`` (else ``$GATEWAY_ADMIN_KEY``). Settings not given are the gateway's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any
from urllib.parse import quote

ADMIN_URL_ENV = "GATEWAY_ADMIN_URL"
ADMIN_KEY_ENV = "GATEWAY_ADMIN_KEY"
DEFAULT_URL = "http://127.0.0.1:8080"

# option -> (field of the rollout's gates, its type)
_GATE_OPTIONS: dict[str, tuple[str, type]] = {
    "delta": ("quality_margin", float),
    "error_margin": ("error_margin", float),
    "feedback_margin": ("feedback_margin", float),
    "latency_p95_ms": ("latency_p95_ms", float),
    "ttft_p95_ms": ("ttft_p95_ms", float),
    "max_cost_ratio": ("max_cost_ratio", float),
    "min_samples": ("min_samples", int),
    "min_dwell_s": ("min_dwell_s", float),
    "max_duration_s": ("max_duration_s", float),
    "alpha": ("alpha", float),
    "alpha_rollback": ("alpha_rollback", float),
}


class CliError(Exception):
    pass


def _fail(message: str) -> int:
    print(f"gateway rollout: {message}", file=sys.stderr)
    return 2


def _numbers(text: str, what: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(f"{what} must be numbers separated by commas, got {text!r}") from None


def plan_from(args: argparse.Namespace) -> dict[str, Any]:
    """The POST body: only what was given."""
    plan: dict[str, Any] = {"candidate": args.candidate}
    if args.incumbent:
        plan["incumbent"] = args.incumbent
    if args.stages is not None:
        plan["stages"] = _numbers(args.stages, "--stages")
    for name in ("target", "holdout", "shadow_sample", "max_slices", "retries"):
        value = getattr(args, name)
        if value is not None:
            plan[name] = value
    if args.slice_keys is not None:
        plan["slice_keys"] = [k.strip() for k in args.slice_keys.split(",") if k.strip()]
    gates = {
        field: getattr(args, option)
        for option, (field, _) in _GATE_OPTIONS.items()
        if getattr(args, option) is not None
    }
    if gates:
        plan["gates"] = gates
    return plan


def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    url = (args.admin or os.environ.get(ADMIN_URL_ENV) or DEFAULT_URL).rstrip("/")
    key = args.admin_key or os.environ.get(ADMIN_KEY_ENV)
    if not key:
        raise CliError(f"the admin API needs a key: --admin-key or ${ADMIN_KEY_ENV}")
    # Here, not at the top: ``gateway serve`` imports this module for its parser, and httpx
    # (with click, rich and pygments) is ~50 ms of every start that only these commands use.
    import httpx

    try:
        response = httpx.request(
            method,
            f"{url}{path}",
            headers={"authorization": f"Bearer {key}"},
            timeout=args.timeout,
            **kwargs,
        )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the gateway at {url}: {type(exc).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else response.text[:300]
        raise CliError(f"{response.status_code}: {message}")
    return body


def _print_rollout(r: dict[str, Any]) -> None:
    print(f"{r['route']}: {r['status']}  {r['incumbent']} -> {r['candidate']}", end="")
    print(f"  since {r['started']}")
    if r.get("reason"):
        print(f"  reason: {r['reason']}")
    if r.get("abort_requested"):
        print(f"  abort requested: {r['abort_requested']}")
    for s in r.get("slices", []):
        line = f"  slice {s['name']}: stage {s['stage']}, share {s['share']:.3g}, {s['status']}"
        gates = s.get("gates")
        if isinstance(gates, dict):
            verdicts = ", ".join(
                f"{g.get('name')} {g.get('verdict')}"
                for g in gates.get("gates", [])
                if isinstance(g, dict)
            )
            line += f"; {gates.get('action')}: {gates.get('reason')}"
            if verdicts:
                line += f" [{verdicts}]"
        print(line)
    for d in r.get("decisions", [])[-10:]:
        print(f"  {d['at']}  {d['slice']}  {d['action']}  share {d['share']:.3g}: {d['reason']}")
    _print_money(r)


def _usd(value: Any) -> str:
    if value is None:
        return "unknown"
    return f"-${-value:,.4f}" if value < 0 else f"${value:,.4f}"


def _print_money(r: dict[str, Any]) -> None:
    saved = r.get("savings")
    if isinstance(saved, dict):
        print(
            f"  saved since the start: {_usd(saved.get('net_savings_usd'))} net"
            f" over {saved.get('student_calls', 0)} calls the candidate answered"
        )
        training = saved.get("training_cost_usd")
        if training is None:
            print("  training cost: unknown (its backend reported no trained tokens, or no price)")
        else:
            print(
                f"  training cost: {_usd(training)}; net of it so far:"
                f" {_usd(saved.get('net_after_training_usd'))}"
            )
    p = r.get("projection")
    if isinstance(p, dict):
        print(
            f"  projected at {p['share']:.0%} of {p['calls_per_day']:,.0f} calls/day:"
            f" {_usd(p.get('savings_per_day_usd'))}/day saved"
            f" (per call {_usd(p.get('incumbent_cost_per_call_usd'))} on the incumbent,"
            f" {_usd(p.get('candidate_cost_per_call_usd'))} on the candidate,"
            f" from {p.get('sample_calls', 0)} priced shadow copies)"
        )
    elif "projection" in r:
        print("  projected savings: unknown (no price for the incumbent)")


def rollout_command(args: argparse.Namespace) -> int:
    path = f"/admin/routes/{quote(args.route, safe='')}/rollout" if args.route else ""
    try:
        if args.rollout_command == "start":
            result = _request(args, "POST", path, json=plan_from(args))
        elif args.rollout_command == "abort":
            result = _request(args, "DELETE", path, params={"reason": args.reason})
        elif args.route:
            result = _request(args, "GET", path)
        else:
            result = _request(args, "GET", "/admin/rollouts")
    except CliError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(result, indent=2))
    elif isinstance(result, dict) and "rollouts" in result:
        if not result["rollouts"]:
            print("no rollouts")
        for r in result["rollouts"]:
            _print_rollout(r)
    else:
        _print_rollout(result)
    return 0


def add_commands(commands: Any) -> None:
    p = commands.add_parser("rollout", help="a running gateway's rollouts: start, status, abort")
    rollout = p.add_subparsers(dest="rollout_command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--admin", metavar="URL", help=f"the gateway (else ${ADMIN_URL_ENV})")
        q.add_argument("--admin-key", help=f"else ${ADMIN_KEY_ENV}")
        q.add_argument("--timeout", type=float, default=30.0, help="seconds")
        q.add_argument("--json", action="store_true", help="print the API's JSON")
        q.set_defaults(func=rollout_command)

    q = rollout.add_parser("start", help="start a rollout of a candidate variant")
    q.add_argument("route")
    q.add_argument("--candidate", required=True)
    q.add_argument("--incumbent", help="default: the variant with the largest weight")
    q.add_argument("--stages", help="the candidate's share per stage, e.g. 0,0.05,0.25,0.5")
    q.add_argument("--target", type=float)
    q.add_argument("--holdout", type=float)
    q.add_argument("--shadow-sample", type=float)
    q.add_argument("--slice-keys", help="tag keys that define slices, e.g. task,tenant")
    q.add_argument("--max-slices", type=int)
    q.add_argument("--retries", type=int)
    for option, (field, kind) in _GATE_OPTIONS.items():
        flag = "--" + option.replace("_", "-")
        what = "win-rate margin (quality_margin)" if option == "delta" else field
        q.add_argument(flag, type=kind, help=f"gate: {what}")
    common(q)

    q = rollout.add_parser("status", help="one route's rollout, or every rollout")
    q.add_argument("route", nargs="?")
    common(q)

    q = rollout.add_parser("abort", help="return the route's traffic to the incumbent")
    q.add_argument("route")
    q.add_argument("--reason", default="aborted with gateway rollout abort")
    common(q)
