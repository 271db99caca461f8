"""The ``capture:`` section of the gateway's configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from capture.archive_location import S3Options
from capture.redaction import ALL_KINDS, RedactionKind


class ModelPrice(BaseModel):
    """A model's price in USD per 1M tokens; overrides the built-in table for that model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    """Price of prompt tokens served from the provider's prompt cache; ``input`` when unset."""
    output: float = Field(ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    """Price of prompt tokens written to the provider's prompt cache (Anthropic's cache writes);
    ``input`` when unset."""


class ArchiveSettings(BaseModel):
    """``capture.archive``: where old partitions go as Parquet files (``capture.archive``)
    before they are dropped, and where ``gateway export`` and ``gateway eval`` read them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    """``file:///path`` (or a plain path) or ``s3://bucket/prefix`` on any S3-compatible store."""
    endpoint_url: str | None = None
    """The S3 API's URL for a store other than AWS (MinIO, R2, Ceph...); AWS: unset."""
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    """Give the keys as ``${ENV}``; unset: boto3's own chain (``AWS_ACCESS_KEY_ID``..., a
    profile, an instance role)."""
    hot_days: int = Field(default=30, ge=1)
    """Calls younger than this stay in the database: ``gateway db archive`` without
    ``--before``/``--older-than`` archives the partitions that ended before now - hot_days."""

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        scheme, sep, _ = url.partition("://")
        if not url.strip() or (sep and scheme not in ("file", "s3")):
            raise ValueError("give file:///path or s3://bucket/prefix")
        return url

    def s3_options(self) -> S3Options:
        return S3Options(self.endpoint_url, self.region, self.access_key_id, self.secret_access_key)


class CaptureSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    database_url: str = "sqlite+aiosqlite:///gateway.db"
    """``sqlite+aiosqlite:///path.db`` (created on first run) or
    ``postgresql+asyncpg://user@host:5432/db``."""
    sample: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of calls recorded (decided per call by ``CaptureWriter.should_capture``)."""
    redact: list[RedactionKind] = Field(default_factory=lambda: list(ALL_KINDS))
    """What is replaced by a placeholder before storage; ``[]`` stores text as it came."""
    writer: Literal["process", "loop"] = "process"
    """Where records are prepared and written: "process", a writer process of the gateway's own
    (``capture.writer_process``: none of that work holds the serving loop or its GIL); "loop",
    a task on the serving event loop (``capture.writer``; for in-memory SQLite, which another
    process cannot open)."""
    writer_priority: Literal["idle", "low", "normal"] = "idle"
    """With ``writer: process``: the writer process's CPU priority. "idle" (Linux's
    ``SCHED_IDLE``): it runs only when a core has nothing else to run, and a call waking up takes
    the core from it at once; "low": ``nice`` +10, which still lets it finish its time slice
    first (a call can wait 1-4 ms); "normal": the gateway's."""
    queue_size: int = Field(default=10_000, ge=1)
    """Records waiting to be written; when full, new records are dropped and counted."""
    batch_size: int = Field(default=256, ge=1)
    flush_interval_ms: int = Field(default=200, ge=1)
    """Longest wait for a batch to fill before what is queued is written anyway."""
    retry_max_backoff_s: float = Field(default=0.5, gt=0)
    """While the database is down, the writer probes it (``SELECT 1`` on a fresh connection) at
    intervals growing from 50 ms to this, and retries its batch as soon as a probe answers."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    """Longest wait for a new connection to the database (PostgreSQL)."""
    statement_timeout_s: float = Field(default=10.0, gt=0)
    """Longest a statement of the gateway's may run: the server's ``statement_timeout`` and the
    driver's own limit on PostgreSQL (a stalled network is seen, logged and retried like an
    outage), the busy timeout on SQLite."""
    content_store: bool = True
    """Store large repeated parts of requests (system prompts, tools, earlier turns) and
    answers once, in the ``content`` table, each call referring to them (``capture.content``);
    readers see the record unchanged either way. On by default since the collector
    (``capture.retention``) deletes the parts no kept call refers to; false stores each call
    whole (about 3x the bytes on ``python -m bench.capture_size``'s workload)."""
    content_min_bytes: int = Field(default=256, ge=16)
    """With ``content_store``: parts shorter than this (compact JSON) stay inline."""
    partition: Literal["day", "week", "month"] = "day"
    """PostgreSQL: the span of a time partition of ``calls`` and ``feedback`` (UTC days, weeks
    from Monday, months), what retention drops at a time (``capture.partitions``)."""
    retention_days: int | None = Field(default=None, ge=1)
    """Keep calls this many days (and at most one partition's span more); None: keep all.
    Applied by the writer's maintenance by dropping whole partitions (``capture.retention``)."""
    maintenance_interval_s: float = Field(default=3600.0, gt=0)
    """How often the writer's maintenance runs (partitions created ahead, retention, the
    collection of content no call refers to), the first time at start."""
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    """Per-model price overrides, keyed by model name (dated names match their family)."""
    archive: ArchiveSettings | None = None
    """The archive tier (``capture.archive``); None: no archive."""
