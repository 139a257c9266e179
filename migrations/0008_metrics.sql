-- Metric rollups: 5 minutes, 1 hour, 1 day, 7 days (ISO weeks, from Monday 00:00 UTC) and 30 days (calendar
-- months, UTC), computed from `samples` by the workers' rollup job (controlplane/src/metrics/rollup.rs), read by
-- the series API (controlplane/src/api/series.rs). Full description: docs/METRICS.md.
--
-- Every rollup table has the same columns, one row per (series, bucket):
--   provider_id, series_id, bucket (start, UTC), min, max, sum, count, last (the value at the latest ts of the
--   bucket; ties broken by the larger value), last_ts, p95.
-- NaN samples are left out of every rollup (a bucket of only NaN has no row).
--
-- p95, the ISP 95th-percentile billing definition, nearest rank (`percentile_disc(0.95)`: sort ascending, the
-- value at position ceil(0.95 * n)):
--   * at 5 min: over the raw samples of the bucket;
--   * at 1 h, 1 d, 7 d and 30 d: over the 5-minute averages (sum / count of each `rollup_5m` row) of the bucket.
-- Because of that, every level from 1 h up is computed from `rollup_5m` (min, max, sum, count and last too: they
-- are read anyway), so a coarse bucket can be (re)computed only while the 5-minute rows of its whole span are
-- retained (default 35 days, longer than a month).
--
-- How rollups are kept up to date (the job's invariants):
--   * the ingest appends, in the batch's transaction, one `rollup_pending (provider, '5m', bucket)` row per
--     distinct 5-minute bucket of the batch. Append-only: concurrent ingest transactions never contend on a row;
--   * the job (any number of instances) takes, per provider in a tenant transaction, the pending rows of closed
--     buckets (bucket end + grace <= now()) with DELETE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED), takes
--     a transaction-level advisory lock per (provider, level, bucket) in bucket order, recomputes each bucket
--     whole from its source with one INSERT ... SELECT ... GROUP BY series_id ... ON CONFLICT DO UPDATE, and
--     appends pending rows for the parent buckets (5m -> 1h -> 1d -> 7d and 30d), all in that one transaction:
--     a job killed halfway leaves nothing half done, and a late sample re-marks its (old) bucket, whose recompute
--     then cascades upwards;
--   * the advisory lock is taken before the recompute statement starts, so of two jobs recomputing one bucket the
--     second one's statement sees everything the first one saw and more: the last commit is never stale.
--
-- Partitions: by range of `bucket`: rollup_5m per 7 days (Monday to Monday, `rollup_5m_pYYYYMMDD`), rollup_1h per
-- calendar month (`rollup_1h_pYYYYMM`), rollup_1d/7d/30d per calendar year (`rollup_<level>_pYYYY`), created on
-- demand by `octoisp_rollup_partitions` (SECURITY DEFINER) and dropped whole by `octoisp_drop_metric_partitions`
-- (retention). Unlike `samples`, rollups are written with INSERT through the parent, so row-level security applies
-- to reads and writes alike and `octoisp_app` has no privilege on any partition.
--
-- TimescaleDB: these tables are what a continuous aggregate over `samples` would materialize (time_bucket of
-- 5 minutes with min/max/sum/count/last and a percentile), and the coarser levels hierarchical continuous
-- aggregates over it; with the same column names the API would not change. Until then this is plain PostgreSQL.

-- The 5-minute job reads a provider's raw samples through `samples_series_ts (series_id, ts)`, one range per
-- series of the provider: no second index on `samples`, whose every index insert slows the ingest COPY.

-- The levels, as text everywhere: '5m', '1h', '1d', '7d', '30d'.
CREATE FUNCTION octoisp_rollup_level_ok(p_level text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT p_level IN ('5m', '1h', '1d', '7d', '30d') $$;

-- Start of the bucket of `p_level` holding `p_ts` (UTC, whatever the session's TimeZone).
CREATE FUNCTION octoisp_rollup_bucket(p_level text, p_ts timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE p_level
        WHEN '5m' THEN date_bin('5 minutes', p_ts, timestamptz '2000-01-03 00:00:00+00')
        WHEN '1h' THEN date_bin('1 hour', p_ts, timestamptz '2000-01-03 00:00:00+00')
        WHEN '1d' THEN date_bin('1 day', p_ts, timestamptz '2000-01-03 00:00:00+00')
        -- 2000-01-03 was a Monday: ISO weeks.
        WHEN '7d' THEN date_bin('7 days', p_ts, timestamptz '2000-01-03 00:00:00+00')
        WHEN '30d' THEN date_trunc('month', p_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    END
$$;

-- End (exclusive) of the bucket of `p_level` starting at `p_bucket`.
CREATE FUNCTION octoisp_rollup_bucket_end(p_level text, p_bucket timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE p_level
        WHEN '5m' THEN p_bucket + interval '5 minutes'
        WHEN '1h' THEN p_bucket + interval '1 hour'
        WHEN '1d' THEN p_bucket + interval '1 day'
        WHEN '7d' THEN p_bucket + interval '7 days'
        WHEN '30d' THEN ((p_bucket AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC'
    END
$$;

DO $$
DECLARE
    l text;
BEGIN
    FOREACH l IN ARRAY ARRAY['5m', '1h', '1d', '7d', '30d'] LOOP
        EXECUTE format($f$
            CREATE TABLE %1$I (
                provider_id uuid NOT NULL,
                series_id   bigint NOT NULL,
                bucket      timestamptz NOT NULL,
                min         double precision NOT NULL,
                max         double precision NOT NULL,
                sum         double precision NOT NULL,
                count       bigint NOT NULL CHECK (count > 0),
                last        double precision NOT NULL,
                last_ts     timestamptz NOT NULL,
                p95         double precision NOT NULL,
                PRIMARY KEY (series_id, bucket)
            ) PARTITION BY RANGE (bucket)$f$, 'rollup_' || l);
        -- The job reads and writes a provider's buckets across all its series.
        EXECUTE format('CREATE INDEX %I ON %I (provider_id, bucket)', 'rollup_' || l || '_provider_bucket',
                       'rollup_' || l);
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', 'rollup_' || l);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', 'rollup_' || l);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I '
                       'USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin()) '
                       'WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin())', 'rollup_' || l);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I TO octoisp_app', 'rollup_' || l);
        EXECUTE format('COMMENT ON TABLE %I IS %L', 'rollup_' || l,
                       'Rollup of samples per series and ' || l || ' bucket (see migrations/0008_metrics.sql). '
                       'p95: nearest-rank 95th percentile of the raw samples (5m) or of the 5-minute averages.');
    END LOOP;
END
$$;

-- Buckets whose rollup must be (re)computed. Append-only for the ingest; the job deletes what it claimed.
CREATE TABLE rollup_pending (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider_id uuid NOT NULL REFERENCES providers (id),
    level       text NOT NULL CHECK (octoisp_rollup_level_ok(level)),
    bucket      timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rollup_pending_work ON rollup_pending (provider_id, level, bucket);
ALTER TABLE rollup_pending ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollup_pending FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rollup_pending
    USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin())
    WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin());
GRANT SELECT, INSERT, DELETE ON rollup_pending TO octoisp_app;
-- SELECT ... FOR UPDATE SKIP LOCKED (the job's claim) needs UPDATE on at least one column.
GRANT UPDATE (created_at) ON rollup_pending TO octoisp_app;
COMMENT ON TABLE rollup_pending IS
    'Rollup buckets to recompute: one row per (batch or child bucket, bucket), duplicates expected.';

-- Providers with pending rollup work on a bucket closed `p_grace` ago, for the workers (which then open a tenant
-- transaction per provider).
CREATE FUNCTION octoisp_rollup_providers(p_grace interval) RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
    SELECT DISTINCT provider_id FROM public.rollup_pending
    WHERE public.octoisp_rollup_bucket_end(level, bucket) + p_grace <= now()
$$;
REVOKE ALL ON FUNCTION octoisp_rollup_providers(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION octoisp_rollup_providers(interval) TO octoisp_app;

-- Partition of a level holding `p_bucket`: (name, lower bound, upper bound).
CREATE FUNCTION octoisp_rollup_partition_of(p_level text, p_bucket timestamptz,
                                            OUT name text, OUT lo timestamptz, OUT hi timestamptz)
    LANGUAGE plpgsql IMMUTABLE
    SET TimeZone = 'UTC'
    AS $$
BEGIN
    IF p_level = '5m' THEN
        lo := date_bin('7 days', p_bucket, timestamptz '2000-01-03 00:00:00+00');
        hi := lo + interval '7 days';
        name := 'rollup_5m_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD');
    ELSIF p_level = '1h' THEN
        lo := date_trunc('month', p_bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
        hi := ((lo AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
        name := 'rollup_1h_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMM');
    ELSIF p_level IN ('1d', '7d', '30d') THEN
        lo := date_trunc('year', p_bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
        hi := ((lo AT TIME ZONE 'UTC') + interval '1 year') AT TIME ZONE 'UTC';
        name := 'rollup_' || p_level || '_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYY');
    ELSE
        RAISE EXCEPTION 'unknown rollup level %', p_level USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Makes sure the partitions of `p_level` holding the given buckets exist; returns their names. Call it in a
-- transaction of its own: the creation lock is held until that transaction ends.
CREATE FUNCTION octoisp_rollup_partitions(p_level text, p_buckets timestamptz[])
    RETURNS SETOF text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET TimeZone = 'UTC'
    SET lock_timeout = '30s'
    AS $$
DECLARE
    b      timestamptz;
    p      record;
    locked boolean := false;
    seen   text[] := '{}';
BEGIN
    IF NOT public.octoisp_rollup_level_ok(p_level) THEN
        RAISE EXCEPTION 'unknown rollup level %', p_level USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_buckets IS NULL OR cardinality(p_buckets) NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'octoisp_rollup_partitions takes 1 to 10000 buckets, got %', coalesce(cardinality(p_buckets), 0)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR b IN SELECT DISTINCT x FROM unnest(p_buckets) AS x ORDER BY 1 LOOP
        IF b IS NULL OR b < timestamptz '2000-01-01 00:00:00+00' OR b > now() + interval '8 days' THEN
            RAISE EXCEPTION 'no rollup partition for bucket % (accepted: 2000-01-01 to now + 8 days)', b
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        p := public.octoisp_rollup_partition_of(p_level, b);
        CONTINUE WHEN p.name = ANY (seen);
        seen := seen || p.name;
        IF to_regclass('public.' || p.name) IS NULL THEN
            IF NOT locked THEN
                PERFORM pg_advisory_xact_lock(hashtext('octoisp_rollup_partitions'));
                locked := true;
            END IF;
            BEGIN
                EXECUTE format('CREATE TABLE public.%I (LIKE public.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', p.name,
                               'rollup_' || p_level);
                EXECUTE format('ALTER TABLE public.%I ADD CONSTRAINT %I CHECK (bucket >= %L AND bucket < %L)',
                               p.name, p.name || '_range', p.lo, p.hi);
                EXECUTE format('ALTER TABLE public.%I ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                               'rollup_' || p_level, p.name, p.lo, p.hi);
                EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT %I', p.name, p.name || '_range');
                EXECUTE format('REVOKE ALL ON public.%I FROM PUBLIC', p.name);
            EXCEPTION WHEN duplicate_table OR unique_violation THEN
                NULL; -- created concurrently
            END;
        END IF;
        RETURN NEXT p.name;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION octoisp_rollup_partitions(text, timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION octoisp_rollup_partitions(text, timestamptz[]) TO octoisp_app;

-- Retention: drops the partitions of `p_level` ('raw' = samples, or a rollup level) whose upper bound is at or
-- before `p_before`, returns their names. Partitions hold every provider's rows, so this is one narrow SECURITY
-- DEFINER function rather than a privilege: it refuses a cutoff later than one day ago, so the partition being
-- written (today's, this week's, this month's, this year's) is never dropped.
CREATE FUNCTION octoisp_drop_metric_partitions(p_level text, p_before timestamptz)
    RETURNS SETOF text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET TimeZone = 'UTC'
    SET lock_timeout = '30s'
    AS $$
DECLARE
    parent text;
    r      record;
    hi     timestamptz;
BEGIN
    IF p_level = 'raw' THEN
        parent := 'samples';
    ELSIF public.octoisp_rollup_level_ok(p_level) THEN
        parent := 'rollup_' || p_level;
    ELSE
        RAISE EXCEPTION 'unknown metric level %', p_level USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_before IS NULL OR p_before > now() - interval '1 day' THEN
        RAISE EXCEPTION 'retention cutoff % is later than one day ago', p_before
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR r IN
        SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = ('public.' || parent)::regclass
        ORDER BY 1
    LOOP
        -- FOR VALUES FROM ('...') TO ('...'): the upper bound is the last quoted literal.
        hi := substring(r.bound FROM '''([^'']*)''\)$')::timestamptz;
        IF hi IS NOT NULL AND hi <= p_before THEN
            EXECUTE format('DROP TABLE public.%I', r.name);
            RETURN NEXT r.name;
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION octoisp_drop_metric_partitions(text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION octoisp_drop_metric_partitions(text, timestamptz) TO octoisp_app;
