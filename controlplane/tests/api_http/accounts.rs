//! Signed in for real: users of every predefined role and a Global Admin log in through `POST /api/v1/auth/login`
//! with real JWTs (the auth service, not the test authenticator), then manage users, grants and custom roles.

use super::*;

/// Users with the predefined roles, signed in through `POST /api/v1/auth/login` with real JWTs, on real routes.
/// A harness with the real auth service, users of every predefined role in provider A and a Global Admin, all
/// signed in: their access tokens by email, and the refresh token of each.
struct LoginHarness {
    h: Harness,
    tokens: HashMap<&'static str, String>,
    refresh: HashMap<&'static str, String>,
}

const PASSWORD: &str = "correct horse battery staple 42";

async fn login_harness() -> LoginHarness {
    let db = TestDb::new().await;
    let a = objects(&db, "isp-a").await;
    let b = objects(&db, "isp-b").await;
    let redis = redis::aio::ConnectionManager::new(redis::Client::open(redis_url()).unwrap())
        .await
        .expect("connect to the test Redis");
    let prefix = format!("octoisp-test-{:016x}", rand::random::<u64>());
    let mut auth_cfg = auth::AuthConfig::new("0123456789abcdef0123456789abcdef-test-secret");
    auth_cfg.password_params = auth::PasswordParams {
        m_kib: 1024,
        t: 1,
        p: 1,
    };
    auth_cfg.redis_prefix = prefix.clone();
    let params = auth_cfg.password_params;
    let service = auth::AuthService::new(
        db.app.clone(),
        redis,
        auth_cfg,
        Arc::new(auth::MemoryMailer::default()),
    )
    .unwrap();
    let password = PASSWORD;
    let mut tx = db::tenant_tx(&db.app, a.tenant.provider_id).await.unwrap();
    for (email, role) in [
        ("viewer@a.example", rbac::ROLE_VIEWER),
        ("tech@a.example", rbac::ROLE_TECHNICIAN),
        ("noc@a.example", rbac::ROLE_NOC),
        ("padmin@a.example", rbac::ROLE_PROVIDER_ADMIN),
    ] {
        auth::create_user(
            &mut tx,
            params,
            Some(a.tenant.provider_id),
            email,
            "U",
            Some(password),
            role,
            None,
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let mut tx = db::global_admin_tx(&db.app).await.unwrap();
    auth::create_user(
        &mut tx,
        params,
        None,
        "root@octoisp.example",
        "Root",
        Some(password),
        rbac::ROLE_GLOBAL_ADMIN,
        None,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut config = ApiConfig {
        redis_prefix: prefix.clone(),
        ..ApiConfig::default()
    };
    config.rate_limit.per_ip = 100_000;
    config.rate_limit.per_user = 100_000;
    config.rate_limit.per_tenant = 100_000;
    let limiter = RateLimiter::connect(&redis_url(), &prefix, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    let state = AppState {
        auth: Arc::new(service.clone()),
        auth_service: Some(service),
        limiter: Some(limiter),
        config: Arc::new(config),
        ..support::api::state(&db, HashMap::new())
    };
    let h = Harness {
        router: api::router(state),
        db,
        a,
        b,
    };
    let mut tokens = HashMap::new();
    let mut refresh = HashMap::new();
    for who in [
        "viewer@a.example",
        "tech@a.example",
        "noc@a.example",
        "padmin@a.example",
        "root@octoisp.example",
    ] {
        let body = serde_json::json!({ "email": who, "password": password }).to_string();
        let r = h
            .send(request("POST", "/api/v1/auth/login", "", Body::from(body)))
            .await;
        assert_eq!(r.status, StatusCode::OK, "login {who}: {}", r.text);
        tokens.insert(who, r.body["access_token"].as_str().unwrap().to_owned());
        refresh.insert(who, r.body["refresh_token"].as_str().unwrap().to_owned());
    }
    LoginHarness { h, tokens, refresh }
}

#[tokio::test]
async fn predefined_roles_through_real_login() {
    let LoginHarness { h, tokens, .. } = login_harness().await;
    let bad = serde_json::json!({ "email": "viewer@a.example", "password": "wrong password 123" })
        .to_string();
    assert_error(
        &h.send(request("POST", "/api/v1/auth/login", "", Body::from(bad)))
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    let t = |who: &str| tokens[who].clone();
    let device = format!("/api/v1/devices/{}", h.a.device);
    let perms = |r: &Resp| -> Vec<String> {
        r.body["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    };
    // Viewer: reads devices, cannot change them.
    assert_eq!(
        h.get(&t("viewer@a.example"), &device).await.status,
        StatusCode::OK
    );
    let patch = || Body::from(r#"{"tags": ["x"]}"#);
    assert_error(
        &h.send(request("PATCH", &device, &t("viewer@a.example"), patch()))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // Technician: runs diagnostics, does not manage users.
    let me = h.get(&t("tech@a.example"), "/api/v1/me").await;
    assert!(
        perms(&me).contains(&"diagnostics:run".to_owned()),
        "{}",
        me.text
    );
    let new_user = |email: &str| {
        Body::from(
            serde_json::json!({ "email": email, "name": "N", "role_id": rbac::ROLE_VIEWER.to_string() }).to_string(),
        )
    };
    assert_error(
        &h.send(request(
            "POST",
            "/api/v1/users",
            &t("tech@a.example"),
            new_user("x@a.example"),
        ))
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // NOC: acknowledges alerts and changes devices.
    let me = h.get(&t("noc@a.example"), "/api/v1/me").await;
    assert!(perms(&me).contains(&"alerts:ack".to_owned()), "{}", me.text);
    assert!(
        !perms(&me).contains(&"users:manage".to_owned()),
        "{}",
        me.text
    );
    // Provider Admin: manages users of its provider only.
    let r = h
        .send(request(
            "POST",
            "/api/v1/users",
            &t("padmin@a.example"),
            new_user("new@a.example"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let role = Body::from(format!(r#"{{"role_id": "{}"}}"#, rbac::ROLE_VIEWER));
    let r = h
        .send(request(
            "PUT",
            &format!("/api/v1/users/{}/role", h.b.user),
            &t("padmin@a.example"),
            role,
        ))
        .await;
    assert!(
        matches!(r.status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN),
        "{}",
        r.text
    );
    assert_error(
        &h.get(&t("padmin@a.example"), "/api/v1/providers").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // Global Admin: lists providers.
    let r = h.get(&t("root@octoisp.example"), "/api/v1/providers").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(2));
    h.db.cleanup().await;
}

fn json_body(v: serde_json::Value) -> Body {
    Body::from(v.to_string())
}

#[tokio::test]
async fn provider_admin_manages_users_grants_and_disables_with_immediate_effect() {
    let LoginHarness { h, tokens, refresh } = login_harness().await;
    let admin = tokens["padmin@a.example"].clone();
    let noc = tokens["noc@a.example"].clone();
    // The user list: searchable, with role names; another provider's users never appear.
    let r = h.get(&admin, "/api/v1/users?q=TECH").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", r.text);
    assert_eq!(items[0]["email"], "tech@a.example");
    assert_eq!(items[0]["role_name"], "Technician");
    assert!(r.text.find("password").is_none(), "{}", r.text);
    let tech_id = items[0]["id"].as_str().unwrap().to_owned();
    let r = h.get(&admin, "/api/v1/users?limit=2").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let next = r.body["next_cursor"].as_str().unwrap().to_owned();
    let r2 = h
        .get(&admin, &format!("/api/v1/users?limit=500&cursor={next}"))
        .await;
    let total = 2 + r2.body["items"].as_array().unwrap().len();
    assert_eq!(total, 5, "4 signed-in users of A and the fixture's admin");
    // A single extra permission: the NOC user gains audit:read without changing role, then loses it.
    let noc_id = h.get(&admin, "/api/v1/users?q=noc").await.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_error(
        &h.get(&noc, "/api/v1/audit").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let grant = format!("/api/v1/users/{noc_id}/permissions/audit:read");
    let r = h.send(request("PUT", &grant, &admin, Body::empty())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["extra_permissions"],
        serde_json::json!(["audit:read"])
    );
    assert_eq!(h.get(&noc, "/api/v1/audit").await.status, StatusCode::OK);
    let r = h
        .send(request(
            "PUT",
            &format!("/api/v1/users/{noc_id}/permissions/providers:write"),
            &admin,
            Body::empty(),
        ))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = h
        .send(request(
            "PUT",
            &format!("/api/v1/users/{noc_id}/permissions/no-such:thing"),
            &admin,
            Body::empty(),
        ))
        .await;
    assert!(
        matches!(r.status, StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST),
        "{}",
        r.text
    );
    let r = h
        .send(request("DELETE", &grant, &admin, Body::empty()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_error(
        &h.get(&noc, "/api/v1/audit").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // A NOC given users:manage still cannot disable the Provider Admin (it lacks the admin's permissions), and
    // nobody disables themselves.
    let manage = format!("/api/v1/users/{noc_id}/permissions/users:manage");
    let r = h.send(request("PUT", &manage, &admin, Body::empty())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let admin_id = h.get(&admin, "/api/v1/users?q=padmin").await.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let disable = || json_body(serde_json::json!({"disabled": true}));
    let admin_uri = format!("/api/v1/users/{admin_id}");
    let r = h.send(request("PATCH", &admin_uri, &noc, disable())).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = h
        .send(request("PATCH", &admin_uri, &admin, disable()))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    assert_eq!(h.get(&admin, "/api/v1/me").await.status, StatusCode::OK);
    // Disabling the technician: its access token stops working at once and its refresh token is dead.
    let tech = tokens["tech@a.example"].clone();
    assert_eq!(h.get(&tech, "/api/v1/me").await.status, StatusCode::OK);
    let r = h
        .send(request(
            "PATCH",
            &format!("/api/v1/users/{tech_id}"),
            &admin,
            json_body(serde_json::json!({"disabled": true, "name": "Técnico Zé"})),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body["disabled_at"].is_string());
    assert_eq!(r.body["name"], "Técnico Zé");
    assert_error(
        &h.get(&tech, "/api/v1/me").await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    let body = serde_json::json!({"refresh_token": refresh["tech@a.example"]});
    let r = h
        .send(request("POST", "/api/v1/auth/refresh", "", json_body(body)))
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated");
    let r = h.get(&admin, "/api/v1/users?disabled=true").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1, "{}", r.text);
    // Re-enabled, it signs in again.
    let r = h
        .send(request(
            "PATCH",
            &format!("/api/v1/users/{tech_id}"),
            &admin,
            json_body(serde_json::json!({"disabled": false})),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let login = serde_json::json!({"email": "tech@a.example", "password": PASSWORD});
    let r = h
        .send(request("POST", "/api/v1/auth/login", "", json_body(login)))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Every change is in the audit log, readable with audit:read and filtered by target.
    let r = h
        .get(
            &admin,
            &format!("/api/v1/audit?target_type=user&target_id={tech_id}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let actions: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["users.enable", "users.disable"], "{}", r.text);
    let r = h.get(&admin, "/api/v1/audit?action=users&limit=1").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let cursor = r.body["next_cursor"].as_str().unwrap().to_owned();
    let older = h
        .get(
            &admin,
            &format!("/api/v1/audit?action=users&cursor={cursor}"),
        )
        .await;
    assert!(
        older.body["items"][0]["id"].as_i64() < r.body["items"][0]["id"].as_i64(),
        "pages go from newest to oldest: {}",
        older.text
    );
    assert_error(
        &h.get(&noc, "/api/v1/audit").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    h.db.cleanup().await;
}

#[tokio::test]
async fn custom_roles_are_edited_and_deleted_only_when_unused_and_predefined_ones_never() {
    let LoginHarness { h, tokens, .. } = login_harness().await;
    let admin = tokens["padmin@a.example"].clone();
    let tech = tokens["tech@a.example"].clone();
    let role = format!("/api/v1/roles/{}", h.a.role);
    let r = h.get(&admin, &role).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "Suporte N1");
    let r = h
        .send(request(
            "PATCH",
            &role,
            &admin,
            json_body(serde_json::json!({"permissions": ["devices:read", "diagnostics:run"], "description": "N1"})),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["permissions"],
        serde_json::json!(["devices:read", "diagnostics:run"])
    );
    // Not a permission the Provider Admin could hand out: refused, role unchanged.
    let r = h
        .send(request(
            "PATCH",
            &role,
            &admin,
            json_body(serde_json::json!({"permissions": ["providers:write"]})),
        ))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(
        h.get(&admin, &role).await.body["permissions"],
        serde_json::json!(["devices:read", "diagnostics:run"])
    );
    // Predefined roles are read-only.
    let viewer = format!("/api/v1/roles/{}", rbac::ROLE_VIEWER);
    let r = h
        .send(request(
            "PATCH",
            &viewer,
            &admin,
            json_body(serde_json::json!({"name": "Olhador"})),
        ))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    let r = h
        .send(request("DELETE", &viewer, &admin, Body::empty()))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    // In use: refused; once nobody holds it: deleted.
    let tech_id = h.get(&admin, "/api/v1/users?q=tech").await.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let assign = |role: Uuid| json_body(serde_json::json!({"role_id": role.to_string()}));
    let to_role = format!("/api/v1/users/{tech_id}/role");
    let r = h
        .send(request("PUT", &to_role, &admin, assign(h.a.role)))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let me = h.get(&tech, "/api/v1/me").await;
    assert_eq!(
        me.body["permissions"],
        serde_json::json!(["devices:read", "diagnostics:run"]),
        "the new role applies at the next request"
    );
    let r = h.send(request("DELETE", &role, &tech, Body::empty())).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = h
        .send(request("DELETE", &role, &admin, Body::empty()))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    let r = h
        .send(request(
            "PUT",
            &to_role,
            &admin,
            assign(rbac::ROLE_TECHNICIAN),
        ))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = h
        .send(request("DELETE", &role, &admin, Body::empty()))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_error(
        &h.get(&admin, &role).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    h.db.cleanup().await;
}

#[tokio::test]
async fn global_admin_acts_for_one_provider_in_its_tenant_and_its_audit_chain() {
    let LoginHarness { h, tokens, .. } = login_harness().await;
    let root = tokens["root@octoisp.example"].clone();
    let admin = tokens["padmin@a.example"].clone();
    let a = h.a.tenant.provider_id;
    let for_a = |method: &str, uri: &str, token: &str, body: Body| {
        let mut req = request(method, uri, token, body);
        req.headers_mut()
            .insert("x-octoisp-provider", a.to_string().parse().unwrap());
        req
    };
    // Without the header a Global Admin has no tenant to create a POP in; with it, the POP is A's.
    let pop = json_body(serde_json::json!({"name": "Zona Norte", "slug": "zona-norte"}));
    let r = h.send(for_a("POST", "/api/v1/pops", &root, pop)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["provider_id"], a.to_string());
    let pop_id = r.body["id"].as_str().unwrap().to_owned();
    let r = h.get(&admin, &format!("/api/v1/pops/{pop_id}")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "A sees the POP made for it: {}",
        r.text
    );
    // Lists are A's only, B's objects stay out of reach.
    let r = h
        .send(for_a("GET", "/api/v1/devices", &root, Body::empty()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.text.contains(&h.b.device.to_string()));
    assert!(r.text.contains(&h.a.device.to_string()));
    let r = h
        .send(for_a(
            "GET",
            &format!("/api/v1/devices/{}", h.b.device),
            &root,
            Body::empty(),
        ))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    // A provider's own admin cannot use the header to reach another provider; garbage is a 400; a provider
    // that does not exist is a 404.
    let mut req = request("GET", "/api/v1/devices", &admin, Body::empty());
    req.headers_mut().insert(
        "x-octoisp-provider",
        h.b.tenant.provider_id.to_string().parse().unwrap(),
    );
    assert_error(&h.send(req).await, StatusCode::FORBIDDEN, "forbidden");
    let mut req = request("GET", "/api/v1/devices", &root, Body::empty());
    req.headers_mut()
        .insert("x-octoisp-provider", "' OR 1=1 --".parse().unwrap());
    assert_error(&h.send(req).await, StatusCode::BAD_REQUEST, "bad_request");
    let mut req = request("GET", "/api/v1/devices", &root, Body::empty());
    req.headers_mut().insert(
        "x-octoisp-provider",
        Uuid::now_v7().to_string().parse().unwrap(),
    );
    assert_error(&h.send(req).await, StatusCode::NOT_FOUND, "not_found");
    // The provider's own audit log shows the Global Admin's action, in its chain, and the chains verify.
    let r = h.get(&admin, "/api/v1/audit?action=pops.create").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let entry = &r.body["items"][0];
    assert_eq!(entry["target_id"], pop_id.as_str());
    assert_eq!(entry["provider_id"], a.to_string());
    let root_id = h.get(&root, "/api/v1/me").await.body["user_id"].clone();
    assert_eq!(entry["actor_user_id"], root_id);
    let report = octoisp_controlplane::audit::verify(&h.db.admin, None)
        .await
        .unwrap();
    assert!(report.first_broken.is_none(), "{report:?}");
    h.db.cleanup().await;
}
