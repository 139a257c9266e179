//! Channel secrets at rest: stored encrypted and still used to sign and authenticate, rows from before encryption
//! sealed in place, rotated keys, and no key at all (secrets refused, never stored in plaintext).

use super::*;

/// A channel's stored row, read as the database owner would see it.
async fn stored_secret(
    db: &TestDb,
    channel: Uuid,
) -> (Option<String>, Option<Vec<u8>>, Option<String>) {
    sqlx::query_as(
        "SELECT secret, secret_ciphertext, secret_key_id FROM notification_channels WHERE id = $1",
    )
    .bind(channel)
    .fetch_one(&db.admin)
    .await
    .unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn channel_secrets_are_stored_encrypted_and_still_sign_and_authenticate() {
    let h = harness().await;
    let token = "123456789:AAH-sealed_token_value_0123456789";
    let (telegram, _) = h
        .channel(
            "a",
            json!({"name": "TG", "kind": "telegram", "config": {"chat_id": "-1001"}, "secret": token}),
        )
        .await;
    let hook_rx = HttpReceiver::start(&[], 200).await;
    let (hook, created) = h
        .channel(
            "a",
            json!({"name": "Hook", "kind": "webhook", "config": {"url": format!("{}/hook", hook_rx.url())}}),
        )
        .await;
    let hook_secret = created["secret"].as_str().unwrap().to_owned();
    for (channel, plain) in [(telegram, token), (hook, hook_secret.as_str())] {
        let (secret, ciphertext, key_id) = stored_secret(&h.db, channel).await;
        assert_eq!(secret, None, "plaintext column written");
        let ciphertext = ciphertext.expect("a sealed secret");
        assert!(
            !contains(&ciphertext, plain.as_bytes()),
            "plaintext in the ciphertext"
        );
        assert!(
            !contains(&ciphertext, &plain.as_bytes()[..12]),
            "plaintext prefix in the ciphertext"
        );
        assert_eq!(key_id.as_deref(), Some(secretbox::key_id(&KEY_1).as_str()));
    }
    // No column of the table, as text, holds either secret.
    let dump: String = sqlx::query_scalar(
        "SELECT string_agg(t::text, '|') FROM notification_channels t WHERE provider_id = $1",
    )
    .bind(h.a.provider_id)
    .fetch_one(&h.db.admin)
    .await
    .unwrap();
    assert!(
        !dump.contains("sealed_token_value") && !dump.contains(&hook_secret),
        "{dump}"
    );
    // The provider's VAPID private key, made on first use, is sealed too.
    let r = h
        .call("GET", "/api/v1/push/vapid-public-key", "a", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (plain, sealed, key_id): (Option<Vec<u8>>, Option<Vec<u8>>, Option<String>) = sqlx::query_as(
        "SELECT private_key, private_key_ciphertext, private_key_key_id FROM push_vapid_keys WHERE provider_id = $1",
    )
    .bind(h.a.provider_id)
    .fetch_one(&h.db.admin)
    .await
    .unwrap();
    assert!(
        plain.is_none() && sealed.is_some(),
        "VAPID key stored in plaintext"
    );
    assert_eq!(key_id.as_deref(), Some(secretbox::key_id(&KEY_1).as_str()));
    let listed = h
        .call("GET", "/api/v1/notifications/channels", "a", None)
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert!(
        listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["has_secret"] == true),
        "{}",
        listed.text
    );

    // Delivery opens them: the Telegram stand-in sees the token in its path, the webhook the right signature.
    let tg_rx = HttpReceiver::start(&[], 200).await;
    h.policy("a", json!({"name": "all-tg", "channel_id": telegram}))
        .await;
    h.policy("a", json!({"name": "all-hook", "channel_id": hook}))
        .await;
    let n = Notifier::start(h.db.app.clone(), config(None, Some(&tg_rx)));
    insert_events(&h.db, h.a.provider_id, &[ev("critical")]).await;
    wait_count(&h.db, SENT, h.a.provider_id, 2).await;
    let tg = tg_rx.requests();
    assert_eq!(tg.len(), 1);
    assert_eq!(tg[0].uri.path(), format!("/bot{token}/sendMessage"));
    let hooks = hook_rx.requests();
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        hooks[0].header("x-octoisp-signature"),
        format!(
            "sha256={}",
            hmac_hex(hook_secret.as_bytes(), &hooks[0].body)
        )
    );
    n.stop().await;
    h.db.cleanup().await;
}

#[tokio::test]
async fn plaintext_rows_from_before_encryption_are_sealed_and_keep_working() {
    let h = harness().await;
    let rx = HttpReceiver::start(&[], 200).await;
    // A row as written before migration 0013: the secret in the plaintext column.
    let legacy = "whsec_legacy_plaintext_secret_0001";
    let channel: Uuid = sqlx::query_scalar(
        "INSERT INTO notification_channels (provider_id, name, kind, config, secret) \
         VALUES ($1, 'Old hook', 'webhook', $2, $3) RETURNING id",
    )
    .bind(h.a.provider_id)
    .bind(json!({"url": format!("{}/hook", rx.url())}))
    .bind(legacy)
    .fetch_one(&h.db.admin)
    .await
    .unwrap();
    // Without a key the pass refuses (and stores nothing); with one it seals the row, once.
    let err = secretbox::seal_plaintext_channels(&h.db.app, &SecretBox::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("OCTOISP_CP__SECRETS__KEY"),
        "{err}"
    );
    assert_eq!(
        stored_secret(&h.db, channel).await.0.as_deref(),
        Some(legacy)
    );
    let keys = sealing_with(KEY_1, &[]);
    assert_eq!(
        secretbox::seal_plaintext_channels(&h.db.app, &keys)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        secretbox::seal_plaintext_channels(&h.db.app, &keys)
            .await
            .unwrap(),
        0
    );
    let (secret, ciphertext, _) = stored_secret(&h.db, channel).await;
    assert_eq!(secret, None);
    assert!(!contains(&ciphertext.unwrap(), legacy.as_bytes()));

    h.policy("a", json!({"name": "all", "channel_id": channel}))
        .await;
    let n = Notifier::start(h.db.app.clone(), config(None, None));
    insert_events(&h.db, h.a.provider_id, &[ev("critical")]).await;
    wait_count(&h.db, SENT, h.a.provider_id, 1).await;
    let reqs = rx.requests();
    assert_eq!(
        reqs[0].header("x-octoisp-signature"),
        format!("sha256={}", hmac_hex(legacy.as_bytes(), &reqs[0].body))
    );
    n.stop().await;
    h.db.cleanup().await;
}

#[tokio::test]
async fn rotated_keys_open_old_secrets_and_a_missing_key_is_a_clear_delivery_error() {
    // Channel sealed under KEY_1.
    let h = harness().await;
    let rx = HttpReceiver::start(&[], 200).await;
    let (channel, created) = h
        .channel(
            "a",
            json!({"name": "Hook", "kind": "webhook", "config": {"url": format!("{}/hook", rx.url())}}),
        )
        .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    h.policy("a", json!({"name": "all", "channel_id": channel}))
        .await;

    // KEY_2 current, KEY_1 kept as a previous key: the old ciphertext still signs.
    let n = Notifier::start_with(
        h.db.app.clone(),
        config(None, None),
        sealing_with(KEY_2, &[KEY_1]),
    );
    insert_events(&h.db, h.a.provider_id, &[ev("critical")]).await;
    wait_count(&h.db, SENT, h.a.provider_id, 1).await;
    let reqs = rx.requests();
    assert_eq!(
        reqs[0].header("x-octoisp-signature"),
        format!("sha256={}", hmac_hex(secret.as_bytes(), &reqs[0].body))
    );
    n.stop().await;

    // KEY_1 dropped from the configuration: the delivery fails with an error naming the key, and is dead after
    // the last attempt; nothing reaches the endpoint and nothing panics.
    let n = Notifier::start_with(
        h.db.app.clone(),
        config(None, None),
        sealing_with(KEY_2, &[]),
    );
    insert_events(&h.db, h.a.provider_id, &[ev("warning")]).await;
    wait_count(
        &h.db,
        "SELECT count(*) FROM notification_deliveries WHERE provider_id = $1 AND status = 'dead'",
        h.a.provider_id,
        1,
    )
    .await;
    assert_eq!(rx.requests().len(), 1, "sent without its secret");
    let dead = h
        .call("GET", "/api/v1/notifications/dead-letters", "a", None)
        .await;
    let error = dead.body["items"][0]["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains(&secretbox::key_id(&KEY_1)) && error.contains("not configured"),
        "{error}"
    );
    assert!(!error.contains(&secret), "{error}");
    n.stop().await;

    // A secret written after the rotation is sealed with the new key.
    let h2 = harness_with(sealing_with(KEY_2, &[KEY_1])).await;
    let (c2, _) = h2
        .channel(
            "a",
            json!({"name": "Hook 2", "kind": "webhook", "config": {"url": format!("{}/hook", rx.url())}}),
        )
        .await;
    assert_eq!(
        stored_secret(&h2.db, c2).await.2.as_deref(),
        Some(secretbox::key_id(&KEY_2).as_str())
    );
    h.db.cleanup().await;
    h2.db.cleanup().await;
}

#[tokio::test]
async fn without_a_key_secrets_are_refused_not_stored_in_plaintext() {
    let h = harness_with(Arc::new(SecretBox::default())).await;
    for body in [
        json!({"name": "TG", "kind": "telegram", "config": {"chat_id": "-1"}, "secret": "123456789:AAH-refused_token_value_0123"}),
        json!({"name": "Hook", "kind": "webhook", "config": {"url": "https://hooks.example.net/x"}}),
    ] {
        let r = h
            .call("POST", "/api/v1/notifications/channels", "a", Some(body))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert!(r.text.contains("OCTOISP_CP__SECRETS__KEY"), "{}", r.text);
        assert!(!r.text.contains("refused_token_value"), "{}", r.text);
    }
    let stored = scalar(
        &h.db,
        "SELECT count(*) FROM notification_channels WHERE provider_id = $1",
        h.a.provider_id,
    )
    .await;
    assert_eq!(stored, 0);
    // A channel without a secret is still fine.
    h.channel(
        "a",
        json!({"name": "Mail", "kind": "email", "config": {"to": ["noc@isp-a.test"]}}),
    )
    .await;
    h.db.cleanup().await;
}
