"""autopilot.evidence: a rollout's evidence read from a migrated store, on both backends."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from typing import Any

from autopilot.controller import Evidence, RolloutConfig, SliceEvidence
from autopilot.evidence import EvidenceReader, tags_of_slice
from autopilot.gates import StageGates
from capture.content import encode, externalize
from capture.engine import create_engine
from capture.schema import content
from tests.autopilot.stores import (  # noqa: F401  (fixtures)
    T0,
    backend,
    call_row,
    database_url,
    insert_calls,
    insert_feedback,
    insert_judgement,
)

CONFIG = RolloutConfig(
    route="support",
    incumbent="teacher",
    candidate="student",
    slice_keys=("task",),
    max_slices=3,
    gates=StageGates(feedback_range=(0.0, 1.0)),
)


def s(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def by_slice(evidence: Evidence) -> dict[str, SliceEvidence]:
    return {",".join(f"{k}={v}" for k, v in e.tags.items()): e for e in evidence.slices}


def test_evidence_per_slice_and_arm(database_url: str) -> None:  # noqa: F811
    async def scenario() -> None:
        engine = create_engine(database_url)
        try:
            a, b = {"task": "a"}, {"task": "b"}
            live = call_row(at=s(1), variant="teacher", tags=a, cost=0.01, total_ms=300.0)
            shadow = call_row(at=s(1.5), variant="student", tags=a, cost=0.001, total_ms=90.0,
                              shadow_of=live["id"])  # fmt: skip
            rows = [
                live,
                shadow,
                call_row(at=s(2), variant="student", tags=a, text="", cost=0.002),  # check fails
                call_row(at=s(3), variant="student", tags=a, status=502, cost=None, total_ms=5.0),
                call_row(at=s(4), variant="student", tags=b, ttft_ms=12.0, total_ms=80.0),
                call_row(at=s(5), variant="teacher", tags=b, cost=None, total_ms=250.0),
                # not evidence: a judge's call, a call forced to its variant, another route,
                # another variant
                call_row(at=s(6), variant="student", tags={**a, "gateway.purpose": "judge"}),
                call_row(at=s(6), variant="student", tags={**a, "gateway.forced": "1"}, text=""),
                call_row(at=s(6), variant="student", route="other", tags=a),
                call_row(at=s(6), variant="old-student", tags=a),
            ]
            await insert_calls(engine, rows)
            await insert_feedback(engine, live["id"], 0.75, s(7))
            await insert_feedback(engine, rows[4]["id"], 1.0, s(7))
            await insert_feedback(engine, rows[4]["id"], -1.0, s(7))  # outside the range
            for verdict in ("win", "win", "tie", "loss", None):
                await insert_judgement(engine, verdict, s(8), slice="task=a")
            await insert_judgement(engine, "loss", s(8), slice="task=b")
            await insert_judgement(engine, "win", s(8), slice="task=a", route="other")

            reader = EvidenceReader(engine, CONFIG, lag_s=2.0)
            evidence, cursor = await reader.read(None, s(20))
            json.dumps(cursor)  # plain JSON
            got = by_slice(evidence)
            assert set(got) == {"task=a", "task=b"}
            ea, eb = got["task=a"], got["task=b"]
            assert (ea.wins, ea.ties, ea.losses) == (2, 1, 1)
            assert (eb.wins, eb.ties, eb.losses) == (0, 0, 1)
            assert ea.candidate.calls == 3 and ea.candidate.errors == 2
            assert abs(ea.candidate.cost_usd - 0.003) < 1e-12
            assert sorted(ea.candidate.latencies_ms) == [90.0, 100.0]
            assert ea.incumbent.calls == 1 and ea.incumbent.errors == 0
            assert ea.incumbent.latencies_ms == (300.0,) and ea.incumbent.feedback == (0.75,)
            assert eb.candidate.ttfts_ms == (12.0,) and eb.candidate.feedback == (1.0,)
            assert eb.incumbent.cost_usd == 0.0 and eb.incumbent.calls == 1

            again, cursor2 = await reader.read(cursor, s(40))
            assert again.slices == () and cursor2 == cursor
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def _total(evidences: list[Evidence]) -> dict[str, int]:
    out = {"calls": 0, "errors": 0, "wins": 0, "losses": 0, "feedback": 0}
    for evidence in evidences:
        for e in evidence.slices:
            out["calls"] += e.candidate.calls + e.incumbent.calls
            out["errors"] += e.candidate.errors + e.incumbent.errors
            out["wins"] += e.wins
            out["losses"] += e.losses
            out["feedback"] += len(e.candidate.feedback) + len(e.incumbent.feedback)
    return out


def test_cursor_never_double_counts_or_skips(database_url: str) -> None:  # noqa: F811
    """Rows land in batches, late (within the lag) and with equal created_at; the reader looks
    often with a small page: every row is counted exactly once."""

    async def scenario() -> None:
        engine = create_engine(database_url)
        rng = random.Random(7)
        try:
            reader = EvidenceReader(engine, CONFIG, lag_s=2.0, page=7)
            looks: list[Evidence] = []
            cursor: dict[str, Any] | None = None
            expected = {"calls": 0, "errors": 0, "wins": 0, "losses": 0, "feedback": 0}
            clock = 0.0
            for _ in range(40):
                clock += 0.5
                batch = []
                for _ in range(rng.randint(0, 6)):
                    # created up to 1.5 s before it lands (the writer's batching), some at
                    # exactly the same moment
                    at = s(round(clock - rng.choice([0.0, 0.0, 0.5, 1.0, 1.5]), 1))
                    status = rng.choice([200, 200, 200, 500])
                    variant = rng.choice(["student", "teacher"])
                    tags = {"task": rng.choice("xy")}
                    batch.append(call_row(at=at, variant=variant, status=status, tags=tags))
                    expected["errors"] += status != 200
                if batch:
                    await insert_calls(engine, batch)
                    expected["calls"] += len(batch)
                    pick = batch[0]
                    await insert_feedback(engine, pick["id"], 0.5, s(clock - 1.0))
                    expected["feedback"] += 1
                verdict = rng.choice(["win", "loss"])
                await insert_judgement(
                    engine, verdict, s(clock - 0.5), slice=f"task={rng.choice('xy')}"
                )
                expected["wins" if verdict == "win" else "losses"] += 1
                evidence, cursor = await reader.read(cursor, s(clock))
                cursor = json.loads(json.dumps(cursor))  # as a store would keep it
                looks.append(evidence)
            for extra in range(1, 40):  # drain the backlog
                evidence, cursor = await reader.read(cursor, s(clock + 2.0 + extra))
                looks.append(evidence)
            assert _total(looks) == expected
            assert (
                max(sum(e.candidate.calls + e.incumbent.calls for e in ev.slices) for ev in looks)
                <= 7
            )
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_started_bounds_the_first_look(database_url: str) -> None:  # noqa: F811
    async def scenario() -> None:
        engine = create_engine(database_url)
        try:
            await insert_calls(engine, [call_row(at=s(1), variant="student"),
                                        call_row(at=s(10), variant="student")])  # fmt: skip
            reader = EvidenceReader(engine, CONFIG, lag_s=0.0, started=s(5))
            evidence, _ = await reader.read(None, s(20))
            assert sum(e.candidate.calls for e in evidence.slices) == 1
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_tags_of_slice() -> None:
    assert tags_of_slice("task=a,tenant=b,c", ("task", "tenant")) == {"task": "a", "tenant": "b,c"}
    assert tags_of_slice("task=,tenant=x", ("task", "tenant")) == {"task": "", "tenant": "x"}
    assert tags_of_slice("*", ()) == {}


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def chat_completion(content: str | None, tool_args: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_args is not None:
        message["tool_calls"] = [
            {"id": "t1", "type": "function",
             "function": {"name": "get_weather", "arguments": tool_args}}
        ]  # fmt: skip
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message,
            "finish_reason": "tool_calls" if tool_args else "stop"}]}  # fmt: skip


def test_checks_read_the_chat_view_and_the_content_store(database_url: str) -> None:  # noqa: F811
    """An answer that fails a check is an error, whether the call was OpenAI's, answered by
    Claude (the stored request, the normalised answer), in Anthropic's dialect (the normalised
    request and answer), or had its tools cut out into the content store."""

    async def scenario() -> None:
        engine = create_engine(database_url)
        try:
            json_request = {"model": "support", "response_format": {"type": "json_object"},
                            "messages": [{"role": "user", "content": "JSON please"}]}  # fmt: skip
            question = [{"role": "user", "content": "Weather in Rome?"}]
            tool_request = {"model": "support", "tools": TOOLS, "messages": question}
            rows = []
            # OpenAI's: good JSON, cut JSON
            for i, text in enumerate(['{"a": 1}', '{"a": ']):
                row = call_row(at=s(1 + i), variant="student", request=json_request)
                row["response"] = chat_completion(text)
                rows.append(row)
            # a chat call answered by Claude: the view holds the answer only
            for i, text in enumerate(['{"a": 1}', '{"a": ']):
                row = call_row(at=s(3 + i), variant="student", request=json_request)
                row["upstream_api"] = "anthropic"
                row["response"] = {"type": "message", "content": [{"type": "text", "text": text}]}
                row["normalized"] = {"request": None, "response": chat_completion(text)}
                rows.append(row)
            # an Anthropic Messages call: the view holds both halves
            for i, args in enumerate(['{"city": "Rome"}', '{"town": "Rome"}']):
                row = call_row(at=s(5 + i), variant="student")
                row.update(endpoint="messages", dialect="anthropic", upstream_api="anthropic")
                row["request"] = {"model": "support", "max_tokens": 50, "messages": [
                    {"role": "user", "content": "Weather in Rome?"}]}  # fmt: skip
                row["response"] = {"type": "message", "content": []}
                row["normalized"] = {
                    "request": tool_request,
                    "response": chat_completion(None, args),
                }
                rows.append(row)
            # tools stored once in the content store
            parts: dict[str, Any] = {}
            cut = externalize(tool_request, parts, min_bytes=1)
            assert cut["tools"] != TOOLS
            for i, args in enumerate(['{"city": "Rome"}', '{"city": 3}']):
                row = call_row(at=s(7 + i), variant="student", request=cut)
                row["response"] = chat_completion(None, args)
                row["content_refs"] = True
                rows.append(row)
            async with engine.begin() as connection:
                await connection.execute(content.insert(), [
                    {"hash": h, "created_at": T0, "body": encode(p), "last_seen": T0.date()}
                    for h, p in parts.items()
                ])  # fmt: skip
            await insert_calls(engine, rows)
            evidence, _ = await EvidenceReader(engine, CONFIG, lag_s=0.0).read(None, s(20))
            (only,) = evidence.slices
            assert only.candidate.calls == 8
            # each pair's second row is the one that fails: look at them one at a time
            errors = []
            for n in range(8):
                reader = EvidenceReader(engine, CONFIG, lag_s=0.0, started=s(1 + n))
                one, _ = await reader.read(None, s(1 + n) + dt.timedelta(seconds=0.5))
                errors.append(one.slices[0].candidate.errors)
            assert errors == [0, 1] * 4
            assert only.candidate.errors == 4
        finally:
            await engine.dispose()

    asyncio.run(scenario())
