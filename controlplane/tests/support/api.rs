//! The HTTP API in-process for tests: bearer tokens mapped to callers ([`TestAuth`]), a router over a test
//! database ([`router`]), and a GET helper answering status and JSON ([`get`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use futures::future::BoxFuture;
use octoisp_controlplane::api::error::ApiError;
use octoisp_controlplane::api::{self, ApiConfig, AppState, Authenticator, RequestContext};
use octoisp_controlplane::auth::Caller;
use serde_json::Value;
use tower::ServiceExt as _;
use uuid::Uuid;

use super::TestDb;

/// Bearer token -> caller. A request without `Authorization` is anonymous (the route then answers 401 if it
/// needs a caller); an unknown token is refused.
pub struct TestAuth(pub HashMap<String, Caller>);

impl Authenticator for TestAuth {
    fn authenticate<'a>(
        &'a self,
        headers: &'a HeaderMap,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Option<Caller>, ApiError>> {
        Box::pin(async move {
            let Some(value) = headers.get(header::AUTHORIZATION) else {
                return Ok(None);
            };
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or(ApiError::Unauthenticated)?;
            let mut caller = self
                .0
                .get(token)
                .cloned()
                .ok_or(ApiError::Unauthenticated)?;
            caller.request_id = ctx.request_id.clone();
            caller.ip = ctx.ip;
            Ok(Some(caller))
        })
    }
}

/// A user of `provider` with `perms`.
pub fn caller(provider: Uuid, perms: &[&str]) -> Caller {
    Caller {
        user_id: Some(Uuid::now_v7()),
        api_key_id: None,
        provider_id: Some(provider),
        permissions: perms.iter().map(|p| (*p).to_owned()).collect(),
        global_admin: false,
        request_id: String::new(),
        ip: None,
    }
}

/// The state of the API over `db`'s application pool, with `tokens` as the only credentials, the default
/// configuration, no rate limit and no command queue. A test that needs one of those sets it on this value
/// (`AppState { commands: Some(..), ..state(&db, tokens) }`).
pub fn state(db: &TestDb, tokens: HashMap<String, Caller>) -> AppState {
    AppState {
        pool: db.app.clone(),
        auth: Arc::new(TestAuth(tokens)),
        limiter: None,
        config: Arc::new(ApiConfig::default()),
        auth_service: None,
        ca_fingerprint: None,
        live: Default::default(),
        commands: None,
        secrets: Default::default(),
    }
}

/// The API of [`state`].
pub fn router(db: &TestDb, tokens: HashMap<String, Caller>) -> axum::Router {
    api::router(state(db, tokens))
}

/// GET `uri` with `token`: the status and the JSON body (`Null` when the body is not JSON).
pub async fn get(router: &axum::Router, token: &str, uri: &str) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("a valid request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 4000))));
    let resp = router
        .clone()
        .oneshot(req)
        .await
        .expect("the router answers");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .expect("a bounded body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
