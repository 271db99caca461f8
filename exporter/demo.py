"""``make demo``: the whole distillation loop against the simulator, in one command.

    python -m exporter.demo [--dir demo-output] [--calls 240] [--backend openai|local]

1. starts the simulated upstream and a gateway (route ``support``: the teacher, gpt-4o),
2. sends support questions through the gateway, the way an app would, and posts feedback on
   some answers,
3. exports them (``gateway export``) and prints the report,
4. fine-tunes gpt-4o-mini on the simulator (``gateway finetune``), with the loss curves; with
   ``--backend local`` (``make demo BACKEND=local``) it trains a LoRA adapter here instead,
   with TRL and PEFT, on a tiny model built from the export (``exporter.finetune.local.tiny``),
5. registers the student in shadow (``gateway register``, config file + reload; the local
   adapter on a "vllm" provider that the simulator plays, loaded by name and priced from a
   GPU-hour),
6. sends more traffic (the student answers shadow copies), then
7. evaluates the student against the teacher (``gateway eval``),
8. starts a rollout of the student on route ``support`` (``gateway rollout start``: judged
   shadow pairs, then live stages gated on the evidence) and prints its state with the savings
   projected at the target share (``gateway rollout status``).

Processes are started with ``python -m gateway`` (the exporter does not import the gateway)
and stopped at the end. Every command is printed as it is run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from exporter.cli import main as exporter_main

GATEWAY_KEY = "sk-demo-gateway"
ADMIN_KEY = "sk-demo-admin"
SYSTEM_PROMPT = (
    "You are Acme's support assistant. Answer in two or three short sentences, name the "
    "settings page the customer needs, never promise refunds, and hand over to a human when "
    "the customer is angry. Our products: Acme Cloud, Acme Sync and the Acme mobile app."
)
PROFILE = {
    "default": {"ttft_ms": 5, "token_ms": 0},
    "models": {
        "ft:*": {"ttft_ms": 40, "token_ms": 2, "jitter": 0.1},
        "*mini*": {"ttft_ms": 40, "token_ms": 2, "jitter": 0.1},
        "gpt-4*": {"ttft_ms": 150, "token_ms": 7, "jitter": 0.1},
    },
}
TOPICS = ["invoice", "password", "two-factor login", "storage quota", "sync conflict", "refund"]
ASKS = ["How do I change my", "Why can't I find my", "Where do I reset the", "Can you explain the"]
PLACES = ["on the mobile app", "in Acme Cloud", "for my whole team", "after the last update"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {seconds:.0f} s")


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def gateway_config(simulator_url: str, database: Path) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"name": "demo", "key": GATEWAY_KEY, "allow_variant_override": True}]},
        "admin": {"keys": [{"name": "ops", "key": ADMIN_KEY}]},
        "providers": {"sim": {"base_url": f"{simulator_url}/v1", "api_key": "sk-sim"}},
        "routes": {
            "support": {"variants": {"teacher": {"provider": "sim", "model": "gpt-4o"}}},
            "gpt-4o": {"variants": {"teacher": {"provider": "sim", "model": "gpt-4o"}}},
            "judge": {"variants": {"default": {"provider": "sim", "model": "gpt-4o"}}},
        },
        "capture": {"database_url": f"sqlite+aiosqlite:///{database}", "flush_interval_ms": 50},
        "autopilot": {"interval_s": 1.0, "judge_route": "judge"},
    }


def question(rng: random.Random) -> str:
    text = f"{rng.choice(ASKS)} {rng.choice(TOPICS)} {rng.choice(PLACES)}?"
    detail = (
        f" My account is {rng.randrange(10**5, 10**6)} and I tried {rng.randrange(2, 9)} times."
    )
    return text + detail


async def traffic(url: str, calls: int, seed: int, feedback_share: float) -> tuple[int, int]:
    """``calls`` support questions (some repeated) through the gateway; feedback on a share."""
    rng = random.Random(seed)
    asked = [question(rng) for _ in range(calls)]
    asked += rng.sample(asked, calls // 10)  # people ask the same thing twice
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    gate = asyncio.Semaphore(16)
    answered = rated = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

        async def one(text: str) -> None:
            nonlocal answered, rated
            body = {
                "model": "support",
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": text},
                ],
            }
            async with gate:
                response = await client.post("/v1/chat/completions", json=body)
                if response.status_code != 200:
                    return
                answered += 1
                if rng.random() < feedback_share:
                    score = 1.0 if rng.random() < 0.8 else 0.0
                    request_id = response.headers["x-request-id"]
                    rating = {"request_id": request_id, "score": score, "label": "demo"}
                    if (await client.post("/v1/feedback", json=rating)).status_code == 200:
                        rated += 1

        await asyncio.gather(*(one(text) for text in asked))
    return answered, rated


def step(number: int, what: str) -> None:
    print(f"\n{number}. {what}", flush=True)


def trained_tokens_note(data: Path, job: str) -> str:
    """The export's trained-token estimate beside the job's count, and what each counts."""
    built = orjson.loads((data / "report.json").read_bytes())
    described = orjson.loads((data / "jobs" / job / "job.json").read_bytes())["job"]
    epochs = (described.get("hyperparameters") or {}).get("n_epochs", "?")
    counted = described.get("trained_tokens")
    service = f"{counted:,}" if isinstance(counted, int) else "no figure"
    return (
        f"trained tokens: the export estimated {built['trained_tokens']:,} (train.jsonl only, "
        f"{built['splits']['train']} examples, counted with {built['encoding']}, the base "
        f"model's tokenizer, x {built['hyperparameters']['n_epochs']} epochs); the job reports "
        f"{service} (the service's own count of the same file x {epochs} epochs; the "
        "simulator counts each word and punctuation mark as a token, so its figure differs "
        "by a few percent; OpenAI's should be close to the estimate)"
    )


def run(command: Sequence[str]) -> int:
    print(f"\n$ gateway {shlex.join(command)}", flush=True)
    code = exporter_main(list(command))
    if code != 0:
        raise SystemExit(f"demo: `gateway {command[0]}` exited with {code}")
    return code


def newest_job(data: Path) -> str:
    jobs = sorted((data / "jobs").iterdir(), key=lambda p: p.stat().st_mtime)
    return jobs[-1].name


def finetune_local(workdir: Path, data: Path) -> str:
    """Step 4 with the local backend: a tiny base model from the export, then a LoRA adapter
    trained on it here; the job's id."""
    tiny = workdir / "tiny-model"
    run_module(["exporter.finetune.local.tiny", str(data), str(tiny)])
    runs = workdir / "finetune-runs"
    run(
        [
            "finetune",
            str(data),
            "--backend",
            "local",
            "--base",
            str(tiny),
            "--suffix",
            "support",
            "--output-dir",
            str(runs),
            "--epochs",
            "3",
            "--poll",
            "0.5",
        ]
    )
    return newest_job(data)


def rollout(gateway_url: str, args: list[str]) -> None:
    """``gateway rollout ...`` against the demo's gateway (a process of its own: the exporter
    does not import the gateway)."""
    command = ["rollout", *args, "--admin", gateway_url]
    print(f"\n$ gateway {shlex.join(command)} --admin-key ...", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *command],
        env={**os.environ, "GATEWAY_ADMIN_KEY": ADMIN_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        raise SystemExit(
            f"demo: `gateway rollout {args[0]}` exited with {done.returncode}: "
            f"{done.stderr.strip()}"
        )


def run_module(args: list[str]) -> None:
    print("\n$ python -m " + shlex.join(args), flush=True)
    subprocess.run([sys.executable, "-m", *args], check=True, stdout=subprocess.DEVNULL)


def demo(workdir: Path, calls: int, backend: str = "openai") -> None:
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "capture.db"
    for stale in (database, workdir / "capture.db-wal", workdir / "capture.db-shm"):
        stale.unlink(missing_ok=True)
    sim_port, gw_port = free_port(), free_port()
    (workdir / "simulator-profile.yaml").write_text(yaml.safe_dump(PROFILE))
    simulator = spawn(
        ["simulate", "--port", str(sim_port), "--profile", str(workdir / "simulator-profile.yaml")],
        workdir / "simulator.log",
    )
    gateway: subprocess.Popen[bytes] | None = None
    sim_url, gw_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    config = workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config(sim_url, database), sort_keys=False))
    try:
        wait_for(f"{sim_url}/_sim/health", simulator)
        gateway = spawn(
            ["serve", "--config", str(config), "--port", str(gw_port)], workdir / "gateway.log"
        )
        wait_for(f"{gw_url}/readyz", gateway)
        step(1, f"simulator on {sim_url}, gateway on {gw_url}, files in {workdir}")
        answered, rated = asyncio.run(traffic(gw_url, calls, seed=1, feedback_share=0.5))
        step(2, f"{answered} calls answered by the teacher through the gateway, {rated} rated")
        time.sleep(0.5)  # let the capture writer flush its last batch
        data = workdir / "data"
        step(3, "export the teacher's well-rated calls as training data")
        run(
            [
                "export",
                "--config",
                str(config),
                "--route",
                "support",
                "--variant",
                "teacher",
                "--since",
                "1d",
                "--min-feedback",
                "0.5",
                "--out",
                str(data),
            ]
        )
        api = ["--api-base", f"{sim_url}/v1", "--api-key", "sk-sim"]
        serve: list[str] = []
        if backend == "local":
            step(4, "train a LoRA adapter here (TRL + PEFT, CPU) on a tiny model built from them")
            job = finetune_local(workdir, data)
            # The simulator plays the vLLM server that serves the adapter by name.
            serve = [
                "--provider",
                "vllm",
                "--provider-url",
                f"{sim_url}/v1",
                "--load-adapter",
                f"{sim_url}/v1",
                "--gpu-hour-usd",
                "2.5",
                "--tokens-per-s",
                "900",
            ]
        else:
            step(4, "fine-tune gpt-4o-mini on them (the simulator plays the fine-tuning service)")
            run(
                [
                    "finetune",
                    str(data),
                    "--base",
                    "gpt-4o-mini",
                    "--suffix",
                    "support",
                    "--poll",
                    "0.5",
                    *api,
                ]
            )
            job = newest_job(data)
        model = orjson.loads((data / "jobs" / job / "job.json").read_bytes())["job"][
            "fine_tuned_model"
        ]
        print(trained_tokens_note(data, job))
        step(5, "register the student in shadow on route support")
        run(
            [
                "register",
                job,
                "--route",
                "support",
                "--name",
                "student",
                "--shadow",
                "0.5",
                "--config",
                str(config),
                "--admin",
                gw_url,
                "--admin-key",
                ADMIN_KEY,
                "--dir",
                str(data),
                *(serve or api),
            ]
        )
        answered, _ = asyncio.run(traffic(gw_url, calls // 2, seed=2, feedback_share=0.0))
        step(6, f"{answered} more calls; the student ({model}) answered shadow copies of half")
        time.sleep(0.5)
        step(7, "evaluate the student against the teacher on held-out prompts")
        run(
            [
                "eval",
                "--config",
                str(config),
                "--route",
                "support",
                "--candidate",
                "student",
                "--sample",
                "40",
                "--gateway",
                gw_url,
                "--key",
                GATEWAY_KEY,
                "--data",
                str(data),
                "--out",
                str(workdir / "eval.json"),
            ]
        )
        step(8, "start a rollout of the student: judged shadow pairs, then gated live stages")
        rollout(gw_url, ["start", "support", "--candidate", "student"])
        answered, _ = asyncio.run(traffic(gw_url, 20, seed=3, feedback_share=0.0))
        time.sleep(1.5)  # a look or two of the controller
        rollout(gw_url, ["status", "support"])
    finally:
        for process in (gateway, simulator):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
    elapsed = time.monotonic() - started
    print(f"\ndone in {elapsed:.0f} s. Where to look:")
    print(f"  training data   {data}/train.jsonl, valid.jsonl, report.json, manifest.json")
    print(
        f"  fine-tune job   {data}/jobs/{job}/ (loss.png, READING.txt, metrics.csv, summary.json)"
    )
    if backend == "local":
        print(f"  adapter         {workdir}/finetune-runs/{job}/ (adapter/, manifest.json)")
    print(f"  gateway config  {config} (the student registered in shadow)")
    print("  rollout         the student's, running: `gateway rollout status support` while")
    print("                  a gateway serves this config; its evidence in the capture store")
    print(f"  capture store   {database}")
    print(f"  eval report     {workdir / 'eval.json'}")
    print("  dashboard       /dashboard on a running gateway (`make run`), with an admin key")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dir", type=Path, default=Path("demo-output"))
    parser.add_argument("--calls", type=int, default=240)
    parser.add_argument(
        "--backend",
        choices=("openai", "local"),
        default="openai",
        help="local: train a LoRA adapter here on a tiny model (pip install '.[train]')",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    demo(args.dir.resolve(), args.calls, args.backend)


if __name__ == "__main__":
    main()
