"""The hourly rollup's schema (PostgreSQL): tables, functions and triggers, for a migration.

``dashboard_hourly`` holds, per (hour, route, variant), what the dashboard's long windows need:
counts, errors, cost and tokens; histograms of total latency and TTFT of the calls that did not
fail; and the feedback sums (per call: the mean of its scores, so a call scored twice counts
once). A histogram is an ``int[]``: its lowest bin, then the counts of that bin and the next ones
(bin = floor(ln(ms) * BINS_PER_E): bins 2% wide).

How it stays equal to ``calls``:

- INSERT INTO calls: a row trigger appends the call's few numbers to ``dashboard_pending`` (the
  capture writer inserts a batch as one executemany, so a statement trigger would run once per
  row anyway; this one costs ~10% on a 256-row batch). ``dashboard_hourly_fold()`` moves what is
  pending into the hourly rows (DELETE ... RETURNING, so concurrent folds never count a row
  twice); the dashboard folds before it reads, and anything may fold more often.
- INSERT INTO feedback: the call's hour gets the change of that call's mean score (the call row
  is locked first, so two scores for one call arriving at once are counted in turn).
- DELETE or UPDATE of calls or feedback (``gateway db prune``, manual fixes): the hours touched
  are rebuilt from ``calls`` and ``feedback``. TRUNCATE empties the rollup.

``UPGRADE`` also fills the rollup from the calls already stored (one pass). These statements are
meant for a capture migration (``op.execute`` each, PostgreSQL only); migration 0003 runs them
so that the dashboard's tests and benchmark can create the rollup.
"""

from __future__ import annotations

INDEXES = (
    # The window's calls without an error, with every column the aggregations read: totals,
    # percentiles, ranks, series and the join with feedback are answered from this index alone
    # (index-only scans). ``error`` itself cannot be in it (a long error text would not fit in
    # an index entry), hence the partial index and the queries' two branches.
    "CREATE INDEX IF NOT EXISTS ix_calls_dashboard ON calls (created_at)"
    " INCLUDE (route, variant, status, total_ms, ttft_ms, cost_usd, prompt_tokens,"
    " completion_tokens, shadow_of, id) WHERE error IS NULL",
    # The few calls with an error, found without reading the others.
    "CREATE INDEX IF NOT EXISTS ix_calls_errors ON calls (created_at) WHERE error IS NOT NULL",
)
"""PostgreSQL-only indexes for the dashboard's queries (migration 0003)."""

DROP_INDEXES = (
    "DROP INDEX IF EXISTS ix_calls_errors",
    "DROP INDEX IF EXISTS ix_calls_dashboard",
)

BINS_PER_E = 50
"""Histogram bins per unit of ln(ms): 2% wide; percentiles come within 1% of the exact."""

ROLLUP_COLUMNS = (
    "hour, route, variant, calls, shadow_calls, errors, cost_usd, priced_calls, prompt_tokens,"
    " completion_tokens, latency, ttft"
)
"""The columns ``rollup_ctes``' ``rolled`` gives, in order (feedback excepted)."""


def hour_of(column: str) -> str:
    """The UTC hour a time falls in, whatever the session's time zone."""
    return f"(date_trunc('hour', {column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


def picked_from_calls(where: str) -> str:
    """The calls matching ``where`` in the shape ``rollup_ctes`` takes: in two branches, with
    and without an error, so PostgreSQL can read the first from the covering index."""
    columns = (
        f"{hour_of('created_at')} AS hour, route, variant, shadow_of IS NOT NULL AS shadow,"
        " {failed} AS failed, cost_usd, prompt_tokens, completion_tokens, total_ms, ttft_ms"
    )
    scope = f"({where}) AND route IS NOT NULL AND variant IS NOT NULL"
    return (
        f"SELECT {columns.format(failed='(status >= 400 OR status < 100)')} FROM calls"
        f" WHERE {scope} AND error IS NULL"
        f" UNION ALL SELECT {columns.format(failed='true')} FROM calls"
        f" WHERE {scope} AND error IS NOT NULL"
    )


def rollup_ctes(picked: str) -> str:
    """Common table expressions, from ``picked`` (hour, route, variant, shadow, failed, cost_usd,
    prompt_tokens, completion_tokens, total_ms, ttft_ms) to ``rolled`` (``ROLLUP_COLUMNS``)."""

    def histogram(name: str, column: str, condition: str) -> str:
        return f"""
        {name}_bins AS (
            SELECT hour, route, variant,
                   floor(ln(greatest({column}, 0.001)) * {BINS_PER_E})::int AS bin, count(*) AS n
            FROM picked WHERE {condition} GROUP BY 1, 2, 3, 4
        ), {name} AS (
            SELECT hour, route, variant,
                   dashboard_dense_bins(array_agg(bin), array_agg(n)) AS bins
            FROM {name}_bins GROUP BY hour, route, variant
        )"""

    latency = histogram("latency", "total_ms", "NOT failed")
    ttft = histogram("ttft", "ttft_ms", "NOT failed AND ttft_ms IS NOT NULL")
    return f"""
        picked AS ({picked}),
        totals AS (
            SELECT hour, route, variant, count(*) AS calls,
                   count(*) FILTER (WHERE shadow) AS shadow_calls,
                   count(*) FILTER (WHERE failed) AS errors,
                   coalesce(sum(cost_usd), 0) AS cost_usd, count(cost_usd) AS priced_calls,
                   coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
                   coalesce(sum(completion_tokens), 0) AS completion_tokens
            FROM picked GROUP BY hour, route, variant
        ), {latency}, {ttft},
        rolled AS (
            SELECT t.hour, t.route, t.variant, t.calls, t.shadow_calls, t.errors, t.cost_usd,
                   t.priced_calls, t.prompt_tokens, t.completion_tokens,
                   coalesce(l.bins, '{{}}'::int[]) AS latency,
                   coalesce(f.bins, '{{}}'::int[]) AS ttft
            FROM totals t
            LEFT JOIN latency l USING (hour, route, variant)
            LEFT JOIN ttft f USING (hour, route, variant)
        )"""


def feedback_select(where: str, feedback_where: str = "true") -> str:
    """SELECT hour, route, variant, feedback_calls, feedback_sum, feedback_sumsq for the calls
    matching ``where`` (on ``calls`` as ``c``) that have feedback (``feedback_where``, on
    ``feedback`` as ``f``, may narrow the feedback read)."""
    return f"""
    SELECT hour, route, variant, count(*) AS feedback_calls, sum(score) AS feedback_sum,
           sum(score * score) AS feedback_sumsq
    FROM (
        SELECT {hour_of("c.created_at")} AS hour, c.route, c.variant, avg(f.score) AS score
        FROM calls c JOIN feedback f ON f.request_id = c.id
        WHERE ({where}) AND ({feedback_where}) AND c.route IS NOT NULL AND c.variant IS NOT NULL
        GROUP BY 1, c.route, c.variant, c.id
    ) per_call
    GROUP BY hour, route, variant
    """


def _fill(where: str) -> str:
    """Statements (``;``-separated) that insert the hours of the calls matching ``where``."""
    return f"""
    WITH {rollup_ctes(picked_from_calls(where))}
    INSERT INTO dashboard_hourly ({ROLLUP_COLUMNS})
    SELECT * FROM rolled ORDER BY hour, route, variant;
    UPDATE dashboard_hourly h
    SET feedback_calls = s.feedback_calls, feedback_sum = s.feedback_sum,
        feedback_sumsq = s.feedback_sumsq
    FROM ({feedback_select(where.replace("created_at", "c.created_at"))}) s
    WHERE h.hour = s.hour AND h.route = s.route AND h.variant = s.variant
    """


_PENDING_COLUMNS = (
    "hour, route, variant, shadow, failed, cost_usd, prompt_tokens, completion_tokens,"
    " total_ms, ttft_ms"
)

UPGRADE: tuple[str, ...] = (
    """
    CREATE TABLE dashboard_hourly (
        hour timestamptz NOT NULL,
        route varchar(200) NOT NULL,
        variant varchar(200) NOT NULL,
        calls bigint NOT NULL DEFAULT 0,
        shadow_calls bigint NOT NULL DEFAULT 0,
        errors bigint NOT NULL DEFAULT 0,
        cost_usd double precision NOT NULL DEFAULT 0,
        priced_calls bigint NOT NULL DEFAULT 0,
        prompt_tokens bigint NOT NULL DEFAULT 0,
        completion_tokens bigint NOT NULL DEFAULT 0,
        latency int[] NOT NULL DEFAULT '{}',
        ttft int[] NOT NULL DEFAULT '{}',
        feedback_calls bigint NOT NULL DEFAULT 0,
        feedback_sum double precision NOT NULL DEFAULT 0,
        feedback_sumsq double precision NOT NULL DEFAULT 0,
        CONSTRAINT pk_dashboard_hourly PRIMARY KEY (hour, route, variant)
    )
    """,
    """
    CREATE TABLE dashboard_pending (
        hour timestamptz NOT NULL,
        route varchar(200) NOT NULL,
        variant varchar(200) NOT NULL,
        shadow boolean NOT NULL,
        failed boolean NOT NULL,
        cost_usd double precision,
        prompt_tokens integer,
        completion_tokens integer,
        total_ms double precision NOT NULL,
        ttft_ms double precision
    )
    """,
    # A sparse histogram (bins, counts) as a dense int[]: its lowest bin, then the counts.
    """
    CREATE FUNCTION dashboard_dense_bins(bins int[], counts bigint[]) RETURNS int[]
    LANGUAGE sql IMMUTABLE AS $$
        SELECT coalesce(
            (SELECT r.lo || array_agg(coalesce(c.n, 0)::int ORDER BY s)
             FROM (SELECT min(b) AS lo, max(b) AS hi FROM unnest(bins) b) r
             CROSS JOIN generate_series(r.lo, r.hi) s
             LEFT JOIN unnest(bins, counts) AS c(bin, n) ON c.bin = s
             WHERE r.lo IS NOT NULL
             GROUP BY r.lo),
            '{}'::int[])
    $$
    """,
    """
    CREATE FUNCTION dashboard_merge_bins(a int[], b int[]) RETURNS int[]
    LANGUAGE sql IMMUTABLE AS $$
        SELECT CASE
            WHEN coalesce(cardinality(a), 0) = 0 THEN b
            WHEN coalesce(cardinality(b), 0) = 0 THEN a
            ELSE (
                SELECT r.lo || array_agg(
                    CASE WHEN s >= a[1] THEN coalesce(a[s - a[1] + 2], 0) ELSE 0 END
                    + CASE WHEN s >= b[1] THEN coalesce(b[s - b[1] + 2], 0) ELSE 0 END
                    ORDER BY s)
                FROM (SELECT least(a[1], b[1]) AS lo,
                             greatest(a[1] + cardinality(a) - 2, b[1] + cardinality(b) - 2) AS hi
                     ) r
                CROSS JOIN generate_series(r.lo, r.hi) s
                GROUP BY r.lo)
        END
    $$
    """,
    f"""
    CREATE FUNCTION dashboard_hourly_fold() RETURNS bigint
    LANGUAGE plpgsql AS $$
    DECLARE
        folded bigint;
    BEGIN
        WITH {rollup_ctes(f"DELETE FROM dashboard_pending RETURNING {_PENDING_COLUMNS}")}
        INSERT INTO dashboard_hourly AS h ({ROLLUP_COLUMNS})
        SELECT * FROM rolled ORDER BY hour, route, variant
        ON CONFLICT (hour, route, variant) DO UPDATE SET
            calls = h.calls + excluded.calls,
            shadow_calls = h.shadow_calls + excluded.shadow_calls,
            errors = h.errors + excluded.errors,
            cost_usd = h.cost_usd + excluded.cost_usd,
            priced_calls = h.priced_calls + excluded.priced_calls,
            prompt_tokens = h.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = h.completion_tokens + excluded.completion_tokens,
            latency = dashboard_merge_bins(h.latency, excluded.latency),
            ttft = dashboard_merge_bins(h.ttft, excluded.ttft);
        GET DIAGNOSTICS folded = ROW_COUNT;
        RETURN folded;
    END
    $$
    """,
    f"""
    CREATE FUNCTION dashboard_hourly_rebuild(hours timestamptz[]) RETURNS void
    LANGUAGE plpgsql AS $$
    DECLARE
        lo timestamptz := (SELECT min(x) FROM unnest(hours) x);
        hi timestamptz := (SELECT max(x) FROM unnest(hours) x);
    BEGIN
        IF lo IS NULL THEN
            RETURN;
        END IF;
        DELETE FROM dashboard_pending WHERE hour = ANY(hours);
        DELETE FROM dashboard_hourly WHERE hour = ANY(hours);
        {
        _fill(
            "created_at >= lo AND created_at < hi + interval '1 hour'"
            f" AND {hour_of('created_at')} = ANY(hours)"
        )
    };
    END
    $$
    """,
    f"""
    CREATE FUNCTION dashboard_pending_add() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.route IS NOT NULL AND NEW.variant IS NOT NULL THEN
            INSERT INTO dashboard_pending ({_PENDING_COLUMNS}) VALUES (
                {hour_of("NEW.created_at")}, NEW.route, NEW.variant, NEW.shadow_of IS NOT NULL,
                NEW.status >= 400 OR NEW.status < 100 OR NEW.error IS NOT NULL,
                NEW.cost_usd, NEW.prompt_tokens, NEW.completion_tokens, NEW.total_ms, NEW.ttft_ms
            );
        END IF;
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE FUNCTION dashboard_hourly_calls_removed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM dashboard_hourly_rebuild(
            ARRAY(SELECT DISTINCT {hour_of("created_at")} FROM removed)
        );
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE FUNCTION dashboard_hourly_calls_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM dashboard_hourly_rebuild(ARRAY(
            SELECT {hour_of("created_at")} FROM old_calls
            UNION SELECT {hour_of("created_at")} FROM new_calls
        ));
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION dashboard_hourly_calls_truncated() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM dashboard_pending;
        DELETE FROM dashboard_hourly;
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE FUNCTION dashboard_hourly_feedback_added() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        target record;
        earlier bigint;
        earlier_sum double precision;
        old_mean double precision;
        new_mean double precision;
    BEGIN
        SELECT created_at, route, variant INTO target FROM calls
        WHERE id = NEW.request_id FOR UPDATE;
        IF target.route IS NULL OR target.variant IS NULL THEN
            RETURN NULL;
        END IF;
        SELECT count(*), coalesce(sum(score), 0) INTO earlier, earlier_sum FROM feedback
        WHERE request_id = NEW.request_id AND id <> NEW.id;
        new_mean := (earlier_sum + NEW.score) / (earlier + 1);
        old_mean := CASE WHEN earlier > 0 THEN earlier_sum / earlier ELSE 0 END;
        INSERT INTO dashboard_hourly AS h
            (hour, route, variant, feedback_calls, feedback_sum, feedback_sumsq)
        VALUES (
            {hour_of("target.created_at")}, target.route, target.variant,
            CASE WHEN earlier = 0 THEN 1 ELSE 0 END,
            new_mean - old_mean,
            new_mean * new_mean - old_mean * old_mean
        )
        ON CONFLICT (hour, route, variant) DO UPDATE SET
            feedback_calls = h.feedback_calls + excluded.feedback_calls,
            feedback_sum = h.feedback_sum + excluded.feedback_sum,
            feedback_sumsq = h.feedback_sumsq + excluded.feedback_sumsq;
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE FUNCTION dashboard_hourly_feedback_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM dashboard_hourly_rebuild(ARRAY(
            SELECT DISTINCT {hour_of("c.created_at")}
            FROM calls c JOIN changed_feedback f ON f.request_id = c.id
        ));
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER dashboard_pending_insert AFTER INSERT ON calls
    FOR EACH ROW EXECUTE FUNCTION dashboard_pending_add()
    """,
    """
    CREATE TRIGGER dashboard_hourly_calls_delete AFTER DELETE ON calls
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION dashboard_hourly_calls_removed()
    """,
    """
    CREATE TRIGGER dashboard_hourly_calls_update AFTER UPDATE ON calls
    REFERENCING OLD TABLE AS old_calls NEW TABLE AS new_calls
    FOR EACH STATEMENT EXECUTE FUNCTION dashboard_hourly_calls_changed()
    """,
    """
    CREATE TRIGGER dashboard_hourly_calls_truncate AFTER TRUNCATE ON calls
    FOR EACH STATEMENT EXECUTE FUNCTION dashboard_hourly_calls_truncated()
    """,
    """
    CREATE TRIGGER dashboard_hourly_feedback_insert AFTER INSERT ON feedback
    FOR EACH ROW EXECUTE FUNCTION dashboard_hourly_feedback_added()
    """,
    """
    CREATE TRIGGER dashboard_hourly_feedback_delete AFTER DELETE ON feedback
    REFERENCING OLD TABLE AS changed_feedback
    FOR EACH STATEMENT EXECUTE FUNCTION dashboard_hourly_feedback_changed()
    """,
    """
    CREATE TRIGGER dashboard_hourly_feedback_update AFTER UPDATE ON feedback
    REFERENCING NEW TABLE AS changed_feedback
    FOR EACH STATEMENT EXECUTE FUNCTION dashboard_hourly_feedback_changed()
    """,
    # What is already stored.
    *(statement for statement in _fill("true").split(";") if statement.strip()),
)

DOWNGRADE: tuple[str, ...] = (
    "DROP TRIGGER IF EXISTS dashboard_hourly_feedback_update ON feedback",
    "DROP TRIGGER IF EXISTS dashboard_hourly_feedback_delete ON feedback",
    "DROP TRIGGER IF EXISTS dashboard_hourly_feedback_insert ON feedback",
    "DROP TRIGGER IF EXISTS dashboard_hourly_calls_truncate ON calls",
    "DROP TRIGGER IF EXISTS dashboard_hourly_calls_update ON calls",
    "DROP TRIGGER IF EXISTS dashboard_hourly_calls_delete ON calls",
    "DROP TRIGGER IF EXISTS dashboard_pending_insert ON calls",
    "DROP FUNCTION IF EXISTS dashboard_hourly_feedback_changed()",
    "DROP FUNCTION IF EXISTS dashboard_hourly_feedback_added()",
    "DROP FUNCTION IF EXISTS dashboard_hourly_calls_truncated()",
    "DROP FUNCTION IF EXISTS dashboard_hourly_calls_changed()",
    "DROP FUNCTION IF EXISTS dashboard_hourly_calls_removed()",
    "DROP FUNCTION IF EXISTS dashboard_pending_add()",
    "DROP FUNCTION IF EXISTS dashboard_hourly_rebuild(timestamptz[])",
    "DROP FUNCTION IF EXISTS dashboard_hourly_fold()",
    "DROP FUNCTION IF EXISTS dashboard_merge_bins(int[], int[])",
    "DROP FUNCTION IF EXISTS dashboard_dense_bins(int[], bigint[])",
    "DROP TABLE IF EXISTS dashboard_pending",
    "DROP TABLE IF EXISTS dashboard_hourly",
)
