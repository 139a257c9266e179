-- Authentication and authorization: users, the permission catalogue, roles (five predefined, custom ones per
-- provider), extra grants per user, API keys, rotating refresh tokens and password resets.
--
-- Follows 0001's conventions, with two deliberate exceptions to `provider_id NOT NULL`:
-- * users.provider_id NULL is a Global Admin (a user of no provider); their refresh tokens, password resets and
--   extra grants carry NULL too. Such rows are visible only on the global-admin path.
-- * roles.provider_id NULL (and their role_permissions) are the predefined roles, readable by every tenant through
--   an extra SELECT-only policy `predefined_read`, writable only on the global-admin path.
-- The catalogue `permissions` has no tenant: every tenant reads it, nobody but the migration writes it.
--
-- Lookups that must happen before the tenant is known (login by email, a refresh token, an API key, a password
-- reset, a user named by a token) go through narrow SECURITY DEFINER functions at the end, as in 0002: pinned
-- search_path, `app.global_admin` on for their own duration only, EXECUTE for `octoisp_app` only. Secrets are
-- never stored: token and key secrets as SHA-256 (lowercase hex), passwords as argon2id PHC strings.

CREATE TABLE permissions (
    code        text PRIMARY KEY CHECK (code ~ '^[a-z0-9_]+:[a-z0-9_]+$'),
    module      text NOT NULL,
    action      text NOT NULL,
    description text NOT NULL,
    global_only boolean NOT NULL DEFAULT false,
    CHECK (code = module || ':' || action)
);
COMMENT ON TABLE permissions IS 'The permission catalogue; global_only ones are meaningful for Global Admins only.';

INSERT INTO permissions (code, module, action, description, global_only) VALUES
    ('providers:read', 'providers', 'read', 'List and read providers (tenants).', true),
    ('providers:write', 'providers', 'write', 'Create and change providers.', true),
    ('pops:read', 'pops', 'read', 'List and read POPs.', false),
    ('pops:write', 'pops', 'write', 'Create and change POPs.', false),
    ('customers:read', 'customers', 'read', 'List and read customers.', false),
    ('customers:write', 'customers', 'write', 'Create, change and delete customers.', false),
    ('devices:read', 'devices', 'read', 'List, search and read devices.', false),
    ('devices:write', 'devices', 'write', 'Create and change devices.', false),
    ('groups:read', 'groups', 'read', 'List and read device groups.', false),
    ('groups:write', 'groups', 'write', 'Create and change device groups.', false),
    ('agents:read', 'agents', 'read', 'List and read agents.', false),
    ('agents:write', 'agents', 'write', 'Change agents.', false),
    ('agents:enroll', 'agents', 'enroll', 'Create agent enrollment tokens.', false),
    ('agents:revoke', 'agents', 'revoke', 'Revoke agents.', false),
    ('users:read', 'users', 'read', 'List and read users.', false),
    ('users:manage', 'users', 'manage', 'Create, disable users and change their roles and grants.', false),
    ('roles:read', 'roles', 'read', 'List and read roles.', false),
    ('roles:manage', 'roles', 'manage', 'Create and change custom roles.', false),
    ('api_keys:manage', 'api_keys', 'manage', 'Create, list and revoke API keys.', false),
    ('audit:read', 'audit', 'read', 'Read the audit log.', false),
    ('alerts:read', 'alerts', 'read', 'Read alerts.', false),
    ('alerts:ack', 'alerts', 'ack', 'Acknowledge alerts.', false),
    ('diagnostics:run', 'diagnostics', 'run', 'Run diagnostics (ping, MTR, scans) through agents.', false),
    ('tr069:read', 'tr069', 'read', 'Read TR-069 parameters and tasks.', false),
    ('tr069:write', 'tr069', 'write', 'Set TR-069 parameters.', false),
    ('tr069:reboot', 'tr069', 'reboot', 'Reboot CPEs through TR-069.', false),
    ('tr069:firmware', 'tr069', 'firmware', 'Upgrade CPE firmware through TR-069.', false),
    ('metrics:read', 'metrics', 'read', 'Read metrics and graphs.', false);

CREATE TABLE roles (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id uuid REFERENCES providers (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, id)
);
CREATE UNIQUE INDEX roles_name ON roles (coalesce(provider_id, '00000000-0000-0000-0000-000000000000'), lower(name));
COMMENT ON TABLE roles IS 'Predefined roles (provider_id NULL, fixed ids) and custom roles of a provider.';

-- Fixed ids, so code can name the predefined roles.
INSERT INTO roles (id, provider_id, name, description) VALUES
    ('00000000-0000-4000-8000-000000000001', NULL, 'Global Admin', 'Every permission on every provider.'),
    ('00000000-0000-4000-8000-000000000002', NULL, 'Provider Admin', 'Every permission within the provider.'),
    ('00000000-0000-4000-8000-000000000003', NULL, 'NOC', 'Operates the network: reads everything, acts on devices.'),
    ('00000000-0000-4000-8000-000000000004', NULL, 'Technician', 'Field work: devices, CPEs, diagnostics.'),
    ('00000000-0000-4000-8000-000000000005', NULL, 'Viewer', 'Reads the network, changes nothing.');

CREATE TABLE role_permissions (
    provider_id uuid,
    role_id     uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    permission  text NOT NULL REFERENCES permissions (code),
    PRIMARY KEY (role_id, permission),
    FOREIGN KEY (provider_id, role_id) REFERENCES roles (provider_id, id) ON DELETE CASCADE
);
CREATE INDEX role_permissions_provider ON role_permissions (provider_id, role_id);

INSERT INTO role_permissions (provider_id, role_id, permission)
SELECT NULL, '00000000-0000-4000-8000-000000000001'::uuid, code FROM permissions;
INSERT INTO role_permissions (provider_id, role_id, permission)
SELECT NULL, '00000000-0000-4000-8000-000000000002'::uuid, code FROM permissions WHERE NOT global_only;
INSERT INTO role_permissions (provider_id, role_id, permission)
SELECT NULL, '00000000-0000-4000-8000-000000000003'::uuid, unnest(ARRAY[
    'pops:read', 'customers:read', 'devices:read', 'devices:write', 'groups:read', 'groups:write', 'agents:read',
    'alerts:read', 'alerts:ack', 'diagnostics:run', 'tr069:read', 'tr069:reboot', 'metrics:read', 'users:read',
    'roles:read']);
INSERT INTO role_permissions (provider_id, role_id, permission)
SELECT NULL, '00000000-0000-4000-8000-000000000004'::uuid, unnest(ARRAY[
    'pops:read', 'customers:read', 'devices:read', 'devices:write', 'groups:read', 'agents:read', 'agents:enroll',
    'alerts:read', 'diagnostics:run', 'tr069:read', 'tr069:write', 'tr069:reboot', 'tr069:firmware',
    'metrics:read']);
INSERT INTO role_permissions (provider_id, role_id, permission)
SELECT NULL, '00000000-0000-4000-8000-000000000005'::uuid, unnest(ARRAY[
    'pops:read', 'customers:read', 'devices:read', 'groups:read', 'agents:read', 'alerts:read', 'tr069:read',
    'metrics:read']);

CREATE TABLE users (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id      uuid REFERENCES providers (id),
    email            text NOT NULL CHECK (length(email) BETWEEN 3 AND 320 AND email LIKE '%_@_%'),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    password_hash    text CHECK (password_hash LIKE '$argon2id$%'),
    external_subject text UNIQUE,
    role_id          uuid NOT NULL REFERENCES roles (id),
    disabled_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_login_at    timestamptz,
    UNIQUE (provider_id, id)
);
CREATE UNIQUE INDEX users_email ON users (lower(email));
CREATE INDEX users_provider ON users (provider_id, id);
COMMENT ON COLUMN users.provider_id IS 'NULL: a Global Admin.';
COMMENT ON COLUMN users.password_hash IS 'argon2id PHC string; NULL when the user signs in through Supabase only.';
COMMENT ON COLUMN users.external_subject IS '`sub` of the Supabase Auth user mapped to this user.';

-- A user's role is predefined or one of the user's provider; Global Admin is the role of provider-less users only.
CREATE FUNCTION octoisp_users_role_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    role_provider uuid;
BEGIN
    SELECT r.provider_id INTO role_provider FROM public.roles r WHERE r.id = NEW.role_id;
    IF NOT FOUND OR (role_provider IS NOT NULL AND role_provider IS DISTINCT FROM NEW.provider_id) THEN
        RAISE EXCEPTION 'role % is not available to this user', NEW.role_id USING ERRCODE = '23503';
    END IF;
    IF (NEW.role_id = '00000000-0000-4000-8000-000000000001') <> (NEW.provider_id IS NULL) THEN
        RAISE EXCEPTION 'Global Admin is the role of exactly the users without a provider' USING ERRCODE = '23514';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER users_role_check BEFORE INSERT OR UPDATE OF role_id, provider_id ON users
    FOR EACH ROW EXECUTE FUNCTION octoisp_users_role_check();

CREATE TABLE user_permissions (
    provider_id uuid,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    permission  text NOT NULL REFERENCES permissions (code),
    granted_by  uuid REFERENCES users (id),
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, permission),
    FOREIGN KEY (provider_id, user_id) REFERENCES users (provider_id, id) ON DELETE CASCADE
);
CREATE INDEX user_permissions_provider ON user_permissions (provider_id, user_id);
COMMENT ON TABLE user_permissions IS 'Grants of one user beyond those of the role.';

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id  uuid NOT NULL REFERENCES providers (id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    prefix       text NOT NULL UNIQUE CHECK (prefix ~ '^[a-z0-9]{8}$'),
    secret_hash  text NOT NULL CHECK (secret_hash ~ '^[0-9a-f]{64}$'),
    permissions  text[] NOT NULL,
    created_by   uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    UNIQUE (provider_id, id),
    FOREIGN KEY (provider_id, created_by) REFERENCES users (provider_id, id)
);
CREATE INDEX api_keys_provider ON api_keys (provider_id, created_at, id);
COMMENT ON COLUMN api_keys.prefix IS 'The 8 characters after `oik_` in the key: shown in lists, used for lookup.';
COMMENT ON COLUMN api_keys.secret_hash IS 'SHA-256 (lowercase hex) of the secret part of the key; the key is not stored.';
COMMENT ON COLUMN api_keys.permissions IS
    'Permissions of the key: a subset of its creator''s, and only those the creator still holds take effect.';

CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    family_id   uuid NOT NULL,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider_id uuid REFERENCES providers (id),
    token_hash  text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    FOREIGN KEY (provider_id, user_id) REFERENCES users (provider_id, id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (provider_id, user_id);
COMMENT ON TABLE refresh_tokens IS
    'Rotating refresh tokens: each use marks the token used and issues the next of its family; using a used token '
    'revokes the family.';

CREATE TABLE password_resets (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider_id uuid REFERENCES providers (id),
    token_hash  text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    FOREIGN KEY (provider_id, user_id) REFERENCES users (provider_id, id) ON DELETE CASCADE
);
CREATE INDEX password_resets_user ON password_resets (provider_id, user_id);

-- Row-level security.
ALTER TABLE permissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE permissions FORCE ROW LEVEL SECURITY;
CREATE POLICY catalogue_read ON permissions FOR SELECT USING (true);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['roles', 'role_permissions', 'users', 'user_permissions', 'api_keys',
                             'refresh_tokens', 'password_resets'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I '
                       'USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin()) '
                       'WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin())', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['roles', 'role_permissions'] LOOP
        EXECUTE format('CREATE POLICY predefined_read ON %I FOR SELECT USING (provider_id IS NULL)', t);
    END LOOP;
END
$$;

GRANT SELECT ON permissions TO octoisp_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON roles, role_permissions, user_permissions TO octoisp_app;
GRANT SELECT, INSERT, UPDATE ON users, api_keys, refresh_tokens, password_resets TO octoisp_app;

-- Effective permissions of a user: all of them for a Global Admin, else role ∪ extra grants. NULL for an unknown
-- user. Internal (called by the SECURITY DEFINER functions below, with their rights).
CREATE FUNCTION octoisp_user_permissions(p_user_id uuid) RETURNS text[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT CASE
            WHEN u.provider_id IS NULL THEN (SELECT array_agg(p.code ORDER BY p.code) FROM public.permissions p)
            ELSE coalesce((
                SELECT array_agg(DISTINCT x.permission ORDER BY x.permission) FROM (
                    SELECT rp.permission FROM public.role_permissions rp WHERE rp.role_id = u.role_id
                    UNION
                    SELECT up.permission FROM public.user_permissions up WHERE up.user_id = u.id
                ) x), '{}')
        END
        FROM public.users u
        WHERE u.id = p_user_id
    $$;

-- Login by email: what is needed to verify the password, nothing more.
CREATE FUNCTION octoisp_login_lookup(p_email text)
    RETURNS TABLE (user_id uuid, provider_id uuid, password_hash text, disabled boolean)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET app.global_admin = 'on'
    AS $$
        SELECT u.id, u.provider_id, u.password_hash, u.disabled_at IS NOT NULL
        FROM public.users u
        WHERE lower(u.email) = lower(p_email)
    $$;

-- The principal behind an access token: its provider, whether it is disabled, its effective permissions.
CREATE FUNCTION octoisp_user_principal(p_user_id uuid)
    RETURNS TABLE (provider_id uuid, disabled boolean, permissions text[])
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET app.global_admin = 'on'
    AS $$
        SELECT u.provider_id, u.disabled_at IS NOT NULL, public.octoisp_user_permissions(u.id)
        FROM public.users u
        WHERE u.id = p_user_id
    $$;

-- The user mapped to a Supabase Auth subject.
CREATE FUNCTION octoisp_user_by_subject(p_subject text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET app.global_admin = 'on'
    AS $$ SELECT u.id FROM public.users u WHERE u.external_subject = p_subject $$;

-- An API key by its prefix, with the permissions that take effect now (its own ∩ its creator's current ones;
-- none once the creator is disabled). The caller compares the secret hash.
CREATE FUNCTION octoisp_api_key_lookup(p_prefix text)
    RETURNS TABLE (id uuid, provider_id uuid, secret_hash text, permissions text[], usable boolean)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET app.global_admin = 'on'
    AS $$
        SELECT k.id, k.provider_id, k.secret_hash,
               coalesce(ARRAY(SELECT unnest(k.permissions)
                              INTERSECT SELECT unnest(public.octoisp_user_permissions(k.created_by))
                              ORDER BY 1), '{}'),
               k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()) AND u.disabled_at IS NULL
        FROM public.api_keys k
        JOIN public.users u ON u.id = k.created_by
        WHERE k.prefix = p_prefix
    $$;

-- Starts a session after a successful login: stores the first refresh token of a new family.
CREATE FUNCTION octoisp_session_start(p_user_id uuid, p_token_hash text, p_expires_at timestamptz)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET app.global_admin = 'on'
    AS $$
DECLARE
    family uuid := gen_random_uuid();
BEGIN
    UPDATE public.users SET last_login_at = now() WHERE id = p_user_id AND disabled_at IS NULL;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO public.refresh_tokens (family_id, user_id, provider_id, token_hash, expires_at)
    SELECT family, u.id, u.provider_id, p_token_hash, p_expires_at FROM public.users u WHERE u.id = p_user_id;
    RETURN family;
END
$$;

-- Rotates a refresh token. outcome: 'ok' (the old token is now used, the new one stored in its family), 'reused'
-- (the token was used before: the whole family is now revoked), 'invalid' (unknown, expired, revoked, or the
-- user is disabled).
CREATE FUNCTION octoisp_refresh_rotate(p_old_hash text, p_new_hash text, p_expires_at timestamptz)
    RETURNS TABLE (outcome text, user_id uuid, provider_id uuid, family_id uuid)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET app.global_admin = 'on'
    AS $$
#variable_conflict use_column
DECLARE
    t record;
BEGIN
    SELECT r.id, r.family_id, r.user_id, r.provider_id, r.expires_at, r.used_at, r.revoked_at,
           u.disabled_at IS NOT NULL AS disabled
        INTO t
        FROM public.refresh_tokens r JOIN public.users u ON u.id = r.user_id
        WHERE r.token_hash = p_old_hash
        FOR UPDATE OF r;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'invalid'::text, NULL::uuid, NULL::uuid, NULL::uuid;
        RETURN;
    END IF;
    IF t.used_at IS NOT NULL THEN
        UPDATE public.refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE refresh_tokens.family_id = t.family_id;
        RETURN QUERY SELECT 'reused'::text, t.user_id, t.provider_id, t.family_id;
        RETURN;
    END IF;
    IF t.revoked_at IS NOT NULL OR t.expires_at <= now() OR t.disabled THEN
        RETURN QUERY SELECT 'invalid'::text, t.user_id, t.provider_id, t.family_id;
        RETURN;
    END IF;
    UPDATE public.refresh_tokens SET used_at = now() WHERE id = t.id;
    INSERT INTO public.refresh_tokens (family_id, user_id, provider_id, token_hash, expires_at)
    VALUES (t.family_id, t.user_id, t.provider_id, p_new_hash, p_expires_at);
    RETURN QUERY SELECT 'ok'::text, t.user_id, t.provider_id, t.family_id;
END
$$;

-- Logout: revokes the family of a refresh token. True when the token was known.
CREATE FUNCTION octoisp_refresh_revoke_family(p_hash text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET app.global_admin = 'on'
    AS $$
DECLARE
    fam uuid;
BEGIN
    SELECT r.family_id INTO fam FROM public.refresh_tokens r WHERE r.token_hash = p_hash;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE public.refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE family_id = fam;
    RETURN true;
END
$$;

-- Stores a password reset token (hashed) for an enabled user. True when stored.
CREATE FUNCTION octoisp_password_reset_create(p_user_id uuid, p_hash text, p_expires_at timestamptz)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET app.global_admin = 'on'
    AS $$
BEGIN
    INSERT INTO public.password_resets (user_id, provider_id, token_hash, expires_at)
    SELECT u.id, u.provider_id, p_hash, p_expires_at FROM public.users u
    WHERE u.id = p_user_id AND u.disabled_at IS NULL;
    RETURN FOUND;
END
$$;

-- Uses a password reset token once: sets the new password hash and revokes every refresh token of the user.
-- Returns the user, or NULL when the token is unknown, used or expired.
CREATE FUNCTION octoisp_password_reset_consume(p_hash text, p_password_hash text) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET app.global_admin = 'on'
    AS $$
DECLARE
    t record;
BEGIN
    SELECT r.id, r.user_id INTO t FROM public.password_resets r
        WHERE r.token_hash = p_hash AND r.used_at IS NULL AND r.expires_at > now()
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE public.password_resets SET used_at = now() WHERE id = t.id;
    UPDATE public.users SET password_hash = p_password_hash WHERE id = t.user_id;
    UPDATE public.refresh_tokens SET revoked_at = coalesce(revoked_at, now())
        WHERE user_id = t.user_id AND revoked_at IS NULL;
    RETURN t.user_id;
END
$$;

REVOKE ALL ON FUNCTION octoisp_user_permissions(uuid), octoisp_login_lookup(text), octoisp_user_principal(uuid),
    octoisp_user_by_subject(text), octoisp_api_key_lookup(text), octoisp_session_start(uuid, text, timestamptz),
    octoisp_refresh_rotate(text, text, timestamptz), octoisp_refresh_revoke_family(text),
    octoisp_password_reset_create(uuid, text, timestamptz), octoisp_password_reset_consume(text, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION octoisp_user_permissions(uuid), octoisp_login_lookup(text), octoisp_user_principal(uuid),
    octoisp_user_by_subject(text), octoisp_api_key_lookup(text), octoisp_session_start(uuid, text, timestamptz),
    octoisp_refresh_rotate(text, text, timestamptz), octoisp_refresh_revoke_family(text),
    octoisp_password_reset_create(uuid, text, timestamptz), octoisp_password_reset_consume(text, text)
    TO octoisp_app;
