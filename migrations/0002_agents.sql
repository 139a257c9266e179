-- Agents and their enrollment, plus the three narrow SECURITY DEFINER lookups that must work before the tenant is
-- known (at the TLS handshake and at enrollment). Each returns only what its caller needs, runs with a pinned
-- search_path and sets `app.global_admin` for its own duration only (the owner is bound by FORCE ROW LEVEL
-- SECURITY too), and only `octoisp_app` may execute it.

CREATE TABLE agents (
    id               uuid PRIMARY KEY,
    provider_id      uuid NOT NULL REFERENCES providers (id),
    pop_id           uuid NOT NULL,
    hostname         text NOT NULL,
    version          text NOT NULL,
    cert_fingerprint text NOT NULL UNIQUE CHECK (cert_fingerprint ~ '^[0-9a-f]{64}$'),
    enrolled_at      timestamptz NOT NULL DEFAULT now(),
    last_seen        timestamptz,
    revoked_at       timestamptz,
    settled_below    bigint NOT NULL DEFAULT 0 CHECK (settled_below >= 0),
    UNIQUE (provider_id, id),
    FOREIGN KEY (provider_id, pop_id) REFERENCES pops (provider_id, id)
);
CREATE INDEX agents_pop ON agents (provider_id, pop_id);
CREATE INDEX agents_revoked ON agents (revoked_at) WHERE revoked_at IS NOT NULL;
COMMENT ON COLUMN agents.cert_fingerprint IS 'SHA-256 of the agent certificate (DER), lowercase hex.';
COMMENT ON COLUMN agents.settled_below IS
    'Every batch seq below this is settled by the agent: a batch with a smaller seq is a duplicate.';

CREATE TABLE enrollment_tokens (
    id            uuid PRIMARY KEY,
    provider_id   uuid NOT NULL REFERENCES providers (id),
    pop_id        uuid NOT NULL,
    secret_hash   text NOT NULL CHECK (secret_hash ~ '^[0-9a-f]{64}$'),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    used_by_agent uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (provider_id, pop_id) REFERENCES pops (provider_id, id),
    FOREIGN KEY (provider_id, used_by_agent) REFERENCES agents (provider_id, id),
    CHECK ((used_at IS NULL) = (used_by_agent IS NULL))
);
CREATE INDEX enrollment_tokens_pop ON enrollment_tokens (provider_id, pop_id);
COMMENT ON COLUMN enrollment_tokens.secret_hash IS
    'SHA-256 (lowercase hex) of the secret as the operator received it (base64url text); the secret is not stored.';

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agents', 'enrollment_tokens'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I '
                       'USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin()) '
                       'WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE ON agents, enrollment_tokens TO octoisp_app;

-- Who an agent is, from the id in its certificate: called at every connection, before the tenant is known.
CREATE FUNCTION octoisp_agent_identity(p_agent_id uuid)
    RETURNS TABLE (provider_id uuid, pop_id uuid, revoked boolean, cert_fingerprint text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET app.global_admin = 'on'
    AS $$
        SELECT a.provider_id, a.pop_id, a.revoked_at IS NOT NULL, a.cert_fingerprint
        FROM public.agents a
        WHERE a.id = p_agent_id
    $$;

-- Where an enrollment token leads (provider and POP only, nothing secret): the enrollment then continues in a
-- tenant transaction that locks the token row and checks its secret, expiry and use.
CREATE FUNCTION octoisp_enrollment_token(p_token_id uuid)
    RETURNS TABLE (provider_id uuid, pop_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET app.global_admin = 'on'
    AS $$
        SELECT t.provider_id, t.pop_id
        FROM public.enrollment_tokens t
        WHERE t.id = p_token_id
    $$;

-- Fingerprints of revoked agent certificates, for the TLS verifier (all tenants).
CREATE FUNCTION octoisp_revoked_fingerprints()
    RETURNS SETOF text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET app.global_admin = 'on'
    AS $$
        SELECT a.cert_fingerprint FROM public.agents a WHERE a.revoked_at IS NOT NULL ORDER BY 1
    $$;

REVOKE ALL ON FUNCTION octoisp_agent_identity(uuid), octoisp_enrollment_token(uuid), octoisp_revoked_fingerprints()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION octoisp_agent_identity(uuid), octoisp_enrollment_token(uuid),
    octoisp_revoked_fingerprints() TO octoisp_app;
