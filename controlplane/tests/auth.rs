//! Authentication on a real PostgreSQL and Redis: JWT attacks, refresh rotation and reuse detection, logout,
//! password reset, login throttling, API keys, and "nobody grants what they do not hold".

#[allow(dead_code)]
mod support;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use octoisp_controlplane::api::error::ApiError;
use octoisp_controlplane::auth::jwt::AccessClaims;
use octoisp_controlplane::auth::rbac::{self, ROLE_PROVIDER_ADMIN, ROLE_VIEWER};
use octoisp_controlplane::auth::{
    self, AuthConfig, AuthService, Caller, LoginThrottle, MemoryMailer, PasswordParams,
    SupabaseConfig,
};
use octoisp_controlplane::{db, registry};
use support::TestDb;
use uuid::Uuid;

const SECRET: &str = "test-secret-that-is-long-enough-0123456789";
const PASSWORD: &str = "correct horse battery";

struct Env {
    db: TestDb,
    auth: AuthService,
    mailer: MemoryMailer,
    provider: Uuid,
}

fn config() -> AuthConfig {
    let mut c = AuthConfig::new(SECRET);
    c.password_params = PasswordParams {
        m_kib: 1024,
        t: 1,
        p: 1,
    };
    c.redis_prefix = format!("octoisp-test-{}", Uuid::new_v4());
    c
}

async fn env_with(config: AuthConfig) -> Env {
    let db = TestDb::new().await;
    let url =
        std::env::var("OCTOISP_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let redis = redis::Client::open(url)
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let mailer = MemoryMailer::default();
    let auth = AuthService::new(db.app.clone(), redis, config, Arc::new(mailer.clone())).unwrap();
    let provider = registry::create_provider(&db.app, "isp-a", "ISP A", "small")
        .await
        .unwrap();
    Env {
        db,
        auth,
        mailer,
        provider,
    }
}

async fn env() -> Env {
    env_with(config()).await
}

impl Env {
    async fn user(&self, provider: Option<Uuid>, email: &str, role: Uuid) -> Uuid {
        let mut tx = match provider {
            Some(p) => db::tenant_tx(&self.db.app, p).await.unwrap(),
            None => db::global_admin_tx(&self.db.app).await.unwrap(),
        };
        let id = rbac::create_user(
            &mut tx,
            self.auth.config().password_params,
            provider,
            email,
            "Test User",
            Some(PASSWORD),
            role,
            None,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id
    }

    async fn caller(&self, access_token: &str) -> Result<Caller, ApiError> {
        self.auth
            .authenticate(&bearer(access_token), None, "req-1")
            .await
    }
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn now() -> u64 {
    chrono::Utc::now().timestamp() as u64
}

fn claims(user: Uuid, provider: Option<Uuid>) -> AccessClaims {
    AccessClaims {
        sub: user,
        pid: provider,
        ga: provider.is_none(),
        exp: now() + 600,
        iat: now(),
        iss: "octoisp".into(),
        jti: Uuid::new_v4(),
    }
}

fn assert_unauthenticated(r: Result<Caller, ApiError>, what: &str) {
    match r {
        Err(ApiError::Unauthenticated) => {}
        other => panic!("{what}: expected 401, got {other:?}"),
    }
}

#[tokio::test]
async fn login_gives_a_token_with_the_role_permissions() {
    let env = env().await;
    let user = env
        .user(Some(env.provider), "Viewer@Example.com", ROLE_VIEWER)
        .await;
    // Email is case-insensitive.
    let pair = env
        .auth
        .login("viewer@example.COM", PASSWORD, None)
        .await
        .unwrap();
    assert_eq!(pair.expires_in, 900);
    let caller = env.caller(&pair.access_token).await.unwrap();
    assert_eq!(caller.user_id, Some(user));
    assert_eq!(caller.provider_id, Some(env.provider));
    assert!(!caller.global_admin);
    assert!(caller.has("devices:read"));
    assert!(
        matches!(caller.require("devices:write"), Err(ApiError::Forbidden(p)) if p == "devices:write")
    );
    // A second user with the same email in any case is refused.
    let mut tx = db::tenant_tx(&env.db.app, env.provider).await.unwrap();
    let dup = rbac::create_user(
        &mut tx,
        env.auth.config().password_params,
        Some(env.provider),
        "VIEWER@example.com",
        "x",
        Some(PASSWORD),
        ROLE_VIEWER,
        None,
    )
    .await;
    assert!(matches!(dup, Err(ApiError::Conflict(_))), "{dup:?}");
    tx.rollback().await.unwrap();
    // The extractor reads the request id and the same headers.
    let req = Request::builder()
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", pair.access_token),
        )
        .header("x-request-id", "rid-42")
        .body(())
        .unwrap();
    let (mut parts, ()) = req.into_parts();
    let c = Caller::from_request_parts(&mut parts, &env.auth)
        .await
        .unwrap();
    assert_eq!(c.request_id, "rid-42");
    assert_eq!(c.user_id, Some(user));
    // Wrong password and unknown email: the same 401.
    assert!(matches!(
        env.auth
            .login("viewer@example.com", "wrong password!", None)
            .await,
        Err(ApiError::Unauthenticated)
    ));
    assert!(matches!(
        env.auth.login("nobody@example.com", PASSWORD, None).await,
        Err(ApiError::Unauthenticated)
    ));
    // The stored password is an argon2id PHC string.
    let phc: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&env.db.admin)
        .await
        .unwrap();
    assert!(phc.starts_with("$argon2id$") && !phc.contains(PASSWORD));
    env.db.cleanup().await;
}

#[tokio::test]
async fn jwt_attacks_are_rejected() {
    // Supabase with a JWKS (EC P-256 key), to test algorithm confusion against a published public key.
    let key = rcgen::KeyPair::generate().unwrap();
    let raw = key.public_key_raw();
    let (x, y) = (
        URL_SAFE_NO_PAD.encode(&raw[1..33]),
        URL_SAFE_NO_PAD.encode(&raw[33..65]),
    );
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": "k1", "alg": "ES256", "use": "sig"}]});
    let mut cfg = config();
    cfg.supabase = Some(SupabaseConfig {
        hs256_secret: None,
        jwks_json: Some(jwks.to_string()),
        audience: "authenticated".into(),
    });
    let env = env_with(cfg).await;
    let user = env
        .user(Some(env.provider), "tech@example.com", ROLE_VIEWER)
        .await;
    let other = registry::create_provider(&env.db.app, "isp-b", "ISP B", "small")
        .await
        .unwrap();
    let good = env
        .auth
        .issue_access_token(&claims(user, Some(env.provider)))
        .unwrap();
    env.caller(&good)
        .await
        .expect("a well-formed token is accepted");

    let c = serde_json::to_value(claims(user, Some(env.provider))).unwrap();
    // alg: none.
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(&c)
    );
    assert_unauthenticated(env.caller(&none).await, "alg none");
    // Wrong key.
    let wrong = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(b"another-secret-that-is-long-enough-000000").unwrap(),
    )
    .unwrap();
    assert_unauthenticated(env.caller(&wrong).await, "wrong key");
    // Expired.
    let mut expired = claims(user, Some(env.provider));
    expired.exp = now() - 3600;
    expired.iat = now() - 7200;
    let expired = env.auth.issue_access_token(&expired).unwrap();
    assert_unauthenticated(env.caller(&expired).await, "expired");
    // Tampered payload with the original signature: another provider, then Global Admin.
    let parts: Vec<&str> = good.split('.').collect();
    for tampered in [
        serde_json::to_value(claims(user, Some(other))).unwrap(),
        serde_json::to_value(claims(user, None)).unwrap(),
    ] {
        let forged = format!("{}.{}.{}", parts[0], b64(&tampered), parts[2]);
        assert_unauthenticated(env.caller(&forged).await, "tampered payload");
    }
    // Our own signature, but the header claims RS256 / ES256.
    let rs_header = format!(
        "{}.{}.{}",
        b64(&serde_json::json!({"alg": "RS256", "typ": "JWT"})),
        parts[1],
        parts[2]
    );
    assert_unauthenticated(
        env.caller(&rs_header).await,
        "RS256 header on an HMAC token",
    );
    // HS/RS confusion: HMAC keyed with the published public key (PEM and raw), with the JWKS kid.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let sb =
        serde_json::json!({"sub": "supabase-user-1", "aud": "authenticated", "exp": now() + 600});
    for secret in [key.public_key_pem().into_bytes(), raw.to_vec()] {
        let t =
            jsonwebtoken::encode(&hs, &sb, &EncodingKey::from_secret(&secret).unwrap()).unwrap();
        assert_unauthenticated(env.caller(&t).await, "HS256 keyed with the public key");
    }
    // A genuine ES256 Supabase token for a mapped user is accepted (the control for the case above) ...
    let mut tx = db::tenant_tx(&env.db.app, env.provider).await.unwrap();
    let mapped = rbac::create_user(
        &mut tx,
        env.auth.config().password_params,
        Some(env.provider),
        "sb@example.com",
        "SB",
        None,
        ROLE_VIEWER,
        Some("supabase-user-1"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut es = Header::new(Algorithm::ES256);
    es.kid = Some("k1".into());
    let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let genuine = jsonwebtoken::encode(&es, &sb, &signing).unwrap();
    assert_eq!(env.caller(&genuine).await.unwrap().user_id, Some(mapped));
    // ... but not with the wrong audience, an unknown kid or an unmapped subject.
    let wrong_aud = jsonwebtoken::encode(
        &es,
        &serde_json::json!({"sub": "supabase-user-1", "aud": "other", "exp": now() + 600}),
        &signing,
    )
    .unwrap();
    assert_unauthenticated(env.caller(&wrong_aud).await, "wrong audience");
    let mut unknown_kid = es.clone();
    unknown_kid.kid = Some("k2".into());
    assert_unauthenticated(
        env.caller(&jsonwebtoken::encode(&unknown_kid, &sb, &signing).unwrap())
            .await,
        "unknown kid",
    );
    let unmapped = jsonwebtoken::encode(
        &es,
        &serde_json::json!({"sub": "nobody", "aud": "authenticated", "exp": now() + 600}),
        &signing,
    )
    .unwrap();
    assert_unauthenticated(env.caller(&unmapped).await, "unmapped subject");
    // A valid token of a user disabled since.
    sqlx::query("UPDATE users SET disabled_at = now() WHERE id = $1")
        .bind(user)
        .execute(&env.db.admin)
        .await
        .unwrap();
    assert_unauthenticated(env.caller(&good).await, "disabled user");
    // Garbage and other schemes.
    assert_unauthenticated(env.caller("not.a.jwt").await, "garbage");
    let mut basic = HeaderMap::new();
    basic.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Basic dXNlcjpwYXNz"),
    );
    assert_unauthenticated(env.auth.authenticate(&basic, None, "r").await, "basic auth");
    assert_unauthenticated(
        env.auth.authenticate(&HeaderMap::new(), None, "r").await,
        "no credentials",
    );
    env.db.cleanup().await;
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let env = env().await;
    env.user(Some(env.provider), "noc@example.com", ROLE_VIEWER)
        .await;
    let first = env
        .auth
        .login("noc@example.com", PASSWORD, None)
        .await
        .unwrap();
    let second = env.auth.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    env.caller(&second.access_token).await.unwrap();
    let third = env.auth.refresh(&second.refresh_token).await.unwrap();
    // The first token again: reuse. It fails, and so does every token of the family, the newest included.
    assert!(matches!(
        env.auth.refresh(&first.refresh_token).await,
        Err(ApiError::Unauthenticated)
    ));
    assert!(matches!(
        env.auth.refresh(&third.refresh_token).await,
        Err(ApiError::Unauthenticated)
    ));
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL")
            .fetch_one(&env.db.admin)
            .await
            .unwrap();
    assert_eq!(live, 0);
    // Tokens are stored hashed.
    let leaked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE token_hash IN ($1, $2)")
            .bind(&first.refresh_token)
            .bind(&third.refresh_token)
            .fetch_one(&env.db.admin)
            .await
            .unwrap();
    assert_eq!(leaked, 0);
    // Another login is a new family, unaffected.
    let other = env
        .auth
        .login("noc@example.com", PASSWORD, None)
        .await
        .unwrap();
    env.auth.refresh(&other.refresh_token).await.unwrap();
    assert!(matches!(
        env.auth.refresh("garbage").await,
        Err(ApiError::Unauthenticated)
    ));
    env.db.cleanup().await;
}

#[tokio::test]
async fn logout_revokes_the_family() {
    let env = env().await;
    env.user(Some(env.provider), "a@example.com", ROLE_VIEWER)
        .await;
    let first = env
        .auth
        .login("a@example.com", PASSWORD, None)
        .await
        .unwrap();
    let second = env.auth.refresh(&first.refresh_token).await.unwrap();
    let kept = env
        .auth
        .login("a@example.com", PASSWORD, None)
        .await
        .unwrap();
    env.auth.logout(&second.refresh_token).await.unwrap();
    assert!(matches!(
        env.auth.refresh(&second.refresh_token).await,
        Err(ApiError::Unauthenticated)
    ));
    env.auth
        .refresh(&kept.refresh_token)
        .await
        .expect("another session survives");
    env.auth.logout("unknown").await.unwrap();
    env.db.cleanup().await;
}

#[tokio::test]
async fn password_reset_is_single_use_and_expires() {
    let env = env().await;
    env.user(Some(env.provider), "r@example.com", ROLE_VIEWER)
        .await;
    let session = env
        .auth
        .login("r@example.com", PASSWORD, None)
        .await
        .unwrap();
    env.auth
        .request_password_reset("nobody@example.com")
        .await
        .unwrap();
    assert!(
        env.mailer.sent().is_empty(),
        "no mail for an unknown address"
    );
    env.auth
        .request_password_reset("R@example.com")
        .await
        .unwrap();
    let mails = env.mailer.sent();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, "r@example.com");
    let token = mails[0].token.clone();
    assert!(mails[0].body.contains(&token));
    assert!(
        !format!("{:?}", mails[0]).contains(&token),
        "Debug of a mail hides the token"
    );
    // Too short a password: 400, the token is not used up.
    assert!(matches!(
        env.auth.reset_password(&token, "short").await,
        Err(ApiError::BadRequest(_))
    ));
    env.auth
        .reset_password(&token, "a brand new password")
        .await
        .unwrap();
    assert!(matches!(
        env.auth
            .reset_password(&token, "yet another password")
            .await,
        Err(ApiError::Unauthenticated)
    ));
    assert!(matches!(
        env.auth.login("r@example.com", PASSWORD, None).await,
        Err(ApiError::Unauthenticated)
    ));
    env.auth
        .login("r@example.com", "a brand new password", None)
        .await
        .unwrap();
    // Sessions from before the reset are gone.
    assert!(matches!(
        env.auth.refresh(&session.refresh_token).await,
        Err(ApiError::Unauthenticated)
    ));
    // An expired token.
    env.auth
        .request_password_reset("r@example.com")
        .await
        .unwrap();
    let token = env.mailer.sent()[1].token.clone();
    sqlx::query(
        "UPDATE password_resets SET expires_at = now() - interval '1 second' WHERE used_at IS NULL",
    )
    .execute(&env.db.admin)
    .await
    .unwrap();
    assert!(matches!(
        env.auth.reset_password(&token, "a third password!").await,
        Err(ApiError::Unauthenticated)
    ));
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM password_resets WHERE token_hash = $1")
            .bind(&token)
            .fetch_one(&env.db.admin)
            .await
            .unwrap();
    assert_eq!(stored, 0, "reset tokens are stored hashed");
    // Requests beyond the per-address limit (5 per window by default) send nothing.
    for _ in 0..5 {
        env.auth
            .request_password_reset("r@example.com")
            .await
            .unwrap();
    }
    assert_eq!(env.mailer.sent().len(), 5, "3 more mails, then silence");
    env.db.cleanup().await;
}

fn retry_after(err: ApiError) -> u64 {
    let ApiError::RateLimited { retry_after_secs } = err else {
        panic!("expected 429, got {err:?}");
    };
    let resp = ApiError::RateLimited { retry_after_secs }.into_response();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let header: u64 = resp.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&header), "{header}");
    retry_after_secs
}

#[tokio::test]
async fn login_is_throttled_per_account() {
    let mut cfg = config();
    cfg.login_throttle = LoginThrottle {
        per_account: 3,
        per_ip: 100,
        ..LoginThrottle::default()
    };
    let env = env_with(cfg).await;
    env.user(Some(env.provider), "t@example.com", ROLE_VIEWER)
        .await;
    let ip: IpAddr = "198.51.100.1".parse().unwrap();
    for _ in 0..3 {
        assert!(matches!(
            env.auth
                .login("t@example.com", "wrong password", Some(ip))
                .await,
            Err(ApiError::Unauthenticated)
        ));
    }
    // Over the limit: 429 even with the right password, from any IP, in any case of the email.
    retry_after(
        env.auth
            .login("t@example.com", PASSWORD, Some(ip))
            .await
            .unwrap_err(),
    );
    retry_after(
        env.auth
            .login(
                "T@Example.com",
                PASSWORD,
                Some("203.0.113.9".parse().unwrap()),
            )
            .await
            .unwrap_err(),
    );
    env.db.cleanup().await;
}

#[tokio::test]
async fn login_is_throttled_per_ip() {
    let mut cfg = config();
    cfg.login_throttle = LoginThrottle {
        per_account: 100,
        per_ip: 3,
        ..LoginThrottle::default()
    };
    let env = env_with(cfg).await;
    env.user(Some(env.provider), "victim@example.com", ROLE_VIEWER)
        .await;
    let ip: IpAddr = "198.51.100.2".parse().unwrap();
    for i in 0..3 {
        let r = env
            .auth
            .login(&format!("guess{i}@example.com"), "wrong password", Some(ip))
            .await;
        assert!(matches!(r, Err(ApiError::Unauthenticated)));
    }
    retry_after(
        env.auth
            .login("victim@example.com", PASSWORD, Some(ip))
            .await
            .unwrap_err(),
    );
    // Another address is not affected.
    env.auth
        .login(
            "victim@example.com",
            PASSWORD,
            Some("198.51.100.3".parse().unwrap()),
        )
        .await
        .unwrap();
    env.db.cleanup().await;
}

#[tokio::test]
async fn api_keys_are_shown_once_stored_hashed_scoped_and_revocable() {
    let env = env().await;
    env.user(Some(env.provider), "admin@example.com", ROLE_PROVIDER_ADMIN)
        .await;
    let pair = env
        .auth
        .login("admin@example.com", PASSWORD, None)
        .await
        .unwrap();
    let admin = env.caller(&pair.access_token).await.unwrap();
    let mut tx = admin.tx(&env.db.app, None).await.unwrap();
    // A Provider Admin cannot hand out a global permission it does not hold.
    let refused =
        auth::create_api_key(&mut tx, &admin, "bad", &["providers:read".to_owned()], None).await;
    assert!(
        matches!(refused, Err(ApiError::Forbidden(_))),
        "{refused:?}"
    );
    let (row, plaintext) = auth::create_api_key(
        &mut tx,
        &admin,
        "integration",
        &["devices:read".to_owned()],
        None,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(plaintext.starts_with(&format!("oik_{}_", row.prefix)));
    // The secret is base64url, which may itself contain '_': cut the known prefix rather than split on '_'.
    let secret = plaintext
        .strip_prefix(&format!("oik_{}_", row.prefix))
        .unwrap();
    assert!(secret.len() >= 32, "{secret}");
    // Nowhere in the database, in any column.
    let dump: Vec<String> = sqlx::query_scalar("SELECT row_to_json(k)::text FROM api_keys k")
        .fetch_all(&env.db.admin)
        .await
        .unwrap();
    assert_eq!(dump.len(), 1);
    assert!(!dump[0].contains(secret) && !dump[0].contains(&plaintext));
    // Usable through both headers, with exactly its permissions.
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("ApiKey {plaintext}")).unwrap(),
    );
    let key_caller = env.auth.authenticate(&h, None, "r").await.unwrap();
    assert_eq!(key_caller.api_key_id, Some(row.id));
    assert_eq!(key_caller.provider_id, Some(env.provider));
    assert_eq!(
        key_caller.permissions.iter().collect::<Vec<_>>(),
        vec!["devices:read"]
    );
    assert!(key_caller.require("devices:write").is_err());
    let mut x = HeaderMap::new();
    x.insert("x-api-key", HeaderValue::from_str(&plaintext).unwrap());
    env.auth.authenticate(&x, None, "r").await.unwrap();
    // A key cannot mint keys.
    let mut tx = db::tenant_tx(&env.db.app, env.provider).await.unwrap();
    assert!(
        auth::create_api_key(
            &mut tx,
            &key_caller,
            "child",
            &["devices:read".to_owned()],
            None
        )
        .await
        .is_err()
    );
    tx.rollback().await.unwrap();
    // The right prefix with a wrong secret.
    let mut forged = HeaderMap::new();
    forged.insert(
        "x-api-key",
        HeaderValue::from_str(&format!("oik_{}_{}", row.prefix, "A".repeat(43))).unwrap(),
    );
    assert_unauthenticated(
        env.auth.authenticate(&forged, None, "r").await,
        "wrong secret",
    );
    // Revoked: refused at the next request.
    let mut tx = admin.tx(&env.db.app, None).await.unwrap();
    let revoked = auth::revoke_api_key(&mut tx, &admin, row.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    tx.commit().await.unwrap();
    assert_unauthenticated(env.auth.authenticate(&h, None, "r").await, "revoked key");
    // Another provider cannot see or revoke it.
    let other = registry::create_provider(&env.db.app, "isp-b", "ISP B", "small")
        .await
        .unwrap();
    let mut tx = db::tenant_tx(&env.db.app, other).await.unwrap();
    assert!(auth::list_api_keys(&mut tx).await.unwrap().is_empty());
    tx.rollback().await.unwrap();
    env.db.cleanup().await;
}

#[tokio::test]
async fn a_key_loses_what_its_creator_loses() {
    let env = env().await;
    let creator = env
        .user(Some(env.provider), "admin@example.com", ROLE_PROVIDER_ADMIN)
        .await;
    let pair = env
        .auth
        .login("admin@example.com", PASSWORD, None)
        .await
        .unwrap();
    let admin = env.caller(&pair.access_token).await.unwrap();
    let mut tx = admin.tx(&env.db.app, None).await.unwrap();
    let perms = vec!["devices:read".to_owned(), "devices:write".to_owned()];
    let (_, key) = auth::create_api_key(&mut tx, &admin, "k", &perms, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_str(&key).unwrap());
    assert!(
        env.auth
            .authenticate(&h, None, "r")
            .await
            .unwrap()
            .has("devices:write")
    );
    // The creator becomes a Viewer: the key keeps only devices:read.
    sqlx::query("UPDATE users SET role_id = $2 WHERE id = $1")
        .bind(creator)
        .bind(ROLE_VIEWER)
        .execute(&env.db.admin)
        .await
        .unwrap();
    let c = env.auth.authenticate(&h, None, "r").await.unwrap();
    assert!(c.has("devices:read") && !c.has("devices:write"));
    // The creator is disabled: the key stops working.
    sqlx::query("UPDATE users SET disabled_at = now() WHERE id = $1")
        .bind(creator)
        .execute(&env.db.admin)
        .await
        .unwrap();
    assert_unauthenticated(
        env.auth.authenticate(&h, None, "r").await,
        "key of a disabled creator",
    );
    env.db.cleanup().await;
}

#[tokio::test]
async fn nobody_grants_what_they_do_not_hold() {
    let env = env().await;
    let admin_id = env
        .user(Some(env.provider), "admin@example.com", ROLE_PROVIDER_ADMIN)
        .await;
    let admin = env
        .caller(
            &env.auth
                .login("admin@example.com", PASSWORD, None)
                .await
                .unwrap()
                .access_token,
        )
        .await
        .unwrap();
    // The admin makes a "user manager" role: it may manage users and roles but only read devices.
    let mut tx = admin.tx(&env.db.app, None).await.unwrap();
    let manager_perms: Vec<String> = ["users:manage", "roles:manage", "devices:read"]
        .map(String::from)
        .to_vec();
    let role = rbac::create_role(
        &mut tx,
        &admin,
        env.provider,
        "User manager",
        "",
        &manager_perms,
    )
    .await
    .unwrap();
    assert_eq!(role.permissions, {
        let mut p = manager_perms.clone();
        p.sort();
        p
    });
    let global = rbac::create_role(
        &mut tx,
        &admin,
        env.provider,
        "Bad",
        "",
        &["providers:write".to_owned()],
    )
    .await;
    assert!(matches!(global, Err(ApiError::Forbidden(_))), "{global:?}");
    tx.commit().await.unwrap();
    let manager_id = env
        .user(Some(env.provider), "manager@example.com", role.id)
        .await;
    let viewer_id = env
        .user(Some(env.provider), "viewer@example.com", ROLE_VIEWER)
        .await;
    let manager = env
        .caller(
            &env.auth
                .login("manager@example.com", PASSWORD, None)
                .await
                .unwrap()
                .access_token,
        )
        .await
        .unwrap();

    let mut tx = manager.tx(&env.db.app, None).await.unwrap();
    let r = rbac::create_role(
        &mut tx,
        &manager,
        env.provider,
        "Writer",
        "",
        &["devices:write".to_owned()],
    )
    .await;
    assert!(
        matches!(r, Err(ApiError::Forbidden(ref p)) if p == "devices:write"),
        "{r:?}"
    );
    let r = rbac::set_user_role(&mut tx, &manager, viewer_id, ROLE_PROVIDER_ADMIN).await;
    assert!(matches!(r, Err(ApiError::Forbidden(_))), "{r:?}");
    let r = rbac::grant_user_permission(&mut tx, &manager, manager_id, "devices:write").await;
    assert!(matches!(r, Err(ApiError::Forbidden(_))), "{r:?}");
    // What the manager holds, it may grant.
    rbac::grant_user_permission(&mut tx, &manager, viewer_id, "users:manage")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let perms = rbac::effective_permissions(&env.db.app, viewer_id)
        .await
        .unwrap();
    assert!(
        perms.contains("users:manage")
            && perms.contains("devices:read")
            && !perms.contains("devices:write")
    );
    // The admin grants devices:write; revoking takes it away at once.
    let mut tx = admin.tx(&env.db.app, None).await.unwrap();
    rbac::grant_user_permission(&mut tx, &admin, viewer_id, "devices:write")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        rbac::effective_permissions(&env.db.app, viewer_id)
            .await
            .unwrap()
            .contains("devices:write")
    );
    let mut tx = admin.tx(&env.db.app, None).await.unwrap();
    rbac::revoke_user_permission(&mut tx, &admin, viewer_id, "devices:write")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        !rbac::effective_permissions(&env.db.app, viewer_id)
            .await
            .unwrap()
            .contains("devices:write")
    );

    // Another provider sees the predefined roles but not this provider's, and cannot use them.
    let other = registry::create_provider(&env.db.app, "isp-b", "ISP B", "small")
        .await
        .unwrap();
    let mut tx = db::tenant_tx(&env.db.app, other).await.unwrap();
    let roles = rbac::list_roles(&mut tx).await.unwrap();
    assert_eq!(roles.len(), 5);
    assert!(roles.iter().all(|r| r.provider_id.is_none()));
    let r = rbac::create_user(
        &mut tx,
        env.auth.config().password_params,
        Some(other),
        "b@example.com",
        "B",
        Some(PASSWORD),
        role.id,
        None,
    )
    .await;
    assert!(matches!(r, Err(ApiError::BadRequest(_))), "{r:?}");
    tx.rollback().await.unwrap();
    // A provider user can never hold the Global Admin role.
    let mut tx = db::tenant_tx(&env.db.app, env.provider).await.unwrap();
    let r = rbac::create_user(
        &mut tx,
        env.auth.config().password_params,
        Some(env.provider),
        "ga@example.com",
        "GA",
        Some(PASSWORD),
        rbac::ROLE_GLOBAL_ADMIN,
        None,
    )
    .await;
    assert!(matches!(r, Err(ApiError::BadRequest(_))), "{r:?}");
    tx.rollback().await.unwrap();
    let _ = admin_id;
    env.db.cleanup().await;
}

#[tokio::test]
async fn a_global_admin_holds_every_permission() {
    let env = env().await;
    let ga = env
        .user(None, "root@example.com", rbac::ROLE_GLOBAL_ADMIN)
        .await;
    let pair = env
        .auth
        .login("root@example.com", PASSWORD, None)
        .await
        .unwrap();
    let c = env.caller(&pair.access_token).await.unwrap();
    assert_eq!(c.user_id, Some(ga));
    assert!(c.global_admin && c.provider_id.is_none());
    assert!(c.has("providers:write"));
    let all = rbac::effective_permissions(&env.db.app, ga).await.unwrap();
    // Every permission of the catalogue (migrations add to it: count it rather than hard-code the number).
    let catalogue: i64 = sqlx::query_scalar("SELECT count(*) FROM permissions")
        .fetch_one(&env.db.admin)
        .await
        .unwrap();
    assert_eq!(all.len() as i64, catalogue);
    assert!(all.contains("notifications:manage"), "{all:?}");
    env.auth.refresh(&pair.refresh_token).await.unwrap();
    env.db.cleanup().await;
}
