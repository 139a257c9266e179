-- Firmware for CPEs held by the control plane, and staged rollouts (campaigns) run from the centre (issue 6).
--
-- An image's bytes live on disk under `[firmware] dir`, named by their SHA-256 (content-addressed); this table
-- holds what the image is and for which devices. Agents fetch images over their QUIC uplink (only their own
-- provider's) and serve them to their CPEs.
--
-- A campaign rolls one image out over a list of devices (given as devices, a group or a POP, resolved when the
-- campaign is created) in cumulative stages; each device's download is a `tr069.download` command through the
-- queue, and its outcome comes back as that command's result. The stop rule (more than `max_failure_pct` of the
-- finished devices failed, a device that does not come back within `come_back_secs` counting as failed) halts it.
--
-- Conventions of 0001/0006: `provider_id` on every row, ENABLE + FORCE ROW LEVEL SECURITY, one `tenant_isolation`
-- policy, composite foreign keys, DML granted table by table, every list served by an index led by `provider_id`.

CREATE TABLE firmware_images (
    id                 uuid NOT NULL DEFAULT gen_random_uuid(),
    provider_id        uuid NOT NULL REFERENCES providers (id),
    name               text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    version            text NOT NULL CHECK (length(version) BETWEEN 1 AND 100),
    vendor             text CHECK (vendor IS NULL OR length(vendor) BETWEEN 1 AND 100),
    oui                text CHECK (oui IS NULL OR oui ~ '^[0-9A-F]{6}$'),
    product_class      text CHECK (product_class IS NULL OR length(product_class) BETWEEN 1 AND 100),
    size               bigint NOT NULL CHECK (size > 0),
    sha256             text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_by_user    uuid,
    created_by_api_key uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id),
    UNIQUE (provider_id, id),
    UNIQUE (provider_id, name, version)
);
CREATE INDEX firmware_images_list ON firmware_images (provider_id, id DESC);
CREATE INDEX firmware_images_sha ON firmware_images (provider_id, sha256);
COMMENT ON TABLE firmware_images IS
    'CPE firmware images; the bytes are on disk under [firmware] dir, named by sha256.';

ALTER TABLE firmware_images ENABLE ROW LEVEL SECURITY;
ALTER TABLE firmware_images FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON firmware_images
    USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin())
    WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin());
GRANT SELECT, INSERT, DELETE ON firmware_images TO octoisp_app;

CREATE TABLE firmware_campaigns (
    id                 uuid NOT NULL,
    provider_id        uuid NOT NULL REFERENCES providers (id),
    name               text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The image; NULL once the image was deleted after the campaign ended (its sha256 stays below).
    image_id           uuid,
    image_sha256       text NOT NULL CHECK (image_sha256 ~ '^[0-9a-f]{64}$'),
    target             jsonb NOT NULL CHECK (jsonb_typeof(target) = 'object'),
    stages_pct         integer[] NOT NULL CHECK (cardinality(stages_pct) BETWEEN 1 AND 20),
    max_failure_pct    double precision NOT NULL CHECK (max_failure_pct >= 0 AND max_failure_pct <= 100),
    come_back_secs     integer NOT NULL CHECK (come_back_secs > 0),
    status             text NOT NULL DEFAULT 'running'
                           CHECK (status IN ('running', 'paused', 'halted', 'cancelled', 'done')),
    halt_reason        text CHECK (halt_reason IS NULL OR length(halt_reason) <= 1000),
    created_by_user    uuid,
    created_by_api_key uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    PRIMARY KEY (id),
    UNIQUE (provider_id, id),
    FOREIGN KEY (provider_id, image_id) REFERENCES firmware_images (provider_id, id) ON DELETE SET NULL (image_id)
);
CREATE INDEX firmware_campaigns_list ON firmware_campaigns (provider_id, id DESC);
CREATE INDEX firmware_campaigns_active ON firmware_campaigns (status) WHERE status = 'running';
CREATE INDEX firmware_campaigns_image ON firmware_campaigns (provider_id, image_id);

ALTER TABLE firmware_campaigns ENABLE ROW LEVEL SECURITY;
ALTER TABLE firmware_campaigns FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON firmware_campaigns
    USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin())
    WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin());
GRANT SELECT, INSERT, UPDATE ON firmware_campaigns TO octoisp_app;

-- One row per device of a campaign, in rollout order. `state`: pending (not started), running (its
-- tr069.download command is queued or running), succeeded, failed (a fault, the command failed or expired, or
-- it did not come back within come_back_secs), skipped (the campaign was cancelled or halted before it).
CREATE TABLE firmware_campaign_devices (
    provider_id  uuid NOT NULL,
    campaign_id  uuid NOT NULL,
    position     integer NOT NULL CHECK (position >= 0),
    device_id    uuid NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'skipped')),
    command_id   uuid,
    started_at   timestamptz,
    finished_at  timestamptz,
    error        text CHECK (error IS NULL OR length(error) <= 4000),
    PRIMARY KEY (provider_id, campaign_id, device_id),
    UNIQUE (provider_id, campaign_id, position),
    FOREIGN KEY (provider_id, campaign_id) REFERENCES firmware_campaigns (provider_id, id) ON DELETE CASCADE,
    FOREIGN KEY (provider_id, device_id) REFERENCES devices (provider_id, id) ON DELETE CASCADE
);
CREATE INDEX firmware_campaign_devices_command ON firmware_campaign_devices (provider_id, command_id)
    WHERE command_id IS NOT NULL;

ALTER TABLE firmware_campaign_devices ENABLE ROW LEVEL SECURITY;
ALTER TABLE firmware_campaign_devices FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON firmware_campaign_devices
    USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin())
    WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin());
GRANT SELECT, INSERT, UPDATE ON firmware_campaign_devices TO octoisp_app;

-- The campaigns of every tenant the workers must look at (ids only): running ones, and ended or paused ones whose
-- started devices have not reported yet. Each is then advanced in a transaction bound to its own provider.
-- Narrow like the lookups of 0002.
CREATE FUNCTION octoisp_running_campaigns()
    RETURNS TABLE (provider_id uuid, id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET app.global_admin = 'on'
    AS $$
        SELECT c.provider_id, c.id FROM public.firmware_campaigns c
        WHERE c.status = 'running'
           OR EXISTS (SELECT 1 FROM public.firmware_campaign_devices d
                      WHERE d.provider_id = c.provider_id AND d.campaign_id = c.id AND d.state = 'running')
        ORDER BY c.id
    $$;
CREATE INDEX firmware_campaign_devices_running ON firmware_campaign_devices (provider_id, campaign_id)
    WHERE state = 'running';
REVOKE ALL ON FUNCTION octoisp_running_campaigns() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION octoisp_running_campaigns() TO octoisp_app;
