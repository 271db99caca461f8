"""Which data made which student: the job's record of its export, the lineage stored at
register, the price of an open-weight student, and a student trained on from the last one."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from capture.students import current_student, list_students
from exporter.cli import main
from exporter.database import open_store
from exporter.errors import BadFilter
from exporter.lineage import describe, student_price
from tests.exporter.conftest import ADMIN_KEY, Captured


def test_prices_given_or_from_a_gpu_hour() -> None:
    given = student_price("0.2,0.6", None, None)
    assert given is not None and (given.input, given.output, given.source) == (0.2, 0.6, "given")
    derived = student_price(None, 2.0, 500.0)  # $2/h at 500 tokens/s: 1.8M tokens per hour
    assert derived is not None and derived.source == "gpu_hour"
    assert derived.output == pytest.approx(2.0 / (500 * 3600) * 1e6)
    assert derived.input == derived.output
    mixed = student_price("0.05,9", 2.0, 500.0)
    assert mixed is not None and mixed.input == 0.05 and mixed.output == derived.output
    assert student_price(None, None, None) is None
    for bad in (("1", None, None), ("a,b", None, None), ("-1,2", None, None)):
        with pytest.raises(BadFilter):
            student_price(*bad)
    with pytest.raises(BadFilter, match="go together"):
        student_price(None, 2.0, None)
    with pytest.raises(BadFilter, match="more than 0"):
        student_price(None, 2.0, 0.0)


def _students(url: str, route: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with open_store(url) as store:
            return await list_students(store.engine, route)

    return asyncio.run(read())


def test_a_student_keeps_its_lineage_and_the_next_continues_from_it(
    captured: Captured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = captured.loop
    config = tmp_path / "gateway.yaml"
    shutil.copy(loop.config, config)
    data = tmp_path / "data"
    api = ["--api-base", f"{loop.simulator.url}/v1", "--api-key", "sk-sim"]
    fast = ["--header", "x-sim-ft-seconds:0.2", "--poll", "0.1"]
    db = ["--database-url", loop.database_url]
    export = ["export", *db, "--route", "support", "--variant", "teacher", "--out", str(data)]
    assert main(export) == 0
    assert (
        main(["finetune", str(data), "--base", "gpt-4o-mini", "--suffix", "one", *api, *fast]) == 0
    )
    (first_dir,) = list((data / "jobs").iterdir())
    record = orjson.loads((first_dir / "job.json").read_bytes())
    train_sha = hashlib.sha256((data / "train.jsonl").read_bytes()).hexdigest()
    assert record["export"]["train_sha256"] == train_sha
    assert record["export"]["manifest"]["filters"]["route"] == "support"
    first_model = record["job"]["fine_tuned_model"]

    register = [
        "register",
        first_dir.name,
        "--route",
        "support",
        "--name",
        "lora-one",
        "--provider",
        "vllm",
        "--provider-url",
        "http://vllm.internal:8000/v1",
        "--gpu-hour-usd",
        "2.5",
        "--tokens-per-s",
        "800",
        "--config",
        str(config),
        "--dir",
        str(data),
        *db,
        *api,
    ]
    assert main(register) == 0
    written = yaml.safe_load(config.read_text())
    assert written["providers"]["vllm"] == {"base_url": "http://vllm.internal:8000/v1"}
    assert written["routes"]["support"]["variants"]["lora-one"]["provider"] == "vllm"
    price = written["capture"]["prices"][first_model]
    assert price["output"] == pytest.approx(2.5 / (800 * 3600) * 1e6, rel=1e-4)

    # Other tests of the session register students on this route too.
    (student,) = [s for s in _students(loop.database_url, "support") if s["variant"] == "lora-one"]
    assert (student["variant"], student["model"]) == ("lora-one", first_model)
    assert (student["backend"], student["base_model"], student["parent_model"]) == (
        "openai",
        "gpt-4o-mini",
        None,
    )
    lineage = student["lineage"]
    assert lineage["export"]["train_sha256"] == train_sha
    assert lineage["job"] == first_dir.name == student["job_id"]
    assert lineage["price"]["source"] == "gpu_hour"
    text = "\n".join(describe(student))
    assert "trained by openai job" in text and train_sha in text and "route support" in text
    shown = httpx.get(
        f"{loop.gateway.url}/dashboard/api/students",
        params={"route": "support"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    ).json()["students"]
    assert ("lora-one", train_sha) in [
        (s["variant"], s["lineage"]["export"]["train_sha256"]) for s in shown
    ]

    # The next student starts from this one: --from the job id.
    more = ["finetune", str(data), "--base", "gpt-4o-mini", "--suffix", "two", "--from"]
    assert main([*more, first_dir.name, *api, *fast]) == 0
    (second_dir,) = [d for d in (data / "jobs").iterdir() if d != first_dir]
    second = orjson.loads((second_dir / "job.json").read_bytes())
    assert second["spec"]["parent"] == first_model
    assert second["job"]["model"] == first_model  # the service was asked to train it further
    second_model = second["job"]["fine_tuned_model"]
    assert second_model.startswith("ft:gpt-4o-mini:sim-org:two:")
    capsys.readouterr()
    again = ["register", second_dir.name, "--route", "support", "--name", "lora-two"]
    assert main([*again, "--config", str(config), "--dir", str(data), *db, "--json", *api]) == 0
    assert json.loads(capsys.readouterr().out)["lineage"]["parent"] == first_model

    async def newest() -> dict[str, Any] | None:
        async with open_store(loop.database_url) as store:
            return await current_student(store.engine, "support", "lora-two")

    latest = asyncio.run(newest())
    assert latest is not None and latest["parent_model"] == first_model
    assert latest["model"] == second_model


def test_without_a_database_the_registration_still_happens(
    captured: Captured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.yaml"
    document = yaml.safe_load(captured.loop.config.read_text())
    document["capture"]["database_url"] = f"sqlite+aiosqlite:///{tmp_path}/absent.db"
    config.write_text(yaml.safe_dump(document))
    model = "ft:gpt-4o-mini:sim-org:x:zz9"
    assert main(["register", model, "--route", "support", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "lineage not stored" in out and "give --database-url" in out
    assert model in config.read_text()
