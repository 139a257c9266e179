-- Notifications: channels (email, Telegram, webhooks, Web Push), policies that route alert events to them, the
-- messages built from `alert_events` (0009) and one delivery row per (message, channel, recipient) that the
-- delivery workers send with retries, ending either `sent` or `dead` (the dead-letter list, replayable).
--
-- Conventions of 0001/0006: `provider_id` on every row, ENABLE + FORCE ROW LEVEL SECURITY, one
-- `tenant_isolation` policy, composite `(provider_id, x_id)` foreign keys, DML granted table by table.
-- Secrets (bot tokens, webhook HMAC secrets, SMTP passwords, VAPID private keys) live in their own columns that the
-- API never selects back.

INSERT INTO permissions (code, module, action, description, global_only) VALUES
    ('notifications:manage', 'notifications', 'manage',
     'Create and change notification channels and policies; replay dead letters.', false);
INSERT INTO role_permissions (provider_id, role_id, permission) VALUES
    (NULL, '00000000-0000-4000-8000-000000000001', 'notifications:manage'),
    (NULL, '00000000-0000-4000-8000-000000000002', 'notifications:manage');

-- The language of a user's notifications (and, later, of the console).
ALTER TABLE users ADD COLUMN language text NOT NULL DEFAULT 'pt-BR' CHECK (language IN ('pt-BR', 'en'));
GRANT UPDATE (language) ON users TO octoisp_app;

CREATE TABLE notification_channels (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id uuid NOT NULL REFERENCES providers (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind        text NOT NULL CHECK (kind IN ('email', 'telegram', 'webhook', 'webpush')),
    -- Non-secret settings: email `to` addresses and optional `smtp` override, Telegram `chat_id`, webhook `url`.
    config      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object' AND length(config::text) <= 8192),
    -- Write-only: Telegram bot token, webhook HMAC secret, SMTP password of the override. Never returned.
    secret      text CHECK (secret IS NULL OR length(secret) BETWEEN 1 AND 1000),
    -- Language of messages sent to the channel's own target (a chat, a mailing list, a webhook).
    language    text NOT NULL DEFAULT 'pt-BR' CHECK (language IN ('pt-BR', 'en')),
    -- Messages per minute before the excess is folded into one summary.
    rate_limit_per_minute integer NOT NULL DEFAULT 30 CHECK (rate_limit_per_minute BETWEEN 1 AND 10000),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, name),
    UNIQUE (provider_id, id)
);
COMMENT ON TABLE notification_channels IS 'Where notifications go; secret is write-only.';

CREATE TABLE notification_policies (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id uuid NOT NULL REFERENCES providers (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    channel_id  uuid NOT NULL,
    -- A user's own policy: mail goes to the user's address, push to the user's subscriptions, in the user's language.
    user_id     uuid,
    severities  text[] NOT NULL DEFAULT '{warning,critical}'
        CHECK (cardinality(severities) > 0 AND severities <@ ARRAY['info', 'warning', 'critical']),
    kinds       text[] NOT NULL DEFAULT '{firing,resolved,flapping,flap_ended,acknowledged}'
        CHECK (cardinality(kinds) > 0
               AND kinds <@ ARRAY['firing', 'resolved', 'flapping', 'flap_ended', 'acknowledged']),
    scope       text NOT NULL DEFAULT 'all' CHECK (scope IN ('all', 'pop', 'group')),
    scope_id    uuid,
    -- Quiet hours (local time of quiet_timezone; start > end wraps midnight): only critical events, or nothing.
    quiet_start time,
    quiet_end   time,
    quiet_timezone text NOT NULL DEFAULT 'America/Sao_Paulo' CHECK (length(quiet_timezone) BETWEEN 1 AND 64),
    quiet_allow_critical boolean NOT NULL DEFAULT true,
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((scope = 'all') = (scope_id IS NULL)),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL)),
    UNIQUE (provider_id, id),
    FOREIGN KEY (provider_id, channel_id) REFERENCES notification_channels (provider_id, id) ON DELETE CASCADE,
    FOREIGN KEY (provider_id, user_id) REFERENCES users (provider_id, id) ON DELETE CASCADE
);
CREATE INDEX notification_policies_channel ON notification_policies (provider_id, channel_id);
COMMENT ON TABLE notification_policies IS 'Which events (severity, kind, scope, quiet hours) go to which channel.';

-- One message per group of alert events claimed together (events sharing group_key within the grouping window),
-- or a summary of messages folded by a channel's rate limit. Groups made only of suppressed events are recorded
-- here too, with no delivery.
CREATE TABLE notification_messages (
    provider_id   uuid NOT NULL REFERENCES providers (id),
    id            bigint GENERATED ALWAYS AS IDENTITY,
    group_key     text NOT NULL,
    lead_event_id bigint,
    event_ids     bigint[] NOT NULL,
    kind          text NOT NULL,
    severity      text NOT NULL,
    -- Events of the group other than the lead (sent folded into its message).
    dependents    integer NOT NULL DEFAULT 0,
    -- Events of the group that carried a `suppressed` reason.
    suppressed    integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_id, id)
);

CREATE TABLE notification_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id     uuid NOT NULL REFERENCES providers (id),
    -- NULL for test sends and rate-limit summaries.
    message_id      bigint,
    channel_id      uuid NOT NULL,
    policy_id       uuid,
    -- Who: '' (the channel's own target), an email address (a user's policy) or a push subscription id.
    recipient       text NOT NULL DEFAULT '' CHECK (length(recipient) <= 400),
    language        text NOT NULL CHECK (language IN ('pt-BR', 'en')),
    subject         text NOT NULL,
    body            text NOT NULL,
    -- Machine-readable form (the webhook body's `notification` and the push payload).
    payload         jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'retrying', 'sent', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- While `sending`: the claim's lease; an expired lease (a crashed worker) makes the row due again.
    claimed_until   timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (provider_id, id),
    UNIQUE (provider_id, message_id, channel_id, recipient),
    FOREIGN KEY (provider_id, message_id) REFERENCES notification_messages (provider_id, id) ON DELETE CASCADE,
    FOREIGN KEY (provider_id, channel_id) REFERENCES notification_channels (provider_id, id) ON DELETE CASCADE
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX notification_deliveries_leased ON notification_deliveries (claimed_until) WHERE status = 'sending';
-- The API lists deliveries newest first, optionally by status: keyset on (created_at, id).
CREATE INDEX notification_deliveries_list ON notification_deliveries (provider_id, created_at, id);
CREATE INDEX notification_deliveries_status ON notification_deliveries (provider_id, status, created_at, id);
-- The rate limit counts a channel's deliveries of the last minute.
CREATE INDEX notification_deliveries_rate ON notification_deliveries (provider_id, channel_id, created_at);
COMMENT ON TABLE notification_deliveries IS
    'One message to one channel and recipient: pending -> sending -> sent, or retrying, and dead after the last try.';

CREATE TABLE push_subscriptions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id uuid NOT NULL REFERENCES providers (id),
    user_id     uuid NOT NULL,
    endpoint    text NOT NULL CHECK (length(endpoint) BETWEEN 12 AND 2000),
    -- The user agent's P-256 public key (base64url, 65 bytes decoded) and auth secret (base64url, 16 bytes).
    p256dh      text NOT NULL CHECK (length(p256dh) BETWEEN 80 AND 100),
    auth        text NOT NULL CHECK (length(auth) BETWEEN 16 AND 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, endpoint),
    UNIQUE (provider_id, id),
    FOREIGN KEY (provider_id, user_id) REFERENCES users (provider_id, id) ON DELETE CASCADE
);
CREATE INDEX push_subscriptions_user ON push_subscriptions (provider_id, user_id);

-- The provider's VAPID key pair, made on first use: the private key (PKCS#8) never leaves the control plane.
CREATE TABLE push_vapid_keys (
    provider_id uuid PRIMARY KEY REFERENCES providers (id),
    private_key bytea NOT NULL,
    public_key  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['notification_channels', 'notification_policies', 'notification_messages',
                             'notification_deliveries', 'push_subscriptions', 'push_vapid_keys'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I '
                       'USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin()) '
                       'WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON notification_channels, notification_policies TO octoisp_app;
GRANT SELECT, INSERT ON notification_messages TO octoisp_app;
GRANT SELECT, INSERT, UPDATE ON notification_deliveries TO octoisp_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON push_subscriptions TO octoisp_app;
GRANT SELECT, INSERT ON push_vapid_keys TO octoisp_app;

-- Providers with deliveries due (or whose sending lease expired), for the delivery workers.
CREATE FUNCTION octoisp_notification_delivery_providers() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
        SELECT provider_id FROM public.notification_deliveries
         WHERE status IN ('pending', 'retrying') AND next_attempt_at <= now()
        UNION
        SELECT provider_id FROM public.notification_deliveries
         WHERE status = 'sending' AND claimed_until < now()
    $$;
REVOKE ALL ON FUNCTION octoisp_notification_delivery_providers() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION octoisp_notification_delivery_providers() TO octoisp_app;
