//! Operator commands (the CLI, before any user exists): create a user, audited like any other change.

use sqlx::PgPool;
use uuid::Uuid;

use super::caller::Caller;
use super::password::PasswordParams;
use super::rbac;
use crate::api::error::ApiError;

/// Creates a user from the command line: in `provider` (`None`: a Global Admin, role `Global Admin`), with the
/// role named `role` (case-insensitive; a predefined role or one of the provider's). The creation and its audit
/// row (`users.create`, actor: the CLI, without secrets) commit together. Returns the user id.
pub async fn create_user_cli(
    pool: &PgPool,
    params: PasswordParams,
    provider: Option<Uuid>,
    email: &str,
    name: &str,
    password: &str,
    role: &str,
) -> Result<Uuid, ApiError> {
    let mut tx = match provider {
        Some(p) => crate::db::tenant_tx(pool, p).await?,
        None => crate::db::global_admin_tx(pool).await?,
    };
    let role_id: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM roles WHERE lower(name) = lower($1) ORDER BY provider_id NULLS LAST LIMIT 1",
    )
    .bind(role.trim())
    .fetch_optional(&mut *tx)
    .await?;
    let role_id = role_id.ok_or_else(|| ApiError::BadRequest(format!("no role named `{role}`")))?;
    let id = rbac::create_user(
        &mut tx,
        params,
        provider,
        email,
        name,
        Some(password),
        role_id,
        None,
    )
    .await?;
    let cli = cli_caller(provider);
    let after = serde_json::json!({
        "id": id, "provider_id": provider, "email": email.trim(), "name": name.trim(), "role_id": role_id,
    });
    crate::audit::record(
        &mut tx,
        &cli,
        "users.create",
        "user",
        Some(&id.to_string()),
        None,
        Some(after),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// The principal of operator commands run on the control plane host: no user, acting in `provider` (or
/// globally), with request id `cli`.
fn cli_caller(provider: Option<Uuid>) -> Caller {
    Caller {
        user_id: None,
        api_key_id: None,
        provider_id: provider,
        permissions: Default::default(),
        global_admin: provider.is_none(),
        request_id: "cli".to_owned(),
        ip: None,
    }
}

/// Records an operator command (provider and POP creation, enrollment tokens, revocations) in `tx`, the
/// global-admin transaction of the change itself, so the change and its audit row commit together. The row joins
/// the chain of `provider` (`None`: the global chain); `after` must hold no secret.
pub async fn record_operator_action(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    provider: Option<Uuid>,
    action: &str,
    target_type: &str,
    target_id: &str,
    after: serde_json::Value,
) -> Result<(), ApiError> {
    if let Some(p) = provider {
        sqlx::query("SELECT set_config('app.provider_id', $1, true)")
            .bind(p.to_string())
            .execute(&mut **tx)
            .await?;
    }
    let cli = cli_caller(provider);
    crate::audit::record(
        tx,
        &cli,
        action,
        target_type,
        Some(target_id),
        None,
        Some(after),
    )
    .await
}
