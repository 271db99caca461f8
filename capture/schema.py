"""The capture tables: ``calls`` (one row per call) and ``feedback`` (any number per call).

SQLAlchemy Core, so the writer's batched inserts and the exporter's queries stay plain SQL.
JSON columns are JSONB on PostgreSQL and JSON text on SQLite. Times are timezone-aware UTC on
both (SQLite stores them as ISO text, ``UTCDateTime`` puts the zone back on read).

The Alembic migrations in ``capture/migrations`` create and change these tables; the revision
that matches this module is ``capture.migrate.head()``. Change both together.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

ID_LENGTH = 32
NAME_LENGTH = 200
"""Route, variant, provider, model and user key names are cut to this length."""
LABEL_LENGTH = 100
DIALECT_LENGTH = 16
COMMENT_LENGTH = 4000
SLICE_LENGTH = 400
"""A rollout slice's name (its tag values) is cut to this length."""


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def json_type() -> TypeEngine[Any]:
    """JSONB on PostgreSQL, JSON elsewhere; Python None is SQL NULL, not JSON ``null``."""
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

calls = Table(
    "calls",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("endpoint", String(16), nullable=False),
    Column("route", String(NAME_LENGTH)),
    Column("variant", String(NAME_LENGTH)),
    Column("provider", String(NAME_LENGTH)),
    Column("requested_model", String(NAME_LENGTH)),
    Column("upstream_model", String(NAME_LENGTH)),
    Column("dialect", String(DIALECT_LENGTH)),
    Column("upstream_api", String(DIALECT_LENGTH)),
    Column("request", json_type()),
    Column("response", json_type()),
    Column("normalized", json_type()),
    Column("status", Integer, nullable=False),
    Column("error", Text),
    Column("finish_reason", String(40)),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("cached_tokens", Integer),
    Column("cache_write_tokens", Integer),
    Column("cost_usd", Float),
    Column("total_ms", Float, nullable=False),
    Column("ttft_ms", Float),
    Column("upstream_ms", Float),
    Column("overhead_ms", Float, nullable=False),
    Column("user_key", String(NAME_LENGTH)),
    Column("tags", json_type(), nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("shadow_of", String(ID_LENGTH)),
    Column("cache_hit", Boolean, nullable=False),
    Column("content_refs", Boolean),
    Index("ix_calls_created_at", "created_at"),
    Index("ix_calls_route_variant_created_at", "route", "variant", "created_at"),
    Index("ix_calls_upstream_model_created_at", "upstream_model", "created_at"),
    Index("ix_calls_shadow_of", "shadow_of"),
)
"""One row per captured call. ``shadow_of`` has no foreign key: a shadow call may be written
before the call it copied, and either may have been sampled out.

``dialect`` is the client's wire dialect ("openai", "anthropic"), ``upstream_api`` the
provider's ("openai", "anthropic", "azure"); NULL in rows written before migration 0004 means
"openai". ``request`` is in the client's dialect, ``response`` in the upstream's; ``normalized``
is the chat view of a call in Anthropic's dialect (``capture.prepare``), NULL for the others.
``prompt_tokens`` counts every input token, ``cached_tokens`` (cache reads) and
``cache_write_tokens`` (cache writes) included. ``content_refs`` true: the request, response
and normalized view hold ``{"$ref": hash}`` in place of parts stored once in ``content``
(``capture.content``); NULL in rows written before migration 0006 or with the setting off.

On PostgreSQL (migration 0009) the table is range-partitioned on ``created_at``
(``capture.partitions``: a partition per day, week or month, and a DEFAULT one) and its primary
key is ``(id, created_at)``, as PostgreSQL requires of a partitioned table's unique keys; ids
are random, and the writer's ``ON CONFLICT (id, created_at)`` keeps a retried batch a no-op.
SQLite keeps one plain table keyed by ``id``."""

HASH_LENGTH = 64

content = Table(
    "content",
    metadata,
    Column("hash", String(HASH_LENGTH), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("body", LargeBinary(), nullable=False),
    Column("last_seen", Date(), nullable=False),
    Index("ix_content_last_seen", "last_seen"),
)
"""Large repeated parts of calls (system prompts, tools, earlier turns, answers), each stored
once, keyed by the sha256 (hex) of its compact JSON, which ``body`` holds compressed (zlib;
``capture.content``). No foreign key from ``calls``: a part is written before or with the first
call that refers to it. ``last_seen`` is the latest UTC day a writer stored a call referring to
it (refreshed at most once a day per part, ``Store.insert_calls``); the collector
(``capture.retention.collect_content``) deletes the parts not seen since the oldest call kept."""

feedback = Table(
    "feedback",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("request_id", String(ID_LENGTH), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("score", Float, nullable=False),
    Column("label", String(LABEL_LENGTH)),
    Column("comment", Text),
    Index("ix_feedback_request_id", "request_id"),
    Index("ix_feedback_created_at", "created_at"),
)
"""Scores attached to calls by the app (``POST /v1/feedback``); several per call allowed, only
to a call that exists (``Store.add_feedback``). No foreign key since migration 0009: ``calls`` is
partitioned on PostgreSQL, so ``calls.id`` alone is not a unique key there; ``feedback`` is
partitioned by its own ``created_at`` (primary key ``(id, created_at)``) and a prune removes a
dropped call's feedback itself (``capture.partitions``)."""

gateway_keys = Table(
    "gateway_keys",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("name", String(NAME_LENGTH), nullable=False),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("routes", json_type()),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("daily_budget_usd", Float),
    Column("monthly_budget_usd", Float),
    Column("allow_variant_override", Boolean, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
)
"""Virtual keys made with ``gateway keys create`` or the admin API: only the sha256 of a key is
stored, and its first characters (``prefix``) so people can tell keys apart. Kept in the same
database as the captures so that one migration chain covers it."""

students = Table(
    "students",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("route", String(NAME_LENGTH), nullable=False),
    Column("variant", String(NAME_LENGTH), nullable=False),
    Column("model", String(NAME_LENGTH), nullable=False),
    Column("provider", String(NAME_LENGTH)),
    Column("backend", String(40)),
    Column("base_model", String(NAME_LENGTH)),
    Column("parent_model", String(NAME_LENGTH)),
    Column("job_id", String(NAME_LENGTH)),
    Column("lineage", json_type()),
    Index("ix_students_route_variant_created_at", "route", "variant", "created_at"),
)
"""Every student registered as a variant (``gateway register``), with its lineage: the backend
and job that trained it, its base model, the student it continued from, and in ``lineage`` the
export it was trained on (manifest: filters, time window, counts; sha256 of the files), the
hyperparameters and its price. The newest row of a (route, variant) describes what serves it."""

rollouts = Table(
    "rollouts",
    metadata,
    Column("route", String(NAME_LENGTH), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("state", json_type(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("abort", Text),
)
"""One rollout per route (``autopilot.controller``): its state as plain JSON (configuration,
each slice's stage and the numbers of its sequential tests), so a restarted controller carries
on; ``status`` (running, promoted, rolled_back, aborted, gave_up) for listing without parsing.
A new rollout of the same route replaces the row; its decisions stay. ``abort`` holds an abort
asked for (admin API, CLI) on any replica, with why, until the controller acts on it."""

rollout_decisions = Table(
    "rollout_decisions",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("route", String(NAME_LENGTH), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("slice", String(SLICE_LENGTH), nullable=False),
    Column("action", String(20), nullable=False),
    Column("from_stage", Integer, nullable=False),
    Column("to_stage", Integer, nullable=False),
    Column("share", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("evidence", json_type()),
    Index("ix_rollout_decisions_route_at", "route", "at"),
)
"""Every decision of every rollout, with its evidence (each gate's verdict, statistic, bounds,
alphas and sample sizes; the costs per call): the dashboard's timeline and the audit trail."""

judgements = Table(
    "judgements",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("route", String(NAME_LENGTH), nullable=False),
    Column("slice", String(SLICE_LENGTH), nullable=False),
    Column("incumbent_call", String(ID_LENGTH), nullable=False),
    Column("candidate_call", String(ID_LENGTH), nullable=False),
    Column("incumbent", String(NAME_LENGTH), nullable=False),
    Column("candidate", String(NAME_LENGTH), nullable=False),
    Column("verdict", String(20)),
    Column("judge_calls", json_type()),
    Column("checks", json_type()),
    Column("reason", Text),
    UniqueConstraint("incumbent_call", "candidate_call", name="uq_judgements_pair"),
    Index("ix_judgements_route_id", "route", "id"),
    Index("ix_judgements_route_created_at", "route", "created_at"),
)
"""One judged pair of a rollout: the incumbent's and the candidate's answers to the same request
(a shadow copy or a counterfactual teacher call, linked by the calls' ids, no foreign keys: calls
are written in batches and pruned by time), the verdict from the candidate's side (``win``,
``tie``, ``loss``, or NULL when the judge gave none), the judge calls' ids, and each side's
deterministic check results. The controller reads them by ``id`` since its last look."""

leases = Table(
    "leases",
    metadata,
    Column("name", String(NAME_LENGTH), primary_key=True),
    Column("holder", String(NAME_LENGTH), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)
"""Who holds a named lease until when (``capture.lease``): one rollout controller across
replicas. Taken with one atomic UPDATE ... WHERE the lease is free, expired or already ours."""
