//! Who is calling: the authenticated principal of a request, its tenant and its effective permissions.
//!
//! Handlers take a [`Caller`] (an axum extractor, implemented in this module's siblings) and call
//! [`Caller::require`] before anything else, then [`Caller::tx`] for a transaction bound to the caller's tenant.

use std::collections::BTreeSet;
use std::net::IpAddr;

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::db::Plans;

/// The authenticated principal of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user, when authenticated as a user (JWT).
    pub user_id: Option<Uuid>,
    /// The API key, when authenticated with one.
    pub api_key_id: Option<Uuid>,
    /// The caller's provider; `None` only for a Global Admin.
    pub provider_id: Option<Uuid>,
    /// Effective permissions, such as `devices:read`.
    pub permissions: BTreeSet<String>,
    /// Global Admin: may act on any provider, through the audited global-admin path only.
    pub global_admin: bool,
    /// Request id, for logs and the audit log.
    pub request_id: String,
    /// Client address.
    pub ip: Option<IpAddr>,
}

impl Caller {
    /// Fails with 403 naming `permission` unless the caller holds it (Global Admins hold every permission).
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        if self.global_admin || self.permissions.contains(permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(permission.to_owned()))
        }
    }

    /// Whether the caller holds `permission`.
    pub fn has(&self, permission: &str) -> bool {
        self.global_admin || self.permissions.contains(permission)
    }

    /// A transaction bound to the caller's tenant (`app.provider_id`, transaction-local). A Global Admin
    /// without a provider gets the audited global-admin transaction instead: pass `on_behalf_of` to act within
    /// one provider, which is always preferable.
    pub async fn tx(
        &self,
        pool: &PgPool,
        on_behalf_of: Option<Uuid>,
    ) -> Result<Transaction<'static, Postgres>, ApiError> {
        self.tx_planned(pool, on_behalf_of, Plans::Cached).await
    }

    /// [`Caller::tx`] with a choice of [`Plans`] (custom plans for searches whose best plan depends on the values).
    pub async fn tx_planned(
        &self,
        pool: &PgPool,
        on_behalf_of: Option<Uuid>,
        plans: Plans,
    ) -> Result<Transaction<'static, Postgres>, ApiError> {
        let provider = match (self.provider_id, on_behalf_of) {
            (Some(own), _) => Some(own),
            (None, p) if self.global_admin => p,
            (None, _) => return Err(ApiError::Unauthenticated),
        };
        match provider {
            Some(p) => Ok(crate::db::tenant_tx_planned(pool, p, plans).await?),
            None => {
                tracing::info!(request_id = %self.request_id, user = ?self.user_id, "Global admin transaction.");
                Ok(crate::db::global_admin_tx_planned(pool, plans).await?)
            }
        }
    }
}
