-- Tenancy foundation: the application role, the tenant helpers every row-level security policy uses, and the
-- Provider -> POP -> Customer -> Device hierarchy.
--
-- Conventions for every later migration (issue 3 extends these, it does not rework them):
-- * Every table holding tenant data has `provider_id uuid NOT NULL` (providers itself: `id`), ENABLE and FORCE
--   ROW LEVEL SECURITY, and one policy `tenant_isolation` built from `octoisp_tenant()` and
--   `octoisp_is_global_admin()`, so that the table owner is bound too.
-- * References between tenant tables are composite `(provider_id, x_id)` foreign keys, so a row can never point at
--   another provider's row even by mistake.
-- * Tables are owned by the migrating role. `octoisp_app` gets only the DML it needs, table by table; it owns
--   nothing, is not a member of the owner, and can neither bypass nor disable row-level security.
-- * The tenant is set per transaction with `set_config('app.provider_id', <uuid>, true)`. Unset, empty (what a
--   pooled connection shows after such a transaction ended) or not a uuid of the row: no rows.
-- * `app.global_admin = 'on'` (also transaction-local) passes every policy. Only the audited global-admin code
--   path sets it (controlplane `db::global_admin_tx`); SECURITY DEFINER functions that must look across tenants
--   before a tenant is known set it for their own duration only, with a pinned search_path.
-- * Nothing here names the database: tests create one database per test in a shared cluster.

-- The application role. Roles are cluster-wide and many databases (one per test) are migrated concurrently in one
-- cluster, so creation tolerates a concurrent creator, and an existing role is checked rather than altered.
DO $$
DECLARE
    r record;
BEGIN
    SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb INTO r FROM pg_roles WHERE rolname = 'octoisp_app';
    IF NOT FOUND THEN
        BEGIN
            CREATE ROLE octoisp_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB NOREPLICATION;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            -- Another database of this cluster created it at the same moment.
            NULL;
        END;
    ELSIF r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolcreatedb THEN
        RAISE EXCEPTION 'role octoisp_app exists with SUPERUSER, BYPASSRLS, CREATEROLE or CREATEDB; '
            'row-level security would not isolate tenants. Fix it: ALTER ROLE octoisp_app NOSUPERUSER NOBYPASSRLS '
            'NOCREATEROLE NOCREATEDB';
    END IF;
END
$$;

-- Grants are per database.
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO octoisp_app', current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO octoisp_app;

-- The tenant of the current transaction, or NULL. `nullif` matters: once a session has set the variable, it reads
-- back as '' after the transaction that set it locally ended. Plain SQL and STABLE, so policies inline it.
CREATE FUNCTION octoisp_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.provider_id', true), '')::uuid $$;

-- Whether the current transaction runs on the audited global-admin path. Never NULL.
CREATE FUNCTION octoisp_is_global_admin() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(current_setting('app.global_admin', true) = 'on', false) $$;

COMMENT ON FUNCTION octoisp_tenant() IS
    'Provider of the current transaction (app.provider_id, set transaction-locally), NULL when unset.';
COMMENT ON FUNCTION octoisp_is_global_admin() IS
    'True on the audited global-admin path (app.global_admin = on, transaction-local).';

CREATE TABLE providers (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    tier        text NOT NULL DEFAULT 'small' CHECK (tier IN ('small', 'medium', 'large')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE providers IS 'Tenants (ISPs). A provider sees only its own row.';

CREATE TABLE pops (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id uuid NOT NULL REFERENCES providers (id),
    slug        text NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, slug),
    UNIQUE (provider_id, id)
);
COMMENT ON TABLE pops IS 'Points of presence of a provider; one or more agents serve each.';

CREATE TABLE customers (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id  uuid NOT NULL REFERENCES providers (id),
    pop_id       uuid,
    name         text NOT NULL,
    external_ref text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, id),
    FOREIGN KEY (provider_id, pop_id) REFERENCES pops (provider_id, id)
);
CREATE UNIQUE INDEX customers_external_ref ON customers (provider_id, external_ref) WHERE external_ref IS NOT NULL;
COMMENT ON TABLE customers IS 'Subscribers of a provider (pop_id NULL until placed in a POP).';

CREATE TABLE devices (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id   uuid NOT NULL REFERENCES providers (id),
    pop_id        uuid NOT NULL,
    customer_id   uuid,
    device_key    text NOT NULL,
    vendor        text,
    model         text,
    serial_number text,
    oui           text,
    product_class text,
    firmware      text,
    mgmt_ip       inet,
    attrs         jsonb NOT NULL DEFAULT '{}',
    tags          text[] NOT NULL DEFAULT '{}',
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    inventory_at  timestamptz,
    UNIQUE (provider_id, pop_id, device_key),
    UNIQUE (provider_id, id),
    FOREIGN KEY (provider_id, pop_id) REFERENCES pops (provider_id, id),
    FOREIGN KEY (provider_id, customer_id) REFERENCES customers (provider_id, id)
);
CREATE INDEX devices_serial ON devices (provider_id, serial_number) WHERE serial_number IS NOT NULL;
CREATE INDEX devices_mgmt_ip ON devices (provider_id, mgmt_ip) WHERE mgmt_ip IS NOT NULL;
CREATE INDEX devices_customer ON devices (provider_id, customer_id) WHERE customer_id IS NOT NULL;
COMMENT ON COLUMN devices.device_key IS
    'Agent-scoped natural key (SeriesDef.device_key, Inventory.device_key), unique per provider and POP.';
COMMENT ON COLUMN devices.inventory_at IS 'Time of the newest inventory applied; older reports do not overwrite it.';

ALTER TABLE providers ENABLE ROW LEVEL SECURITY;
ALTER TABLE providers FORCE ROW LEVEL SECURITY;
-- A provider reads its own row; only the global-admin path creates or changes providers.
CREATE POLICY tenant_isolation ON providers FOR SELECT
    USING (id = octoisp_tenant() OR octoisp_is_global_admin());
CREATE POLICY global_admin_writes ON providers
    USING (octoisp_is_global_admin())
    WITH CHECK (octoisp_is_global_admin());

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['pops', 'customers', 'devices'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I '
                       'USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin()) '
                       'WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE ON providers, pops, customers, devices TO octoisp_app;
GRANT DELETE ON customers TO octoisp_app;
