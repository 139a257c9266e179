//! Role-based access control: the permission catalogue, roles (predefined and custom), users, extra grants.
//!
//! Nobody grants what they do not hold: creating a role, giving a user a role or a permission, all require the
//! caller to hold every permission involved ([`ensure_may_grant`]). Functions here take the caller's transaction
//! (bound to its tenant by row-level security), so the change and its audit row commit together; they check the
//! management permission themselves too, as a second line behind the route's check.

use std::collections::BTreeSet;

use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::caller::Caller;
use super::password::{self, PasswordParams};
use crate::api::error::ApiError;

/// Id of the predefined Global Admin role.
pub const ROLE_GLOBAL_ADMIN: Uuid = Uuid::from_u128(0x00000000_0000_4000_8000_000000000001);
/// Id of the predefined Provider Admin role.
pub const ROLE_PROVIDER_ADMIN: Uuid = Uuid::from_u128(0x00000000_0000_4000_8000_000000000002);
/// Id of the predefined NOC role.
pub const ROLE_NOC: Uuid = Uuid::from_u128(0x00000000_0000_4000_8000_000000000003);
/// Id of the predefined Technician role.
pub const ROLE_TECHNICIAN: Uuid = Uuid::from_u128(0x00000000_0000_4000_8000_000000000004);
/// Id of the predefined Viewer role.
pub const ROLE_VIEWER: Uuid = Uuid::from_u128(0x00000000_0000_4000_8000_000000000005);

/// A role and its permissions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Role {
    /// Role id.
    pub id: Uuid,
    /// Owning provider; `None` for the predefined roles.
    pub provider_id: Option<Uuid>,
    /// Name, unique per provider (case-insensitive).
    pub name: String,
    /// Free text.
    pub description: String,
    /// Permission codes, sorted.
    pub permissions: Vec<String>,
}

/// A permission of the catalogue.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Permission {
    /// Code, such as `devices:read`.
    pub code: String,
    /// Module, such as `devices`.
    pub module: String,
    /// Action, such as `read`.
    pub action: String,
    /// What it allows.
    pub description: String,
    /// Meaningful for Global Admins only (providers).
    pub global_only: bool,
}

/// Maps the schema's refusals of a bad reference or check to 400, everything else as usual.
fn bad_input(what: &'static str) -> impl FnOnce(sqlx::Error) -> ApiError {
    move |err| match crate::db::sqlstate(&err).as_deref() {
        Some("23503" | "23514" | "22P02" | "22001") => {
            ApiError::BadRequest(format!("invalid {what}"))
        }
        _ => ApiError::from(err),
    }
}

/// Fails with 403 naming the first permission of `permissions` the caller does not hold.
pub fn ensure_may_grant<S: AsRef<str>>(caller: &Caller, permissions: &[S]) -> Result<(), ApiError> {
    for p in permissions {
        caller.require(p.as_ref())?;
    }
    Ok(())
}

/// Fails with 403 unless the caller holds every permission of role `role_id` (404: no such role visible).
pub async fn ensure_may_grant_role(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    role_id: Uuid,
) -> Result<(), ApiError> {
    let role = get_role(tx, role_id).await?.ok_or(ApiError::NotFound)?;
    if role.id == ROLE_GLOBAL_ADMIN && !caller.global_admin {
        return Err(ApiError::Forbidden("providers:write".into()));
    }
    ensure_may_grant(caller, &role.permissions)
}

/// The permission catalogue.
pub async fn list_permissions(
    tx: &mut Transaction<'static, Postgres>,
) -> Result<Vec<Permission>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT code, module, action, description, global_only FROM permissions ORDER BY code",
    )
    .fetch_all(&mut **tx)
    .await?)
}

const ROLE_SELECT: &str = "SELECT r.id, r.provider_id, r.name, r.description, \
     coalesce(array_agg(rp.permission ORDER BY rp.permission) FILTER (WHERE rp.permission IS NOT NULL), '{}') \
     FROM roles r LEFT JOIN role_permissions rp ON rp.role_id = r.id";

type RoleRow = (Uuid, Option<Uuid>, String, String, Vec<String>);

fn role_of(r: RoleRow) -> Role {
    Role {
        id: r.0,
        provider_id: r.1,
        name: r.2,
        description: r.3,
        permissions: r.4,
    }
}

/// Roles visible in the transaction: the predefined ones and the tenant's, predefined first, then by name.
pub async fn list_roles(tx: &mut Transaction<'static, Postgres>) -> Result<Vec<Role>, ApiError> {
    let sql = format!(
        "{ROLE_SELECT} GROUP BY r.id ORDER BY r.provider_id NULLS FIRST, lower(r.name), r.id"
    );
    let rows: Vec<RoleRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows.into_iter().map(role_of).collect())
}

/// One role, if visible.
pub async fn get_role(
    tx: &mut Transaction<'static, Postgres>,
    role_id: Uuid,
) -> Result<Option<Role>, ApiError> {
    let sql = format!("{ROLE_SELECT} WHERE r.id = $1 GROUP BY r.id");
    let row: Option<RoleRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(role_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(role_of))
}

/// Creates a custom role of `provider_id` with `permissions` (each held by the caller; none global-only).
/// Requires `roles:manage`.
pub async fn create_role(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    provider_id: Uuid,
    name: &str,
    description: &str,
    permissions: &[String],
) -> Result<Role, ApiError> {
    caller.require("roles:manage")?;
    let name = role_name(name)?;
    let perms = grantable_permissions(tx, caller, permissions).await?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO roles (provider_id, name, description) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(provider_id)
    .bind(name)
    .bind(description)
    .fetch_one(&mut **tx)
    .await
    .map_err(role_write_error)?;
    set_role_permissions(tx, provider_id, id, &perms).await?;
    get_role(tx, id).await?.ok_or(ApiError::NotFound)
}

/// A trimmed role name of 1 to 100 characters.
fn role_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "a role name has 1 to 100 characters".into(),
        ));
    }
    Ok(name)
}

fn role_write_error(err: sqlx::Error) -> ApiError {
    if crate::db::is_unique_violation(&err) {
        ApiError::Conflict("a role with this name already exists".into())
    } else {
        bad_input("role")(err)
    }
}

/// The distinct permissions of a role being written: each held by the caller, none global-only.
async fn grantable_permissions(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    permissions: &[String],
) -> Result<Vec<String>, ApiError> {
    ensure_may_grant(caller, permissions)?;
    let perms: Vec<String> = permissions
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let global_only: i64 =
        sqlx::query_scalar("SELECT count(*) FROM permissions WHERE global_only AND code = ANY($1)")
            .bind(&perms)
            .fetch_one(&mut **tx)
            .await?;
    if global_only > 0 {
        return Err(ApiError::BadRequest(
            "a provider role cannot hold global permissions".into(),
        ));
    }
    Ok(perms)
}

/// Replaces the permissions of custom role `role_id` of `provider_id`.
async fn set_role_permissions(
    tx: &mut Transaction<'static, Postgres>,
    provider_id: Uuid,
    role_id: Uuid,
    perms: &[String],
) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM role_permissions WHERE provider_id = $1 AND role_id = $2")
        .bind(provider_id)
        .bind(role_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO role_permissions (provider_id, role_id, permission) SELECT $1, $2, unnest($3::text[])",
    )
    .bind(provider_id)
    .bind(role_id)
    .bind(perms)
    .execute(&mut **tx)
    .await
    .map_err(bad_input("permission"))?;
    Ok(())
}

/// The custom role `role_id` of the transaction's tenant: 404 when invisible, 409 for a predefined role.
async fn custom_role(
    tx: &mut Transaction<'static, Postgres>,
    role_id: Uuid,
) -> Result<(Uuid, Role), ApiError> {
    let role = get_role(tx, role_id).await?.ok_or(ApiError::NotFound)?;
    match role.provider_id {
        Some(provider) => Ok((provider, role)),
        None => Err(ApiError::Conflict(
            "predefined roles cannot be changed or deleted".into(),
        )),
    }
}

/// Changes a custom role: name, description and/or the complete permission set (each held by the caller).
/// Predefined roles are refused with 409. Returns the role before and after. Requires `roles:manage`.
pub async fn update_role(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    role_id: Uuid,
    name: Option<&str>,
    description: Option<&str>,
    permissions: Option<&[String]>,
) -> Result<(Role, Role), ApiError> {
    caller.require("roles:manage")?;
    let (provider, before) = custom_role(tx, role_id).await?;
    // Whoever edits a role must be able to grant what it holds now, or they could strip an admin's role.
    ensure_may_grant(caller, &before.permissions)?;
    let name = name.map(role_name).transpose()?.unwrap_or(&before.name);
    sqlx::query("UPDATE roles SET name = $3, description = $4 WHERE provider_id = $1 AND id = $2")
        .bind(provider)
        .bind(role_id)
        .bind(name)
        .bind(description.unwrap_or(&before.description))
        .execute(&mut **tx)
        .await
        .map_err(role_write_error)?;
    if let Some(permissions) = permissions {
        let perms = grantable_permissions(tx, caller, permissions).await?;
        set_role_permissions(tx, provider, role_id, &perms).await?;
    }
    let after = get_role(tx, role_id).await?.ok_or(ApiError::NotFound)?;
    Ok((before, after))
}

/// Deletes a custom role that no user holds (409 otherwise, and for predefined roles). Returns the deleted role.
/// Requires `roles:manage` and every permission of the role.
pub async fn delete_role(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    role_id: Uuid,
) -> Result<Role, ApiError> {
    caller.require("roles:manage")?;
    let (provider, before) = custom_role(tx, role_id).await?;
    ensure_may_grant(caller, &before.permissions)?;
    let holders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE provider_id = $1 AND role_id = $2")
            .bind(provider)
            .bind(role_id)
            .fetch_one(&mut **tx)
            .await?;
    if holders > 0 {
        return Err(ApiError::Conflict(format!(
            "{holders} user(s) hold this role: give them another role first"
        )));
    }
    sqlx::query("DELETE FROM roles WHERE provider_id = $1 AND id = $2")
        .bind(provider)
        .bind(role_id)
        .execute(&mut **tx)
        .await?;
    Ok(before)
}

/// Creates a user (`provider_id` `None`: a Global Admin, whose role must be Global Admin) and returns its id.
/// `password` `None`: the user signs in through Supabase only. The caller's right to hand out `role_id` is the
/// API's to check ([`ensure_may_grant_role`]); the CLI creates the first users.
#[allow(clippy::too_many_arguments)]
pub async fn create_user(
    tx: &mut Transaction<'static, Postgres>,
    params: PasswordParams,
    provider_id: Option<Uuid>,
    email: &str,
    name: &str,
    password: Option<&str>,
    role_id: Uuid,
    external_subject: Option<&str>,
) -> Result<Uuid, ApiError> {
    let email = email.trim();
    if email.len() > 320 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(ApiError::BadRequest("invalid email address".into()));
    }
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::BadRequest(
            "a name has 1 to 200 characters".into(),
        ));
    }
    let hash = match password {
        Some(pw) => Some(password::hash(params, pw).await?),
        None => None,
    };
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO users (provider_id, email, name, password_hash, role_id, external_subject) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(provider_id)
    .bind(email)
    .bind(name)
    .bind(hash)
    .bind(role_id)
    .bind(external_subject)
    .fetch_one(&mut **tx)
    .await
    .map_err(|err| {
        if crate::db::is_unique_violation(&err) {
            ApiError::Conflict("a user with this email already exists".into())
        } else {
            bad_input("user")(err)
        }
    })?;
    Ok(id)
}

/// Gives user `user_id` role `role_id`. Requires `users:manage` and every permission of the role.
pub async fn set_user_role(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    user_id: Uuid,
    role_id: Uuid,
) -> Result<(), ApiError> {
    caller.require("users:manage")?;
    ensure_may_grant_role(tx, caller, role_id).await?;
    let done = sqlx::query("UPDATE users SET role_id = $2 WHERE id = $1")
        .bind(user_id)
        .bind(role_id)
        .execute(&mut **tx)
        .await
        .map_err(bad_input("role"))?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound);
    }
    Ok(())
}

/// Grants `permission` to user `user_id` beyond its role. Requires `users:manage` and `permission` itself.
pub async fn grant_user_permission(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    user_id: Uuid,
    permission: &str,
) -> Result<(), ApiError> {
    caller.require("users:manage")?;
    ensure_may_grant(caller, &[permission])?;
    let done = sqlx::query(
        "INSERT INTO user_permissions (provider_id, user_id, permission, granted_by) \
         SELECT u.provider_id, u.id, p.code, $3 FROM users u, permissions p \
         WHERE u.id = $1 AND p.code = $2 AND NOT p.global_only \
         ON CONFLICT (user_id, permission) DO NOTHING",
    )
    .bind(user_id)
    .bind(permission)
    .bind(caller.user_id)
    .execute(&mut **tx)
    .await
    .map_err(bad_input("permission"))?;
    if done.rows_affected() == 0 {
        let visible: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
            .bind(user_id)
            .fetch_one(&mut **tx)
            .await?;
        if !visible {
            return Err(ApiError::NotFound);
        }
    }
    Ok(())
}

/// Withdraws an extra grant. Requires `users:manage` and `permission` itself.
pub async fn revoke_user_permission(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    user_id: Uuid,
    permission: &str,
) -> Result<(), ApiError> {
    caller.require("users:manage")?;
    ensure_may_grant(caller, &[permission])?;
    sqlx::query("DELETE FROM user_permissions WHERE user_id = $1 AND permission = $2")
        .bind(user_id)
        .bind(permission)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Effective permissions of a user (role ∪ extra grants; every permission for a Global Admin); 404 for an
/// unknown user. Reads across tenants (SECURITY DEFINER lookup): callers must have authorized the question.
pub async fn effective_permissions(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<BTreeSet<String>, ApiError> {
    let perms: Option<Vec<String>> =
        sqlx::query_scalar("SELECT permissions FROM octoisp_user_principal($1)")
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    perms
        .map(|p| p.into_iter().collect())
        .ok_or(ApiError::NotFound)
}
