-- What agents send: series and their samples (day-partitioned), events, inventory, TR-069 results, command
-- results, drop reports, and the per-agent record of stored batches that makes ingest idempotent.
--
-- Samples and row-level security. PostgreSQL refuses `COPY ... FROM` into a table on which row-level security
-- applies to the current role ("COPY FROM not supported with row-level security"), and COPY is the ingest hot path.
-- So:
-- * the parent `samples` has RLS enabled and forced, like every tenant table: every read goes through it and sees
--   only the tenant's rows;
-- * its partitions have no RLS of their own (a partition reached through its parent is filtered by the parent's
--   policy); `octoisp_app` may only INSERT into a partition (COPY), never read, update or delete one directly;
-- * each partition carries a CHECK constraint `octoisp_may_write(provider_id)`, NOT VALID, that refuses a row of
--   another provider than the transaction's tenant, in place of the WITH CHECK policy COPY cannot use. NOT VALID
--   keeps the planner from relying on it and pg_dump restores it after the data;
-- * partitions are created on demand by `octoisp_sample_partitions(days)`, SECURITY DEFINER, which the store calls
--   in a transaction of its own before the batch transaction (it serializes creators with an advisory lock held
--   until its transaction ends, and attaches with SHARE UPDATE EXCLUSIVE so readers and writers are not blocked).
-- To move to TimescaleDB later: make `samples` a hypertable with the same columns and have the function return
-- the hypertable for every day; readers do not change.

-- True when the current transaction may write a row of this provider. Never NULL (a NULL CHECK passes).
CREATE FUNCTION octoisp_may_write(p_provider_id uuid) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(p_provider_id = octoisp_tenant(), false) OR octoisp_is_global_admin() $$;

CREATE TABLE series (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider_id uuid NOT NULL REFERENCES providers (id),
    agent_id    uuid NOT NULL,
    local_id    bigint NOT NULL CHECK (local_id >= 0),
    device_id   uuid NOT NULL,
    metric      text NOT NULL,
    labels      jsonb NOT NULL DEFAULT '{}',
    kind        text NOT NULL CHECK (kind IN ('gauge', 'counter')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, local_id),
    FOREIGN KEY (provider_id, agent_id) REFERENCES agents (provider_id, id),
    FOREIGN KEY (provider_id, device_id) REFERENCES devices (provider_id, id)
);
CREATE INDEX series_device ON series (provider_id, device_id, metric);
COMMENT ON COLUMN series.local_id IS 'SeriesDef.id: the agent-local id samples refer to.';

CREATE TABLE samples (
    provider_id uuid NOT NULL,
    series_id   bigint NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL
) PARTITION BY RANGE (ts);
CREATE INDEX samples_series_ts ON samples (series_id, ts);
COMMENT ON TABLE samples IS
    'Metric samples, one partition per UTC day (samples_pYYYYMMDD), created by octoisp_sample_partitions(). '
    'No foreign key to series: the store resolves series ids itself, and a key check per row would halve ingest.';

CREATE FUNCTION octoisp_sample_partitions(p_days date[])
    RETURNS TABLE (day date, partition_name text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET TimeZone = 'UTC'
    SET lock_timeout = '30s'
    AS $$
DECLARE
    d      date;
    locked boolean := false;
    lo     timestamptz;
    hi     timestamptz;
BEGIN
    IF p_days IS NULL OR cardinality(p_days) NOT BETWEEN 1 AND 64 THEN
        RAISE EXCEPTION 'octoisp_sample_partitions takes 1 to 64 days, got %', coalesce(cardinality(p_days), 0)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR d IN SELECT DISTINCT x FROM unnest(p_days) AS x ORDER BY 1 LOOP
        IF d IS NULL OR d < date '2000-01-01' OR d > current_date + 7 THEN
            RAISE EXCEPTION 'no sample partition for day % (accepted: 2000-01-01 to today + 7 days)', d
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        day := d;
        partition_name := 'samples_p' || to_char(d, 'YYYYMMDD');
        IF to_regclass('public.' || partition_name) IS NULL THEN
            IF NOT locked THEN
                PERFORM pg_advisory_xact_lock(hashtext('octoisp_sample_partitions'));
                locked := true;
            END IF;
            lo := d::timestamp AT TIME ZONE 'UTC';
            hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
            BEGIN
                EXECUTE format('CREATE TABLE public.%I (LIKE public.samples INCLUDING DEFAULTS)', partition_name);
                -- Lets ATTACH skip its validation scan; dropped right after so rows are not checked twice.
                EXECUTE format('ALTER TABLE public.%I ADD CONSTRAINT %I CHECK (ts >= %L AND ts < %L)',
                               partition_name, partition_name || '_range', lo, hi);
                EXECUTE format('ALTER TABLE public.samples ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                               partition_name, lo, hi);
                EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT %I', partition_name, partition_name || '_range');
                EXECUTE format('ALTER TABLE public.%I ADD CONSTRAINT %I CHECK (public.octoisp_may_write(provider_id)) '
                               'NOT VALID', partition_name, partition_name || '_tenant');
                EXECUTE format('REVOKE ALL ON public.%I FROM PUBLIC', partition_name);
                EXECUTE format('GRANT INSERT ON public.%I TO octoisp_app', partition_name);
            EXCEPTION WHEN duplicate_table OR unique_violation THEN
                -- Created by another session between the lookup and the lock: it did all of the above.
                NULL;
            END;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION octoisp_sample_partitions(date[]) IS
    'Returns the samples partition of each UTC day given, creating missing ones. Call it in a transaction of its '
    'own: the creation lock is held until that transaction ends.';

CREATE TABLE events (
    provider_id uuid NOT NULL REFERENCES providers (id),
    id          uuid NOT NULL,
    agent_id    uuid NOT NULL,
    device_id   uuid,
    ts          timestamptz NOT NULL,
    kind        text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    message     text NOT NULL,
    attrs       jsonb NOT NULL DEFAULT '{}',
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_id, id),
    FOREIGN KEY (provider_id, agent_id) REFERENCES agents (provider_id, id),
    FOREIGN KEY (provider_id, device_id) REFERENCES devices (provider_id, id)
);
CREATE INDEX events_ts ON events (provider_id, ts DESC);
CREATE INDEX events_device ON events (provider_id, device_id, ts DESC) WHERE device_id IS NOT NULL;
COMMENT ON COLUMN events.id IS 'Agent-generated; a replayed event is stored once (ON CONFLICT DO NOTHING).';

CREATE TABLE device_inventory_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider_id   uuid NOT NULL REFERENCES providers (id),
    device_id     uuid NOT NULL,
    agent_id      uuid NOT NULL,
    ts            timestamptz NOT NULL,
    vendor        text,
    model         text,
    serial_number text,
    oui           text,
    product_class text,
    firmware      text,
    mgmt_ip       inet,
    attrs         jsonb NOT NULL DEFAULT '{}',
    received_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (provider_id, agent_id) REFERENCES agents (provider_id, id),
    FOREIGN KEY (provider_id, device_id) REFERENCES devices (provider_id, id)
);
CREATE INDEX device_inventory_log_device ON device_inventory_log (provider_id, device_id, ts DESC);
COMMENT ON TABLE device_inventory_log IS
    'Every inventory report as received; devices holds the newest one (by report time).';

CREATE TABLE tr069_results (
    provider_id  uuid NOT NULL REFERENCES providers (id),
    id           uuid NOT NULL,
    agent_id     uuid NOT NULL,
    device_id    uuid NOT NULL,
    ts           timestamptz NOT NULL,
    task_id      uuid,
    kind         text NOT NULL,
    ok           boolean NOT NULL,
    fault_code   bigint,
    fault_string text,
    parameters   jsonb NOT NULL DEFAULT '{}',
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_id, id),
    FOREIGN KEY (provider_id, agent_id) REFERENCES agents (provider_id, id),
    FOREIGN KEY (provider_id, device_id) REFERENCES devices (provider_id, id)
);
CREATE INDEX tr069_results_device ON tr069_results (provider_id, device_id, ts DESC);
CREATE INDEX tr069_results_task ON tr069_results (provider_id, task_id) WHERE task_id IS NOT NULL;

CREATE TABLE command_results (
    provider_id uuid NOT NULL REFERENCES providers (id),
    command_id  uuid NOT NULL,
    agent_id    uuid NOT NULL,
    ts          timestamptz NOT NULL,
    status      text NOT NULL CHECK (status IN ('succeeded', 'failed', 'expired', 'rejected')),
    output      jsonb NOT NULL,
    error       text,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_id, command_id),
    FOREIGN KEY (provider_id, agent_id) REFERENCES agents (provider_id, id)
);
COMMENT ON COLUMN command_results.output IS
    'CommandResult.output_json; text that is not JSON is kept as a JSON string.';

CREATE TABLE agent_drop_reports (
    provider_id     uuid NOT NULL REFERENCES providers (id),
    id              uuid NOT NULL,
    agent_id        uuid NOT NULL,
    from_ts         timestamptz NOT NULL,
    to_ts           timestamptz NOT NULL,
    samples_dropped bigint NOT NULL,
    records_refused bigint NOT NULL,
    reason          text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_id, id),
    FOREIGN KEY (provider_id, agent_id) REFERENCES agents (provider_id, id)
);
CREATE INDEX agent_drop_reports_agent ON agent_drop_reports (provider_id, agent_id, to_ts DESC);

CREATE TABLE ingested_batches (
    agent_id     uuid NOT NULL,
    seq          bigint NOT NULL CHECK (seq >= 0),
    provider_id  uuid NOT NULL REFERENCES providers (id),
    stored_at    timestamptz NOT NULL DEFAULT now(),
    sample_count bigint NOT NULL,
    record_count bigint NOT NULL,
    PRIMARY KEY (agent_id, seq),
    FOREIGN KEY (provider_id, agent_id) REFERENCES agents (provider_id, id)
);
COMMENT ON TABLE ingested_batches IS
    'Batches stored, per agent; rows below agents.settled_below are deleted (that mark covers them).';

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['series', 'samples', 'events', 'device_inventory_log', 'tr069_results',
                             'command_results', 'agent_drop_reports', 'ingested_batches'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I '
                       'USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin()) '
                       'WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT ON series, samples, events, device_inventory_log, tr069_results, command_results,
    agent_drop_reports, ingested_batches TO octoisp_app;
GRANT DELETE ON ingested_batches TO octoisp_app;

REVOKE ALL ON FUNCTION octoisp_sample_partitions(date[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION octoisp_sample_partitions(date[]) TO octoisp_app;
