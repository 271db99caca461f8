"""The fine-tuning pieces without a service: the OpenAI backend on a mock transport, metrics
from result files and events, the summary's reading of the curves, the plot."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from exporter.errors import BackendError
from exporter.finetune.backend import Hyperparameters, JobSpec, MetricPoint
from exporter.finetune.metrics import summarize
from exporter.finetune.openai_api import OpenAIBackend
from exporter.finetune.plot import draw

CSV = (
    "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"
    "1,1.5,0.5,,\n2,1.0,0.6,1.2,0.55\n"
)


def backend(handler: httpx.MockTransport) -> OpenAIBackend:
    return OpenAIBackend("http://service/v1", "sk-test", transport=handler)


def test_create_sends_the_method_and_hyperparameters() -> None:
    seen: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        assert request.headers["authorization"] == "Bearer sk-test"
        return httpx.Response(
            200, json={"id": "ftjob-1", "status": "validating_files", "model": "m"}
        )

    job = backend(httpx.MockTransport(handler)).create(
        JobSpec("gpt-4o-mini", "file-t", "file-v", Hyperparameters(3, None, 0.1), suffix="s")
    )
    assert job.id == "ftjob-1" and not job.done
    assert seen["method"] == {
        "type": "supervised",
        "supervised": {
            "hyperparameters": {
                "n_epochs": 3,
                "batch_size": "auto",
                "learning_rate_multiplier": 0.1,
            }
        },
    }
    assert seen["validation_file"] == "file-v" and seen["suffix"] == "s"


def test_metrics_from_a_base64_result_file() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/files/file-r/content"
        return httpx.Response(200, content=base64.b64encode(CSV.encode()))

    job_backend = backend(httpx.MockTransport(handler))
    from exporter.finetune.backend import Job

    points = job_backend.metrics(Job("j", "succeeded", "m", result_files=["file-r"]))
    assert points == [MetricPoint(1, 1.5, 0.5, None, None), MetricPoint(2, 1.0, 0.6, 1.2, 0.55)]


def test_events_are_paged_and_returned_oldest_first() -> None:
    pages = {
        None: {
            "data": [{"id": "e3", "message": "c"}, {"id": "e2", "message": "b"}],
            "has_more": True,
        },
        "e2": {"data": [{"id": "e1", "message": "a"}], "has_more": False},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[request.url.params.get("after")])

    events = backend(httpx.MockTransport(handler)).events("j")
    assert [e.message for e in events] == ["a", "b", "c"]


def test_service_errors_carry_its_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "invalid training_file: file-x"}})

    with pytest.raises(BackendError, match="400 invalid training_file: file-x"):
        backend(httpx.MockTransport(handler)).get("ftjob-1")

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(BackendError, match="refused"):
        backend(httpx.MockTransport(refused)).list_jobs()


def curve(train: list[float], valid: list[float | None]) -> list[MetricPoint]:
    return [
        MetricPoint(i + 1, t, 0.7, v, None)
        for i, (t, v) in enumerate(zip(train, valid, strict=True))
    ]


def test_the_summary_reads_the_signs() -> None:
    falling = [2.0 * 0.9**i + 0.3 for i in range(40)]
    healthy = summarize(curve(falling, [None] * 39 + [0.4]))
    assert healthy["signs"][0].startswith("healthy")
    evals: dict[int, float] = {9: 0.5, 14: 0.45, 19: 0.5, 24: 0.6, 29: 0.7, 34: 0.8}
    rising = [evals.get(i) for i in range(40)]
    assert "overfitting; train" in " ".join(summarize(curve(falling, rising))["signs"])
    assert "last 4 evaluations" in " ".join(summarize(curve(falling, rising))["signs"])
    assert "flat" in " ".join(summarize(curve([1.0] * 40, [None] * 40))["signs"])
    noisy = [0.5 + (0.4 if i % 2 else -0.4) for i in range(40)]
    assert "noisy" in " ".join(summarize(curve(noisy, [None] * 40))["signs"])


def test_two_noisy_validation_points_are_not_called_overfitting() -> None:
    falling = [2.0 * 0.9**i + 0.3 for i in range(40)]
    # the demo's curve: the lowest, one higher, one a little lower again
    evals = {9: 0.93, 19: 0.73, 27: 0.4788, 33: 0.5356, 39: 0.5245}
    signs = " ".join(summarize(curve(falling, [evals.get(i) for i in range(40)]))["signs"])
    assert "overfitting; train" not in signs and "not yet overfitting" in signs
    # higher and higher, but the training loss rose too: not overfitting either
    rising = [0.3 + 0.01 * i for i in range(40)]
    evals = {9: 0.5, 19: 0.55, 29: 0.6, 39: 0.7}
    signs = " ".join(summarize(curve(rising, [evals.get(i) for i in range(40)]))["signs"])
    assert "overfitting; train" not in signs


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    points = curve([1.0, 0.8, 0.6, 0.5], [None, 0.9, None, 0.7])
    target = draw(points, tmp_path / "loss.png", "job")
    assert target.read_bytes().startswith(b"\x89PNG")
