"""``gateway eval --bases``: candidate base models, as a host serves them, against the teacher on
held-out captured prompts, zero-shot and with captured training-side examples as shots, judged
through the gateway. The host is a second simulator where one candidate answers worse."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from exporter.cli import main
from exporter.commands.evaluate import parse_price
from exporter.errors import BadFilter
from exporter.evaluate.bases_report import score_interval
from exporter.evaluate.shots import Shot, as_shot, with_shots
from exporter.evaluate.stats import Tally
from exporter.examples import Example
from exporter.normalize import prompt_key
from exporter.split import share_of
from tests.exporter.conftest import GATEWAY_KEY, Captured
from tests.processes import Running, start_simulator

VALID_SHARE = 0.5
HOST_PROFILE = {
    "default": {"ttft_ms": 0, "token_ms": 0},
    "models": {
        "acme/good-8b": {"ttft_ms": 4, "token_ms": 0},
        "acme/weak-1b": {"ttft_ms": 1, "token_ms": 0, "quality": 0.1},
    },
}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_simulator(tmp_path_factory.mktemp("host"), HOST_PROFILE)
    try:
        yield running
    finally:
        running.stop()


def _args(captured: Captured, host: Running, *extra: str) -> list[str]:
    loop = captured.loop
    return [
        "eval",
        "--database-url",
        loop.database_url,
        "--route",
        "support",
        "--gateway",
        loop.gateway.url,
        "--key",
        GATEWAY_KEY,
        "--judge-model",
        "judge",
        "--valid-share",
        str(VALID_SHARE),
        "--bases",
        "acme/good-8b,acme/weak-1b",
        "--host-url",
        f"{host.url}/v1",
        *extra,
    ]


def _recorded(host: Running) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = httpx.get(f"{host.url}/_sim/requests").json()
    return [e for e in entries if e.get("path") == "/v1/chat/completions"]


def test_bases_ranked_against_the_teacher(
    captured: Captured,
    host: Running,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOST_KEY_FOR_TEST", "sk-host")
    httpx.delete(f"{host.url}/_sim/requests")
    capsys.readouterr()
    command = _args(
        captured,
        host,
        "--shots",
        "2",
        "--host-key-env",
        "HOST_KEY_FOR_TEST",
        "--price",
        "acme/good-8b=0.2,0.4",
        "--json",
    )
    assert main(command) == 0
    report = json.loads(capsys.readouterr().out)
    held = report["held_out"]
    assert held == min(200, report["held_out_available"]) >= 10
    assert report["shots"] == {"requested": 2, "used": 2, "call_ids": report["shots"]["call_ids"]}

    rows = {(row["candidate"], row["shots"]): row for row in report["rows"]}
    assert set(rows) == {(m, k) for m in ("acme/good-8b", "acme/weak-1b") for k in (0, 2)}
    for row in rows.values():
        assert row["replayed"] == held and row["failed"] == 0
        assert row["judged"] + row["unjudged"] == held
        assert row["wins"] + row["ties"] + row["losses"] == row["judged"]
        low, high = row["win_rate_ci95"]
        assert 0.0 <= low <= row["win_rate"] <= high <= 1.0
        assert 0 < row["latency"]["p50_ms"] <= row["latency"]["p95_ms"]
    # the weak candidate loses most pairs, and ranks below the good one in both settings
    for shots in (0, 2):
        good, weak = rows[("acme/good-8b", shots)], rows[("acme/weak-1b", shots)]
        assert weak["win_rate"] < 0.25 < good["win_rate"]
        assert weak["win_rate_ci95"][1] < good["win_rate_ci95"][0]
        assert weak["rank"] > good["rank"]
        assert good["cost_per_call_usd"] > 0 and good["price_per_1m"] == {
            "input": 0.2,
            "output": 0.4,
        }
        assert weak["cost_per_call_usd"] == "unknown" and weak["price_per_1m"] == "unknown"
    assert [row["rank"] for row in report["rows"]] == [1, 2, 3, 4]
    assert {row["candidate"] for row in report["rows"][:2]} == {"acme/good-8b"}
    teacher = report["teacher"]
    assert teacher["candidate"] == "gpt-4o" and teacher["variant"] == "teacher"
    assert teacher["latency"]["p50_ms"] > 0 and teacher["cost_per_call_usd"] > 0

    # What the host got: each held-out prompt once per candidate and setting, with the key;
    # the shots are training-side teacher conversations, never a held-out prompt.
    calls = _recorded(host)
    assert len(calls) == 4 * held
    assert all(c["headers"].get("authorization") == "Bearer sk-host" for c in calls)
    held_prompts = set()
    shot_turns: list[Any] = []
    for call in calls:
        messages = call["body"]["messages"]
        assert call["body"]["model"] in ("acme/good-8b", "acme/weak-1b")
        assert "stream" not in call["body"]
        users = [m for m in messages if m["role"] == "user"]
        if len(users) == 1:
            held_prompts.add(users[0]["content"])
        else:
            assert len(users) == 3 and messages[0]["role"] == "system"
            shot_turns.append(messages[1:5])
    assert len(held_prompts) == held
    assert all(turns == shot_turns[0] for turns in shot_turns)
    turns = shot_turns[0]
    assert [m["role"] for m in turns] == ["user", "assistant", "user", "assistant"]
    for user, answer in ((turns[0], turns[1]), (turns[2], turns[3])):
        assert user["content"] not in held_prompts
        key = prompt_key(Example("", [user, answer]))
        assert share_of(key) >= VALID_SHARE


def test_bases_table_as_markdown(
    captured: Captured, host: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(_args(captured, host, "--sample", "6", "--bases", "acme/weak-1b")) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| rank |"))
    assert "win rate (95% CI)" in lines[header] and "latency p95" in lines[header]
    assert lines[header + 2].startswith("| - | gpt-4o (teacher) | recorded | baseline |")
    row = lines[header + 3]
    assert row.startswith("| 1 | acme/weak-1b | zero-shot |") and row.endswith("| unknown |")
    assert "6 held-out prompts" in out
    assert "- acme/weak-1b zero-shot checks: exact 0/" in out
    # header, its rule, the teacher, the one candidate
    assert len([line for line in lines if line.startswith("| ")]) == 4


def test_bad_options_are_one_line(
    captured: Captured, host: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args(captured, host)
    without_host = args[: args.index("--host-url")]
    cases = [
        (without_host, "--bases needs --host-url"),
        ([*args, "--host-key-env", "NO_SUCH_KEY_VAR_1"], "NO_SUCH_KEY_VAR_1 is not set"),
        ([*args, "--price", "acme/good-8b=cheap"], "give MODEL=IN,OUT"),
        ([*args, "--candidate", "student"], "give --candidate VARIANT"),
        ([*args, "--shots", "-1"], "--shots must be 0 or more"),
        ([*without_host, "--host-url", "ftp://x"], "give an http:// or https:// URL"),
    ]
    for command, message in cases:
        capsys.readouterr()
        assert main(command) == 2, message
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_an_unreachable_host_is_one_line(
    captured: Captured, host: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.processes import free_port

    args = _args(captured, host, "--sample", "3")
    args[args.index("--host-url") + 1] = f"http://127.0.0.1:{free_port()}/v1"
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "every call to the host" in err and len(err.strip().splitlines()) == 1


def test_the_win_rate_interval_is_never_a_point() -> None:
    low, high = score_interval(Tally(0, 0, 6))
    assert low == pytest.approx(0.0) and 0.3 < high < 0.5
    low, high = score_interval(Tally(6, 0, 0))
    assert 0.5 < low < 0.7 and high == pytest.approx(1.0)
    low, high = score_interval(Tally(10, 10, 10))
    assert low < 0.5 < high and abs((low + high) / 2 - 0.5) < 1e-9
    assert score_interval(Tally(0, 0, 0)) == (0.0, 1.0)


def test_shots_and_prices_units() -> None:
    system = {"role": "system", "content": "Be brief."}
    example = Example(
        "c1",
        [system, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    )
    shot = as_shot(example)
    assert shot == Shot("c1", example.messages[1:])
    calls = {"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]}
    assert as_shot(Example("c2", [{"role": "user", "content": "Hi"}, calls])) is None
    prompt = [system, {"role": "user", "content": "Q"}]
    assert with_shots(prompt, [shot]) == [system, *example.messages[1:], prompt[1]]
    assert with_shots(prompt[1:], [shot]) == [*example.messages[1:], prompt[1]]
    model, price = parse_price("meta-llama/Llama-3.1-8B=0.18,0.18")
    assert model == "meta-llama/Llama-3.1-8B" and (price.input, price.output) == (0.18, 0.18)
    for bad in ("x=1", "=1,2", "x=1,-2", "x=a,b", "x=1,2,3"):
        with pytest.raises(BadFilter):
            parse_price(bad)
