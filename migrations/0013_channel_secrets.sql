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

COMMENT ON COLUMN notification_channels.secret IS
    'Plaintext secret of rows older than 0013, sealed and cleared at start; never written otherwise.';
COMMENT ON COLUMN notification_channels.secret_ciphertext IS
    'Write-only secret, AES-256-GCM (nonce || ciphertext || tag); never returned by the API.';
