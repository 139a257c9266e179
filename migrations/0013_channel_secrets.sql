-- Notification channel secrets encrypted at rest (docs/NOTIFICATIONS.md, "Secrets at rest").
--
-- `secret_ciphertext` is AES-256-GCM (`nonce || ciphertext || tag`) under the key named by `secret_key_id`, with
-- the provider and channel as associated data. The plaintext `secret` column of 0010 stays only for rows written
-- before this migration: the control plane's start-up pass seals them and clears it, and new secrets are never
-- written to it. A row holds one or the other, never both.

ALTER TABLE notification_channels
    ADD COLUMN secret_ciphertext bytea
        CHECK (secret_ciphertext IS NULL OR length(secret_ciphertext) BETWEEN 29 AND 1100),
    ADD COLUMN secret_key_id text
        CHECK (secret_key_id IS NULL OR length(secret_key_id) BETWEEN 1 AND 64),
    ADD CONSTRAINT notification_channels_secret_sealed_with_key
        CHECK ((secret_ciphertext IS NULL) = (secret_key_id IS NULL)),
    ADD CONSTRAINT notification_channels_secret_one_form
        CHECK (secret IS NULL OR secret_ciphertext IS NULL);

-- The providers' VAPID private keys (0010), sealed the same way (associated data: the provider). Without a
-- configured key a new VAPID key is still stored in `private_key` (Web Push needs no tenant secret), and the start-up
-- pass seals it once a key is configured.
ALTER TABLE push_vapid_keys
    ALTER COLUMN private_key DROP NOT NULL,
    ADD COLUMN private_key_ciphertext bytea
        CHECK (private_key_ciphertext IS NULL OR length(private_key_ciphertext) BETWEEN 29 AND 4096),
    ADD COLUMN private_key_key_id text
        CHECK (private_key_key_id IS NULL OR length(private_key_key_id) BETWEEN 1 AND 64),
    ADD CONSTRAINT push_vapid_keys_sealed_with_key
        CHECK ((private_key_ciphertext IS NULL) = (private_key_key_id IS NULL)),
    ADD CONSTRAINT push_vapid_keys_one_form
        CHECK ((private_key IS NULL) <> (private_key_ciphertext IS NULL));
-- For the start-up pass that seals plaintext keys.
GRANT UPDATE (private_key, private_key_ciphertext, private_key_key_id) ON push_vapid_keys TO octoisp_app;

COMMENT ON COLUMN notification_channels.secret IS
    'Plaintext secret of rows older than 0013, sealed and cleared at start; never written otherwise.';
COMMENT ON COLUMN notification_channels.secret_ciphertext IS
    'Write-only secret, AES-256-GCM (nonce || ciphertext || tag); never returned by the API.';
