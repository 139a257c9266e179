-- The audit log: append-only, hash-chained per provider.
--
-- * Every row is written by `controlplane::audit::record` in the transaction of the change it records. Its
--   provider is the tenant of that transaction (`octoisp_tenant()`, NULL on the global-admin path: the global chain).
-- * A BEFORE INSERT trigger serializes writers of one chain (`pg_advisory_xact_lock`, held until commit), assigns
--   the id and the time, and computes `hash = sha256(prev_hash || octoisp_audit_canonical(row))`, prev_hash being
--   the hash of the chain's previous row (empty for the first). Values given by the inserter are overwritten.
-- * UPDATE, DELETE and TRUNCATE are refused by triggers for everyone (a superuser must disable them, which the
--   verifier then detects as a broken link) and never granted to `octoisp_app`.
-- * `octoisp-controlplane audit verify` recomputes every chain (`controlplane::audit::verify`).

CREATE SEQUENCE audit_log_id_seq AS bigint;

CREATE TABLE audit_log (
    id               bigint PRIMARY KEY,
    provider_id      uuid REFERENCES providers (id),
    ts               timestamptz NOT NULL DEFAULT now(),
    actor_user_id    uuid,
    actor_api_key_id uuid,
    action           text NOT NULL CHECK (action ~ '^[a-z0-9_]+(\.[a-z0-9_]+)+$'),
    target_type      text NOT NULL,
    target_id        text,
    before           jsonb,
    after            jsonb,
    ip               inet,
    request_id       text,
    prev_hash        bytea NOT NULL,
    hash             bytea NOT NULL
);
ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id;
CREATE INDEX audit_log_provider ON audit_log (provider_id, id);
CREATE INDEX audit_log_target ON audit_log (provider_id, target_type, target_id, id);
COMMENT ON TABLE audit_log IS 'Append-only record of every state-changing action, hash-chained per provider.';
COMMENT ON COLUMN audit_log.provider_id IS 'NULL: a global action (its own chain).';

-- The canonical text a row's hash covers: a JSON array of every field but the hashes (JSON escapes every value
-- unambiguously; jsonb's text form is normalized; the time in UTC with microseconds).
CREATE FUNCTION octoisp_audit_canonical(
    p_id bigint, p_provider_id uuid, p_ts timestamptz, p_actor_user_id uuid, p_actor_api_key_id uuid,
    p_action text, p_target_type text, p_target_id text, p_before jsonb, p_after jsonb, p_ip inet,
    p_request_id text) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT json_build_array(
            p_id, p_provider_id,
            to_char(p_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            p_actor_user_id, p_actor_api_key_id, p_action, p_target_type, p_target_id,
            p_before::text, p_after::text, p_ip::text, p_request_id)::text
    $$;

CREATE FUNCTION octoisp_audit_chain() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    prev bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('octoisp_audit:' || coalesce(NEW.provider_id::text, 'global'), 0));
    -- The id is taken under the lock, so ids grow along each chain in commit order.
    NEW.id := nextval('public.audit_log_id_seq');
    NEW.ts := now();
    SELECT a.hash INTO prev FROM public.audit_log a
        WHERE a.provider_id IS NOT DISTINCT FROM NEW.provider_id
        ORDER BY a.id DESC LIMIT 1;
    NEW.prev_hash := coalesce(prev, '\x'::bytea);
    NEW.hash := sha256(NEW.prev_hash || convert_to(public.octoisp_audit_canonical(
        NEW.id, NEW.provider_id, NEW.ts, NEW.actor_user_id, NEW.actor_api_key_id, NEW.action, NEW.target_type,
        NEW.target_id, NEW.before, NEW.after, NEW.ip, NEW.request_id), 'UTF8'));
    RETURN NEW;
END
$$;

CREATE FUNCTION octoisp_audit_refuse() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = '42501';
END
$$;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION octoisp_audit_chain();
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION octoisp_audit_refuse();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION octoisp_audit_refuse();

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
-- A provider reads and appends its own chain; provider-less (global) rows only on the global-admin path.
CREATE POLICY tenant_isolation ON audit_log
    USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin())
    WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin());

GRANT SELECT, INSERT ON audit_log TO octoisp_app;
GRANT USAGE ON SEQUENCE audit_log_id_seq TO octoisp_app;
