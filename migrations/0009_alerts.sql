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

-- ---------------------------------------------------------------------------------------------------------------
-- The alert engine's own tables (everything below is the engine's; the notifier only reads alert_events).
--
-- Follows 0001/0006: `provider_id` on every row, ENABLE + FORCE ROW LEVEL SECURITY, one `tenant_isolation` policy,
-- composite `(provider_id, x_id)` foreign keys, DML granted table by table to octoisp_app.

ALTER TABLE alert_events ADD COLUMN event_ts timestamptz;
COMMENT ON COLUMN alert_events.event_ts IS
    'Time of the transition in sample time (the sample or the deadline that caused it); created_at is commit time.';

INSERT INTO permissions (code, module, action, description, global_only) VALUES
    ('alerts:manage', 'alerts', 'manage', 'Create and change alert rules, silences and maintenance windows.', false);
INSERT INTO role_permissions (provider_id, role_id, permission) VALUES
    (NULL, '00000000-0000-4000-8000-000000000001', 'alerts:manage'),
    (NULL, '00000000-0000-4000-8000-000000000002', 'alerts:manage'),
    (NULL, '00000000-0000-4000-8000-000000000003', 'alerts:manage');

-- Rules. A rule applies to every series of its metric within its scope (the whole provider, a POP, a device group
-- or one device). Rules sharing `rule_key` override each other: for a given series, the most specific scope wins
-- (device > group > POP > provider), so "cpu above 90" for the provider and "cpu above 98" for one busy router
-- are two rows with one key.
CREATE TABLE alert_rules (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id      uuid NOT NULL REFERENCES providers (id),
    rule_key         text NOT NULL CHECK (rule_key ~ '^[a-z0-9][a-z0-9_.-]{0,99}$'),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scope            text NOT NULL DEFAULT 'provider' CHECK (scope IN ('provider', 'pop', 'group', 'device')),
    scope_id         uuid,
    -- The metric evaluated (`cpu.load_percent`); for `offline`, any sample of the device counts.
    metric           text NOT NULL CHECK (length(metric) BETWEEN 1 AND 200),
    kind             text NOT NULL CHECK (kind IN ('threshold', 'absence', 'offline', 'rate', 'optical')),
    -- threshold and rate (per second): fire when `value op threshold`; recover when `value rop recover_threshold`
    -- (hysteresis: fire at > 90, recover at < 80); NULL recover_threshold: recover when the fire condition is false.
    op               text CHECK (op IN ('>', '>=', '<', '<=', '==', '!=')),
    threshold        double precision,
    recover_threshold double precision,
    -- optical: fire outside [low, high]; recover inside [low + hysteresis, high - hysteresis].
    low              double precision,
    high             double precision,
    hysteresis       double precision NOT NULL DEFAULT 0 CHECK (hysteresis >= 0),
    -- absence/offline: no sample for this long fires.
    absence_secs     integer CHECK (absence_secs BETWEEN 1 AND 604800),
    severity         text NOT NULL DEFAULT 'warning' CHECK (severity IN ('info', 'warning', 'critical')),
    for_secs         integer NOT NULL DEFAULT 0 CHECK (for_secs BETWEEN 0 AND 604800),
    recover_for_secs integer NOT NULL DEFAULT 0 CHECK (recover_for_secs BETWEEN 0 AND 604800),
    -- A NaN sample (a missed poll): keep the last state, resolve, or count as firing.
    missing_data     text NOT NULL DEFAULT 'keep' CHECK (missing_data IN ('keep', 'resolve', 'alert')),
    -- Flap detection as in Nagios: the last `flap_window` observed states, weighted (older 0.8 .. newest 1.2);
    -- flapping starts above flap_high percent of weighted changes and ends below flap_low.
    flap_enabled     boolean NOT NULL DEFAULT true,
    flap_window      integer NOT NULL DEFAULT 21 CHECK (flap_window BETWEEN 3 AND 100),
    flap_high        double precision NOT NULL DEFAULT 50 CHECK (flap_high > 0 AND flap_high <= 100),
    flap_low         double precision NOT NULL DEFAULT 25 CHECK (flap_low >= 0),
    -- An alert of this rule means the POP's uplink is down: it inhibits the alerts of every device of the POP.
    is_uplink        boolean NOT NULL DEFAULT false,
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, id),
    CHECK ((scope = 'provider') = (scope_id IS NULL)),
    CHECK (flap_low < flap_high),
    CHECK (kind NOT IN ('threshold', 'rate') OR (op IS NOT NULL AND threshold IS NOT NULL)),
    CHECK (kind <> 'optical' OR (low IS NOT NULL AND high IS NOT NULL AND low < high)),
    CHECK (kind NOT IN ('absence', 'offline') OR absence_secs IS NOT NULL)
);
CREATE UNIQUE INDEX alert_rules_key_scope
    ON alert_rules (provider_id, rule_key, scope, coalesce(scope_id, '00000000-0000-0000-0000-000000000000'));
COMMENT ON TABLE alert_rules IS
    'Alert rules; for one series the most specific scope among the rules sharing rule_key wins.';

-- Alerts: one row per rule and target. It fires, resolves and fires again (occurrences counts the firings); so
-- there is at most one open alert per rule and target by construction, and every instance that evaluates the
-- same target meets on this row. `changed_ts` (sample time of the last transition) and `version` guard every
-- transition: an instance whose view is older than the row's loses and writes nothing.
CREATE TABLE alerts (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id     uuid NOT NULL REFERENCES providers (id),
    rule_id         uuid NOT NULL,
    -- `series:<id>` or `device:<uuid>`.
    target_key      text NOT NULL CHECK (length(target_key) BETWEEN 1 AND 200),
    target          text NOT NULL,
    device_id       uuid,
    pop_id          uuid,
    series_id       bigint,
    state           text NOT NULL CHECK (state IN ('firing', 'resolved')),
    severity        text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    value           double precision,
    occurrences     integer NOT NULL DEFAULT 1,
    flapping        boolean NOT NULL DEFAULT false,
    flap_changed_ts timestamptz NOT NULL DEFAULT '-infinity',
    inhibited_by    uuid,
    acknowledged_by uuid,
    acknowledged_at timestamptz,
    started_at      timestamptz NOT NULL,
    changed_ts      timestamptz NOT NULL,
    resolved_at     timestamptz,
    manual          boolean NOT NULL DEFAULT false,
    facts           jsonb NOT NULL DEFAULT '{}',
    version         bigint NOT NULL DEFAULT 1,
    UNIQUE (provider_id, id),
    UNIQUE (provider_id, rule_id, target_key),
    FOREIGN KEY (provider_id, rule_id) REFERENCES alert_rules (provider_id, id) ON DELETE CASCADE
);
CREATE INDEX alerts_firing ON alerts (provider_id, id) WHERE state = 'firing';
CREATE INDEX alerts_pop ON alerts (provider_id, pop_id) WHERE state = 'firing';
CREATE INDEX alerts_device ON alerts (provider_id, device_id, id);
COMMENT ON TABLE alerts IS
    'One row per rule and target; its history is alert_events (every transition, append-only).';

-- Silences: suppress notifications of matching alerts between starts_at and ends_at (NULL matcher: any).
CREATE TABLE alert_silences (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id uuid NOT NULL REFERENCES providers (id),
    rule_id     uuid,
    device_id   uuid,
    pop_id      uuid,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    created_by  uuid,
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, id),
    CHECK (starts_at < ends_at),
    FOREIGN KEY (provider_id, rule_id) REFERENCES alert_rules (provider_id, id) ON DELETE CASCADE,
    FOREIGN KEY (provider_id, device_id) REFERENCES devices (provider_id, id) ON DELETE CASCADE,
    FOREIGN KEY (provider_id, pop_id) REFERENCES pops (provider_id, id) ON DELETE CASCADE
);
CREATE INDEX alert_silences_active ON alert_silences (provider_id, ends_at);

-- Maintenance windows: everything in the scope is under maintenance between starts_at and ends_at.
CREATE TABLE alert_maintenance (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id uuid NOT NULL REFERENCES providers (id),
    scope       text NOT NULL CHECK (scope IN ('provider', 'pop', 'group', 'device')),
    scope_id    uuid,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    created_by  uuid,
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, id),
    CHECK (starts_at < ends_at),
    CHECK ((scope = 'provider') = (scope_id IS NULL))
);
CREATE INDEX alert_maintenance_active ON alert_maintenance (provider_id, ends_at);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['alert_rules', 'alerts', 'alert_silences', 'alert_maintenance'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I '
                       'USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin()) '
                       'WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON alert_rules, alert_silences, alert_maintenance TO octoisp_app;
GRANT SELECT, INSERT, UPDATE ON alerts TO octoisp_app;

-- The engine caches rules, silences, maintenance windows and group memberships per provider; a change tells
-- every instance to reload that provider (`NOTIFY octoisp_alert_config, '<provider id>'`).
CREATE FUNCTION octoisp_alert_config_changed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('octoisp_alert_config', coalesce(NEW.provider_id, OLD.provider_id)::text);
    RETURN NULL;
END
$$;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['alert_rules', 'alert_silences', 'alert_maintenance', 'device_group_members'] LOOP
        EXECUTE format('CREATE TRIGGER alert_config_changed AFTER INSERT OR UPDATE OR DELETE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION octoisp_alert_config_changed()', t);
    END LOOP;
END
$$;

-- Providers with enabled rules, for the engine's absence timer and its start (it then opens a tenant transaction
-- per provider).
CREATE FUNCTION octoisp_alert_rule_providers() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$ SELECT DISTINCT provider_id FROM public.alert_rules WHERE enabled $$;
REVOKE ALL ON FUNCTION octoisp_alert_rule_providers() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION octoisp_alert_rule_providers() TO octoisp_app;
