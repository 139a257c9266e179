-- Device search at scale (1,000,000 devices): lists walk an index in id order and test each filter on index
-- tuples, fetching from the heap only the rows of the page. `devices_list` carries every filtered column, so a
-- filter that keeps one device in twenty costs twenty index tuples per listed device, not twenty heap fetches
-- (see controlplane/src/api/device_search.rs).
CREATE INDEX devices_list ON devices (provider_id, id)
    INCLUDE (pop_id, vendor, tags, mgmt_ip, last_seen, serial_number, name);
-- Filters that combine vendor with tags, status or an address range walk the vendor index the same way.
DROP INDEX devices_vendor;
CREATE INDEX devices_vendor ON devices (provider_id, vendor, id) INCLUDE (pop_id, tags, mgmt_ip, last_seen)
    WHERE vendor IS NOT NULL;

-- Tags. Row-level security lets only leakproof operators become index conditions, and array containment (`@>`)
-- is not one: the GIN index of 0006 is never used for an application query. One row per (device, tag) in a
-- btree led by (provider_id, tag) is: `tag = $1` is leakproof, and the rows come out in device id order, so a tag
-- that a handful of devices carry is a short range instead of a walk over the whole provider.
DROP INDEX devices_tags;
CREATE TABLE device_tags (
    provider_id uuid NOT NULL,
    tag         text NOT NULL,
    device_id   uuid NOT NULL,
    PRIMARY KEY (provider_id, tag, device_id),
    FOREIGN KEY (provider_id, device_id) REFERENCES devices (provider_id, id) ON DELETE CASCADE
);
CREATE INDEX device_tags_device ON device_tags (provider_id, device_id);
COMMENT ON TABLE device_tags IS 'The tags of devices.tags, one row each, kept in step by trigger (for search).';
ALTER TABLE device_tags ENABLE ROW LEVEL SECURITY;
ALTER TABLE device_tags FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON device_tags
    USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin())
    WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin());
GRANT SELECT, INSERT, DELETE ON device_tags TO octoisp_app;

-- Runs as the writer of the device (row-level security applies: a device and its tags have one provider).
CREATE FUNCTION octoisp_device_tags_sync() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.tags IS NOT DISTINCT FROM OLD.tags THEN
            RETURN NULL;
        END IF;
        DELETE FROM device_tags
         WHERE provider_id = NEW.provider_id AND device_id = NEW.id AND NOT (tag = ANY (NEW.tags));
    END IF;
    INSERT INTO device_tags (provider_id, tag, device_id)
        SELECT DISTINCT NEW.provider_id, t, NEW.id FROM unnest(NEW.tags) AS t
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER devices_tags_sync AFTER INSERT OR UPDATE OF tags ON devices
    FOR EACH ROW EXECUTE FUNCTION octoisp_device_tags_sync();

INSERT INTO device_tags (provider_id, tag, device_id)
    SELECT DISTINCT provider_id, t, id FROM devices, unnest(tags) AS t
    ON CONFLICT DO NOTHING;
