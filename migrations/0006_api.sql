-- What the HTTP API needs on top of the tenancy schema: device names, device groups and their members, the
-- deletes the API offers, and one index per API filter, every one led by `provider_id` (RLS adds
-- `provider_id = octoisp_tenant()` to each query, and the handlers filter by provider too).
--
-- Follows the conventions of 0001: `provider_id` on every tenant row, ENABLE + FORCE ROW LEVEL SECURITY, one
-- `tenant_isolation` policy, composite `(provider_id, x_id)` foreign keys, DML granted table by table.
--
-- Lists are keyset-paginated on `id`, so each filter index ends with `id`: `WHERE provider_id = $1 AND vendor = $2
-- AND id > $cursor ORDER BY id LIMIT n` is one index range scan.

-- btree_gin lets the GIN index of tags be led by provider_id. It is a trusted extension (no superuser needed).
CREATE EXTENSION IF NOT EXISTS btree_gin;

ALTER TABLE devices ADD COLUMN name text CHECK (name IS NULL OR length(name) BETWEEN 1 AND 200);
COMMENT ON COLUMN devices.name IS 'Display name set by an operator (NULL: the console shows the serial or key).';

CREATE TABLE device_groups (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id uuid NOT NULL REFERENCES providers (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, name),
    UNIQUE (provider_id, id)
);
COMMENT ON TABLE device_groups IS 'Named sets of devices of a provider (targets of bulk actions and views).';

CREATE TABLE device_group_members (
    provider_id uuid NOT NULL REFERENCES providers (id),
    group_id    uuid NOT NULL,
    device_id   uuid NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_id, group_id, device_id),
    FOREIGN KEY (provider_id, group_id) REFERENCES device_groups (provider_id, id) ON DELETE CASCADE,
    FOREIGN KEY (provider_id, device_id) REFERENCES devices (provider_id, id) ON DELETE CASCADE
);
CREATE INDEX device_group_members_device ON device_group_members (provider_id, device_id);
COMMENT ON TABLE device_group_members IS 'Membership of devices in device groups (same provider by construction).';

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['device_groups', 'device_group_members'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I '
                       'USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin()) '
                       'WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON device_groups TO octoisp_app;
GRANT SELECT, INSERT, DELETE ON device_group_members TO octoisp_app;
-- The API deletes POPs (refused while anything refers to them) and devices (their group memberships go with them).
GRANT DELETE ON pops, devices TO octoisp_app;

-- Device filters. Prefix searches use text_pattern_ops so `LIKE 'abc%'` is an index range whatever the collation.
CREATE INDEX devices_serial_prefix ON devices (provider_id, serial_number text_pattern_ops, id)
    WHERE serial_number IS NOT NULL;
CREATE INDEX devices_name_prefix ON devices (provider_id, name text_pattern_ops, id) WHERE name IS NOT NULL;
CREATE INDEX devices_vendor ON devices (provider_id, vendor, id) WHERE vendor IS NOT NULL;
CREATE INDEX devices_pop ON devices (provider_id, pop_id, id);
CREATE INDEX devices_last_seen ON devices (provider_id, last_seen);
CREATE INDEX devices_tags ON devices USING gin (provider_id, tags);
-- mgmt_ip: `devices_mgmt_ip (provider_id, mgmt_ip)` of 0001 serves both `=` and `<<=` (btree network ranges).

-- Other lists.
CREATE INDEX customers_pop ON customers (provider_id, pop_id, id) WHERE pop_id IS NOT NULL;
CREATE INDEX customers_name_prefix ON customers (provider_id, name text_pattern_ops, id);
CREATE INDEX agents_list ON agents (provider_id, id);
