-- Commands from the API to the agents: one row per command (the source of truth; the Redis queue only orders
-- and leases them), the progress frames the agent streamed while it ran, and fan-out batches.
--
-- Conventions of 0001/0006: `provider_id` on every row, ENABLE + FORCE ROW LEVEL SECURITY, one
-- `tenant_isolation` policy, composite `(provider_id, x_id)` foreign keys, DML granted table by table, every list
-- filter served by an index led by `provider_id`.
--
-- Status moves forward only: queued -> waiting_agent <-> queued -> dispatched -> running -> a final status
-- (succeeded, failed, expired, rejected, cancelled, dead). The application changes it with guarded UPDATEs
-- (`... WHERE status IN (open statuses)`); the trigger below refuses any change out of a final status (except a
-- dead letter the tenant requeues: dead -> queued), so a late or replayed frame never moves a finished command
-- back.

INSERT INTO permissions (code, module, action, description, global_only) VALUES
    ('commands:read', 'commands', 'read', 'List and read commands, their progress and results, and queue counts.',
     false),
    ('commands:manage', 'commands', 'manage', 'Requeue or discard dead-lettered commands.', false);
INSERT INTO role_permissions (provider_id, role_id, permission) VALUES
    (NULL, '00000000-0000-4000-8000-000000000001', 'commands:read'),
    (NULL, '00000000-0000-4000-8000-000000000001', 'commands:manage'),
    (NULL, '00000000-0000-4000-8000-000000000002', 'commands:read'),
    (NULL, '00000000-0000-4000-8000-000000000002', 'commands:manage'),
    (NULL, '00000000-0000-4000-8000-000000000003', 'commands:read'),
    (NULL, '00000000-0000-4000-8000-000000000003', 'commands:manage'),
    (NULL, '00000000-0000-4000-8000-000000000004', 'commands:read'),
    (NULL, '00000000-0000-4000-8000-000000000005', 'commands:read');
-- A Technician runs diagnostics; rebooting or resetting a customer's CPE needs an explicit grant.
DELETE FROM role_permissions
WHERE provider_id IS NULL AND role_id = '00000000-0000-4000-8000-000000000004' AND permission = 'tr069:reboot';

CREATE TABLE command_batches (
    id          uuid PRIMARY KEY,
    provider_id uuid NOT NULL REFERENCES providers (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    total       integer NOT NULL CHECK (total >= 0),
    created_by_user    uuid,
    created_by_api_key uuid,
    idempotency_key text CHECK (idempotency_key IS NULL OR length(idempotency_key) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, id)
);
CREATE UNIQUE INDEX command_batches_idempotency ON command_batches (provider_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE commands (
    id              uuid PRIMARY KEY,
    provider_id     uuid NOT NULL REFERENCES providers (id),
    pop_id          uuid NOT NULL,
    agent_id        uuid NOT NULL,
    device_id       uuid,
    batch_id        uuid,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    args            jsonb NOT NULL CHECK (jsonb_typeof(args) = 'object' AND length(args::text) <= 65536),
    status          text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'waiting_agent', 'dispatched',
                        'running', 'succeeded', 'failed', 'expired', 'rejected', 'cancelled', 'dead')),
    error           text CHECK (error IS NULL OR length(error) <= 4000),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_by_user    uuid,
    created_by_api_key uuid,
    idempotency_key text CHECK (idempotency_key IS NULL OR length(idempotency_key) BETWEEN 1 AND 200),
    created_at      timestamptz NOT NULL DEFAULT now(),
    deadline        timestamptz NOT NULL,
    dispatched_at   timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    UNIQUE (provider_id, id),
    FOREIGN KEY (provider_id, pop_id) REFERENCES pops (provider_id, id),
    FOREIGN KEY (provider_id, agent_id) REFERENCES agents (provider_id, id),
    FOREIGN KEY (provider_id, device_id) REFERENCES devices (provider_id, id) ON DELETE SET NULL (device_id),
    FOREIGN KEY (provider_id, batch_id) REFERENCES command_batches (provider_id, id)
);
COMMENT ON TABLE commands IS 'Commands sent to agents; the Redis queue holds only their order and leases.';
CREATE UNIQUE INDEX commands_idempotency ON commands (provider_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX commands_pop ON commands (provider_id, pop_id, id);
CREATE INDEX commands_device ON commands (provider_id, device_id, id) WHERE device_id IS NOT NULL;
CREATE INDEX commands_batch ON commands (provider_id, batch_id, id) WHERE batch_id IS NOT NULL;
CREATE INDEX commands_status ON commands (provider_id, status, id);
CREATE INDEX commands_user ON commands (provider_id, created_by_user, id) WHERE created_by_user IS NOT NULL;
CREATE INDEX commands_name ON commands (provider_id, name, id);
-- The agent's waiting commands in creation order (wake on reconnect) and the unfinished ones (reconciliation).
CREATE INDEX commands_open ON commands (agent_id, id)
    WHERE status IN ('queued', 'waiting_agent', 'dispatched', 'running');

CREATE TABLE command_progress (
    provider_id uuid NOT NULL REFERENCES providers (id),
    command_id  uuid NOT NULL,
    seq         integer NOT NULL CHECK (seq >= 0),
    ts          timestamptz NOT NULL DEFAULT now(),
    payload     jsonb NOT NULL CHECK (length(payload::text) <= 65536),
    PRIMARY KEY (provider_id, command_id, seq),
    FOREIGN KEY (provider_id, command_id) REFERENCES commands (provider_id, id) ON DELETE CASCADE
);

CREATE FUNCTION octoisp_commands_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A dead letter may be requeued by the tenant (dead -> queued); nothing else leaves a final status.
    IF NEW.status IS DISTINCT FROM OLD.status
       AND (OLD.status IN ('succeeded', 'failed', 'expired', 'rejected', 'cancelled')
            OR (OLD.status = 'dead' AND NEW.status <> 'queued')) THEN
        RAISE EXCEPTION 'command % is % and cannot become %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER commands_forward_only BEFORE UPDATE OF status ON commands
    FOR EACH ROW EXECUTE FUNCTION octoisp_commands_forward_only();

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['command_batches', 'commands', 'command_progress'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I '
                       'USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin()) '
                       'WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT ON command_batches, command_progress TO octoisp_app;
GRANT SELECT, INSERT, UPDATE ON commands TO octoisp_app;

-- Providers with unfinished commands created more than a minute ago, for the reconciler that puts them back in the
-- queue after a Redis loss (enqueueing an id the queue knows does nothing).
CREATE FUNCTION octoisp_command_open_providers() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
        SELECT DISTINCT provider_id FROM public.commands
         WHERE status IN ('queued', 'waiting_agent', 'dispatched', 'running')
           AND created_at < now() - interval '1 minute'
    $$;
REVOKE ALL ON FUNCTION octoisp_command_open_providers() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION octoisp_command_open_providers() TO octoisp_app;
