"""The loop against the simulator: export -> finetune -> register (config file + reload) ->
eval through the gateway."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import orjson
import pytest

from exporter.cli import main
from tests.exporter.conftest import ADMIN_KEY, GATEWAY_KEY, Captured


def test_finetune_register_eval(
    captured: Captured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = captured.loop
    data = tmp_path / "data"
    api = ["--api-base", f"{loop.simulator.url}/v1", "--api-key", "sk-sim"]
    fast = ["--header", "x-sim-ft-seconds:0.3", "--poll", "0.1"]
    base = ["--database-url", loop.database_url]
    assert (
        main(["export", *base, "--route", "support", "--variant", "teacher", "--out", str(data)])
        == 0
    )

    assert main(["finetune", str(data), "--base", "gpt-4o-mini", "--suffix", "t", *api, *fast]) == 0
    job_dirs = list((data / "jobs").iterdir())
    assert len(job_dirs) == 1
    job_dir = job_dirs[0]
    for name in (
        "job.json",
        "events.jsonl",
        "metrics.csv",
        "summary.json",
        "loss.png",
        "READING.txt",
    ):
        assert (job_dir / name).is_file(), name
    assert (job_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    job = orjson.loads((job_dir / "job.json").read_bytes())["job"]
    model = job["fine_tuned_model"]
    assert job["status"] == "succeeded" and model.startswith("ft:gpt-4o-mini:sim-org:t:")
    summary = orjson.loads((job_dir / "summary.json").read_bytes())
    assert (
        summary["train_loss_final"] < summary["train_loss_first"] and "valid_loss_final" in summary
    )
    listed = httpx.get(f"{loop.simulator.url}/v1/models").json()["data"]
    assert model in [m["id"] for m in listed]

    capsys.readouterr()
    assert main(["finetune", "status", job_dir.name, "--dir", str(data), "--json", *api]) == 0
    assert json.loads(capsys.readouterr().out)["job"]["fine_tuned_model"] == model

    admin = ["--admin", loop.gateway.url, "--admin-key", ADMIN_KEY]
    command = [
        "register",
        job_dir.name,
        "--route",
        "support",
        "--name",
        "student",
        "--shadow",
        "0.5",
    ]
    assert main([*command, "--config", str(loop.config), *admin, "--dir", str(data), *api]) == 0
    assert "student:" in loop.config.read_text() and model in loop.config.read_text()
    routes = httpx.get(
        f"{loop.gateway.url}/admin/routes", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ).json()["routes"]
    assert routes["support"]["variants"]["student"]["model"] == model
    assert routes["support"]["shadow"] == {"variant": "student", "sample": 0.5, "live": False}

    capsys.readouterr()
    evaluation = ["eval", *base, "--route", "support", "--candidate", "student", "--sample", "8"]
    gateway = ["--gateway", loop.gateway.url, "--key", GATEWAY_KEY, "--data", str(data), "--json"]
    assert main([*evaluation, *gateway, "--judge-model", "judge"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["replayed"] == min(8, report["held_out_available"]) > 0
    assert report["failed"] == 0
    assert report["judged"] + report["unjudged"] == report["replayed"]
    assert sum(r["count"] for r in report["results"].values()) == report["judged"]
    low, high = report["score_ci95"]
    assert 0.0 <= low <= report["score"] <= high <= 1.0
    assert report["latency"]["candidate"]["p50_ms"] > 0
    assert report["cost"]["candidate"]["mean_usd"] > 0
    # Which data made the candidate: its lineage, stored at register.
    assert report["lineage"]["model"] == model and report["lineage"]["backend"] == "openai"
    assert report["lineage"]["export"]["manifest"]["filters"]["route"] == "support"


def test_register_live_through_the_admin_api(captured: Captured) -> None:
    loop = captured.loop
    model = "ft:gpt-4o-mini:sim-org:live:abc123"
    admin = ["--admin", loop.gateway.url, "--admin-key", ADMIN_KEY]
    assert main(["register", model, "--route", "judge", *admin]) == 0
    routes = httpx.get(
        f"{loop.gateway.url}/admin/routes", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ).json()["routes"]
    variant = routes["judge"]["variants"]["student-abc123"]
    assert variant["model"] == model and variant["weight"] == 0
    assert "abc123" not in loop.config.read_text()  # live only: the file is untouched
