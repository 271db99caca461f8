"""Micro-benchmark of the routing decision (``Route.plan``), no I/O.

    python -m bench.routing [--calls N]

Prints microseconds per decision for the route shapes the gateway sees; the target is under
20 microseconds per call.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from router.config import RouteConfig
from router.table import Route

TWO = {
    "teacher": {"provider": "p", "model": "gpt-4", "weight": 90},
    "student": {"provider": "p", "model": "ft:gpt-4o-mini:acme::s1", "weight": 10},
}
CASES: dict[str, dict[str, Any]] = {
    "one variant": {"variants": {"teacher": TWO["teacher"]}},
    "two variants, random": {"variants": TWO},
    "two variants, sticky user": {"variants": TWO, "sticky": "user"},
    "two variants + shadow 20% + fallback": {
        "variants": {**TWO, "shadow": {"provider": "p", "model": "ft:new", "weight": 0}},
        "shadow": {"variant": "shadow", "sample": 0.2},
        "fallbacks": ["teacher"],
    },
    "four variants, sticky user": {
        "variants": {
            f"v{i}": {"provider": "p", "model": f"m{i}", "weight": i + 1} for i in range(4)
        },
        "sticky": "user",
    },
}


def measure(route: Route, calls: int) -> float:
    users = [f"user-{i}" for i in range(1000)]
    started = time.perf_counter()
    for i in range(calls):
        route.plan(users[i % 1000])
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    print(f"| routing decision ({args.calls:,} calls each) | µs per call | target < 20 µs |")
    print("| --- | ---: | --- |")
    for name, config in CASES.items():
        route = Route("bench", RouteConfig.model_validate(config))
        measure(route, 2_000)  # warm up
        micros = min(measure(route, args.calls) for _ in range(3))
        print(f"| {name} | {micros:.2f} | {'met' if micros < 20 else 'missed'} |")


if __name__ == "__main__":
    main()
