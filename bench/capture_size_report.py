"""The capture-size bench's report: its measurement (``bench.capture_size.measure``) as
Markdown tables, the README's figures."""

from __future__ import annotations

from typing import Any

from bench.capture_workload import SPAN_DAYS


def _kb(value: float) -> str:
    return f"{value / 1024:,.1f}"


def render(result: dict[str, Any]) -> str:
    w = result["workload"]
    n = w["records"]
    whole = w["whole_json_bytes_per_call"]
    lines = [
        "### Capture at scale: bytes per call, write rate, prune (today's layout, then with "
        "the content store)",
        "",
        f"{n:,} generated calls over {result.get('span_days', SPAN_DAYS):g} days "
        f"(seed {result['seed']}; "
        + ", ".join(f"{kind}: {count:,}" for kind, count in w["kinds"].items())
        + f"), {result['date']}, {result['cpus']} CPUs, load {result['load_at_start']} at start, "
        f"{result['load_at_end']} at end.",
        "",
        "| per call | KiB |",
        "|---|---:|",
        f"| raw bytes on the wire (request + response; streams as SSE) | "
        f"{_kb(w['wire_bytes_per_call'])} |",
        f"| request + response stored whole (compact JSON; streams assembled): the reference "
        f"| {_kb(whole)} |",
        f"| of which the request | {_kb(w['request_bytes_per_call'])} |",
        f"| of the request, parts ≥ {w['part_min_bytes']} B seen before (system prompts, tools, "
        f"earlier turns): {w['repeated_share_of_request']:.1%} | "
        f"{_kb(w['repeated_request_bytes_per_call'])} |",
        f"| request + response with each repeated part once (no references counted, "
        f"uncompressed): {(whole - w['repeated_request_bytes_per_call']) / max(whole, 1):.0%} "
        f"of the reference | {_kb(whole - w['repeated_request_bytes_per_call'])} |",
        f"| the normalized view (Anthropic-dialect calls), averaged over all calls "
        f"| {_kb(w['normalized_bytes_per_call'])} |",
        "",
        f"Preparation alone (parse, assemble, price, redact, normalise): "
        f"{w['prepare_cpu_us_per_record']} µs CPU per record.",
        "",
    ]
    lines += _store_lines(result.get("postgresql"), result.get("sqlite"), n, whole)
    content = result.get("content_store")
    if content and (content.get("postgresql") or content.get("sqlite")):
        lines += [
            f"#### With `capture.content_store: true` (each part ≥ {content['min_bytes']} B stored "
            "once in `content`, compressed; calls refer to it by its sha256)",
            "",
        ]
        cpu = w.get("prepare_cpu_us_per_record_content_store")
        if cpu is not None:
            lines += [
                f"Preparation with the parts cut out (hashing included): {cpu} µs CPU per record "
                f"(today's layout: {w['prepare_cpu_us_per_record']}).",
                "",
            ]
        lines += _store_lines(content.get("postgresql"), content.get("sqlite"), n, whole)
    return "\n".join(lines)


def _store_lines(
    pg: dict[str, Any] | None, sq: dict[str, Any] | None, n: int, whole: int
) -> list[str]:
    """Sizes, write rate and prune of one layout."""
    lines: list[str] = []
    rows: list[list[str]] = []
    if pg:
        for name, size in pg["tables"].items():
            if size["total"] < 64 * 1024 and name != "calls":
                continue
            rows.append(
                [
                    f"PostgreSQL `{name}`",
                    _kb(size["heap"] / n),
                    _kb(size["toast"] / n),
                    _kb(size["indexes"] / n),
                    _kb(size["total"] / n),
                    f"{size['total'] / max(whole, 1) / n:.0%}",
                ]
            )
        total = sum(size["total"] for size in pg["tables"].values())
        rows.append(
            ["PostgreSQL, all tables", "", "", "", _kb(total / n), f"{total / whole / n:.0%}"]
        )
        if "empty_total" in pg:  # the partitions' fixed cost, paid once per day, not per call
            grown = total - pg["empty_total"]
            rows.append(
                [
                    "PostgreSQL, all tables, less the empty layout "
                    f"({pg['empty_total'] / 2**20:.1f} MiB)",
                    "",
                    "",
                    "",
                    _kb(grown / n),
                    f"{grown / whole / n:.0%}",
                ]
            )
    if sq:
        for name, size in sq["tables"].items():
            if size < 64 * 1024 and name != "calls":
                continue
            rows.append([f"SQLite `{name}` (with its indexes)", "", "", "", _kb(size / n), ""])
        rows.append(
            [
                "SQLite, the file after VACUUM",
                "",
                "",
                "",
                _kb(sq["file_bytes"] / n),
                f"{sq['file_bytes'] / whole / n:.0%}",
            ]
        )
    if rows:
        lines += [
            "| store | heap KiB/call | TOAST KiB/call | indexes KiB/call | total KiB/call "
            "| of the reference |",
            "|---|---:|---:|---:|---:|---:|",
            *("| " + " | ".join(row) + " |" for row in rows),
            "",
        ]
    if pg:
        columns = pg["column_bytes_per_call"]
        lines += [
            "PostgreSQL's stored (compressed) JSON columns per call: request "
            f"{_kb(columns['request'])} KiB, response {_kb(columns['response'])} KiB, "
            f"normalized {_kb(columns['normalized'])} KiB.",
            "",
        ]
    rate_rows = [
        [
            backend,
            f"{data['write']['records_per_s']:,}",
            f"{data['write']['cpu_us_per_record']}",
            f"{data['write']['stored']:,} / {data['write']['records']:,}",
        ]
        for backend, data in (("PostgreSQL", pg), ("SQLite", sq))
        if data
    ]
    if rate_rows:
        lines += [
            "| write path (one writer, flat out) | records/s | CPU µs/record (this process) "
            "| stored / written |",
            "|---|---:|---:|---:|",
            *("| " + " | ".join(row) + " |" for row in rate_rows),
            "",
        ]
    if pg:
        p, q = pg["prune"], pg["prune_partitions"]
        lines += [
            "PostgreSQL prune (`gateway db prune --older-than "
            f"{p['older_than_days']:g}d`), the same rows both ways:",
            "",
            "| | DELETE (plain tables, migration 0008) | DROP partitions (0009) |",
            "|---|---:|---:|",
            f"| calls removed | {p['deleted']:,} | {q['deleted']:,} "
            f"({q['partitions_dropped']} partitions) |",
            f"| prune time, s | {p['seconds']} | {q['seconds']} |",
            f"| `calls` before, MiB | {_kb(p['calls_total_before'] / 1024)} | "
            f"{_kb(pg['tables']['calls']['total'] / 1024)} |",
            f"| `calls` right after, MiB | {_kb(p['calls_total_after'] / 1024)} | "
            f"{_kb(q['calls_total_after'] / 1024)} |",
            f"| after VACUUM (s), MiB | {_kb(p['calls_total_after_vacuum'] / 1024)} "
            f"({p['vacuum_s']} s) | {_kb(q['calls_total_after_vacuum'] / 1024)} "
            f"({q['vacuum_s']} s) |",
            f"| after VACUUM FULL (exclusive lock), MiB | "
            f"{_kb(p['calls_total_after_vacuum_full'] / 1024)} ({p['vacuum_full_s']} s) | "
            "not needed |",
            "",
        ]
        if q.get("content_total_before", 0) > 0:
            lines += [
                f"The content collector after the prune: {q['content_collected']:,} parts no "
                f"kept call refers to deleted; `content` {_kb(q['content_total_before'] / 1024)} "
                f"MiB before, {_kb(q['content_total_after_vacuum'] / 1024)} MiB after VACUUM.",
                "",
            ]
    return lines
