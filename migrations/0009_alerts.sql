-- Alerts. This file starts with the contract between the alert engine and the notifier: `alert_events`, the
-- append-only log of what happened to alerts. The engine inserts a row in the same transaction as the state change
-- it describes and then calls `pg_notify('octoisp_alert_events', provider_id::text)`; the notifier (any instance)
-- claims undispatched rows with `FOR UPDATE SKIP LOCKED`, sets `dispatched_at`, and fans them out to channels by
-- the tenant's policies, grouping rows that share `group_key` within its grouping window.

CREATE TABLE alert_events (
    provider_id   uuid NOT NULL REFERENCES providers (id),
    id            bigint GENERATED ALWAYS AS IDENTITY,
    alert_id      uuid NOT NULL,
    rule_id       uuid,
    kind          text NOT NULL CHECK (kind IN ('firing', 'resolved', 'flapping', 'flap_ended', 'acknowledged')),
    severity      text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    device_id     uuid,
    pop_id        uuid,
    -- Rows sharing a key are sent as one message: `alert:<id>` for a lone alert; an alert inhibited by another
    -- (a device behind a POP whose uplink is down) carries the inhibiting alert's key.
    group_key     text NOT NULL CHECK (length(group_key) BETWEEN 1 AND 200),
    -- Why no message is sent for this row (NULL: notify).
    suppressed    text CHECK (suppressed IN ('silence', 'maintenance', 'flapping', 'inhibited')),
    rule_name     text NOT NULL,
    -- Human label of the target: device name or serial, interface, POP.
    target        text NOT NULL,
    -- Language-neutral facts the notifier renders per recipient language: metric, value, threshold, operator,
    -- unit, for_secs, occurrences, device/POP names, inhibited_count, ...
    facts         jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz,
    PRIMARY KEY (provider_id, id)
);
CREATE INDEX alert_events_undispatched ON alert_events (created_at) WHERE dispatched_at IS NULL;
CREATE INDEX alert_events_alert ON alert_events (provider_id, alert_id, id);
COMMENT ON TABLE alert_events IS
    'What happened to alerts, in order; the notifier''s input. Rows are never updated except dispatched_at.';

ALTER TABLE alert_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE alert_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON alert_events
    USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin())
    WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin());
GRANT SELECT, INSERT ON alert_events TO octoisp_app;
GRANT UPDATE (dispatched_at) ON alert_events TO octoisp_app;

-- Providers with undispatched events, for workers that serve every tenant: they then open a tenant transaction
-- per provider (the global-admin path stays reserved to audited operations).
CREATE FUNCTION octoisp_alert_event_providers() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$ SELECT DISTINCT provider_id FROM public.alert_events WHERE dispatched_at IS NULL $$;
REVOKE ALL ON FUNCTION octoisp_alert_event_providers() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION octoisp_alert_event_providers() TO octoisp_app;
