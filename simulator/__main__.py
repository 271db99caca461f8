"""``python -m simulator [--host H] [--port P] [--profile FILE]``."""

from __future__ import annotations

import argparse

from simulator.server import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description=(
            "A simulated upstream (OpenAI, Anthropic Messages, Azure OpenAI) for tests, demos"
            " and benchmarks."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--profile", default=None, help="latency and fault profile (YAML)")
    args = parser.parse_args(argv)
    run(args.host, args.port, args.profile)


if __name__ == "__main__":
    main()
