"""bench/capture_size.py run tiny: the workload is what it claims, and the report has real numbers
from a real PostgreSQL database and a real SQLite file."""

from __future__ import annotations

import orjson
import pytest

from bench import capture_size, capture_size_report, capture_workload, run
from bench.report import Results, machine, render, to_json
from tests.capture_support import PG_ADMIN_URL, postgres_unreachable

RECORDS = 240


def test_the_workload_is_seeded_and_shaped_as_the_issue_says() -> None:
    first = capture_workload.make_workload(RECORDS, seed=3)
    again = capture_workload.make_workload(RECORDS, seed=3)
    other = capture_workload.make_workload(RECORDS, seed=4)
    assert [r.request_body for r in first] == [r.request_body for r in again]
    assert [r.request_body for r in first] != [r.request_body for r in other]
    assert [r.started_at for r in first] == sorted(r.started_at for r in first)
    kinds = {(r.dialect, r.upstream_api, r.stream) for r in first}
    assert {("openai", "openai", False), ("openai", "openai", True)} <= kinds
    assert {("anthropic", "anthropic", False), ("anthropic", "anthropic", True)} <= kinds
    assert any(upstream == "anthropic" for dialect, upstream, _ in kinds if dialect == "openai")
    systems: set[str] = set()
    conversations = 0
    for record in first:
        body = orjson.loads(record.request_body)
        assert body["tools"], "every feature has tools"
        if record.dialect == "anthropic":
            system, messages = body["system"], body["messages"]
        else:
            system, messages = body["messages"][0]["content"], body["messages"][1:]
        systems.add(system)
        assert 900 <= len(system) // capture_workload.CHARS_PER_TOKEN <= 3300
        users = [m for m in messages if m["role"] == "user"]
        assert len(users) == len(messages) // 2 + 1
        conversations += len(users) > 1
        if record.stream_chunks is not None:
            assert record.response_body is None and len(record.stream_chunks) > 1
    assert len(systems) == len(capture_workload.FEATURES)
    assert conversations > RECORDS // 10


def test_the_repeated_share_counts_parts_seen_before() -> None:
    records = capture_workload.make_workload(RECORDS)
    stats = capture_workload.workload_stats(records)
    assert stats["records"] == RECORDS
    assert 0.5 < stats["repeated_share_of_request"] < 1
    assert stats["whole_json_bytes_per_call"] > stats["request_bytes_per_call"]
    assert stats["repeated_request_bytes_per_call"] < stats["request_bytes_per_call"]
    assert stats["normalized_bytes_per_call"] > 0
    assert stats["whole_without_repeated_bytes_per_call"] == pytest.approx(
        stats["whole_json_bytes_per_call"] - stats["repeated_request_bytes_per_call"], abs=1
    )
    assert stats["prepare_cpu_us_per_record"] > 0
    # One call alone repeats nothing; the same call twice repeats all its large parts.
    one = capture_workload.workload_stats(records[:1])
    assert one["repeated_request_bytes_per_call"] == 0
    twice = capture_workload.workload_stats([records[0], records[0]])
    assert twice["repeated_share_of_request"] > 0.4


def test_measured_on_postgresql_and_sqlite() -> None:
    why = postgres_unreachable()
    if why:
        pytest.skip(why)
    result = capture_size.measure(RECORDS, postgres_url=PG_ADMIN_URL)
    pg, sq = result["postgresql"], result["sqlite"]
    assert pg["write"]["stored"] == RECORDS and sq["write"]["stored"] == RECORDS
    assert pg["write"]["records_per_s"] > 0 and sq["write"]["records_per_s"] > 0
    calls = pg["tables"]["calls"]
    assert calls["heap"] > 0 and calls["toast"] > 0 and calls["indexes"] > 0
    assert calls["total"] >= calls["heap"] + calls["toast"] + calls["indexes"]
    assert pg["column_bytes_per_call"]["request"] > 0
    prune = pg["prune"]
    assert RECORDS * 0.4 < prune["deleted"] < RECORDS * 0.6
    assert prune["calls_total_after_vacuum_full"] < calls["total"]
    assert sq["file_bytes"] > 0 and sq["tables"]["calls"] > 0
    assert sq["tables"]["calls"] <= sq["file_bytes"]
    # the same calls again with capture.content_store: true
    stored_once = result["content_store"]
    pg_once, sq_once = stored_once["postgresql"], stored_once["sqlite"]
    assert pg_once["write"]["stored"] == RECORDS and sq_once["write"]["stored"] == RECORDS
    assert pg_once["tables"]["content"]["total"] > 0 and sq_once["tables"]["content"] > 0
    assert sum(t["total"] for t in pg_once["tables"].values()) < sum(
        t["total"] for t in pg["tables"].values()
    )
    assert sq_once["file_bytes"] < sq["file_bytes"]
    assert result["workload"]["prepare_cpu_us_per_record_content_store"] > 0
    text = capture_size_report.render(result)
    assert "PostgreSQL `calls`" in text and "SQLite, the file after VACUUM" in text
    assert "capture.content_store: true" in text and "PostgreSQL `content`" in text
    assert f"| calls removed | {prune['deleted']:,} | {prune['deleted']:,} (" in text
    dropped = pg["prune_partitions"]
    assert dropped["deleted"] == prune["deleted"] and dropped["partitions_dropped"] > 0
    assert dropped["calls_total_after"] < calls["total"]  # dropped: no VACUUM needed

    args = run.parse_args(["--quick", "--only", "capture-size"])
    assert args.capture_size_records == capture_size.QUICK_RECORDS
    assert run._selected(args, "capture-size") and not run._selected(args, "dialects")
    results = Results(
        command="x",
        date="d",
        machine=machine(),
        method={"wrk": "wrk 4.1.0", "threads": 1, "duration_s": 1, "warmup_s": 1},
        start_seconds=0.0,
    )
    results.capture_size = result
    assert "Capture at scale" in render(results)
    assert to_json(results)["capture_size"]["workload"]["records"] == RECORDS


def test_the_command_line_refuses_too_few_records() -> None:
    with pytest.raises(SystemExit):
        capture_size.parse_args(["--records", "3"])
    assert capture_size.parse_args(["--quick"]).records == capture_size.QUICK_RECORDS
