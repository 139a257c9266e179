//! Agent configuration from the centre: the versioned document of each POP (`agent_configs`, migration 0012) and
//! its delivery to the POP's agents as `config.update` commands.
//!
//! - A new version ([`insert_version`]) is pushed at once to every agent of the POP ([`push`]); pushes of older
//!   versions still waiting are cancelled (`superseded`).
//! - An agent that connects gets the newest version when its last `config.update` is older, or ended without
//!   being applied (expired, cancelled, dead): [`on_connect`]. A version the agent refused (`failed`: the
//!   message names the key) is not pushed again; the next version is.
//! - The command row holds only `{"version": N}`; the document is read when the command is sent
//!   ([`expand_args`]), so credentials never appear in `commands.args` and documents are not bound by the
//!   64 KiB argument limit.
//! - The agent skips a version not newer than the one it applied, so a push delivered twice changes nothing.

use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Commands, provider_tier};
use crate::db;

/// The command that carries a configuration.
pub const COMMAND: &str = "config.update";
/// What a secret value reads as for callers who may not change the configuration.
pub const REDACTED: &str = "********";
/// Largest document accepted (serialized JSON): the command frame carrying it must stay under the agent's 4 MiB
/// decompressed frame limit.
pub const MAX_DOCUMENT_BYTES: usize = 3 << 20;

/// Checks a document's sections (unknown sections and non-objects are refused, naming the key). The agent
/// validates every field before applying anything and reports the key it refused.
pub fn validate(doc: &Value) -> Result<(), String> {
    if !doc.is_object() {
        return Err("config: must be a JSON object".into());
    }
    let size = doc.to_string().len();
    if size > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "config: {size} bytes, larger than {MAX_DOCUMENT_BYTES}"
        ));
    }
    let args = json!({"version": 1, "config": doc});
    octoisp_shared::commands::validate(COMMAND, &args.to_string())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether `key` names a secret of the agent's configuration (SNMP communities and USM passwords, ACS and
/// Connection Request passwords, any `*secret*`).
fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("communit") || k.contains("secret")
}

/// Replaces every secret value of `doc` by [`REDACTED`] (strings, and lists of strings such as trap communities).
pub fn redact(doc: &mut Value) {
    match doc {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret(k) {
                    match v {
                        Value::String(s) => *s = REDACTED.into(),
                        Value::Array(items) => {
                            for item in items.iter_mut().filter(|i| i.is_string()) {
                                *item = REDACTED.into();
                            }
                        }
                        _ => redact(v),
                    }
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Whether `doc` still holds a [`REDACTED`] placeholder (a redacted document sent back as a new version would
/// overwrite every secret with the placeholder).
pub fn holds_placeholder(doc: &Value) -> Option<String> {
    fn walk(v: &Value, path: &mut Vec<String>) -> bool {
        match v {
            Value::String(s) => s == REDACTED,
            Value::Object(map) => map.iter().any(|(k, v)| {
                path.push(k.clone());
                let found = walk(v, path);
                if !found {
                    path.pop();
                }
                found
            }),
            Value::Array(items) => items.iter().enumerate().any(|(i, v)| {
                path.push(format!("[{i}]"));
                let found = walk(v, path);
                if !found {
                    path.pop();
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = Vec::new();
    walk(doc, &mut path).then(|| {
        let mut out = String::from("config");
        for p in path {
            if !p.starts_with('[') {
                out.push('.');
            }
            out.push_str(&p);
        }
        out
    })
}

/// Who wrote a version or created a push (both `None`: the control plane itself, at an agent's connect).
#[derive(Debug, Clone, Copy, Default)]
pub struct Author {
    /// User.
    pub user: Option<Uuid>,
    /// API key.
    pub api_key: Option<Uuid>,
}

/// The newest version of a POP's document, if any.
pub async fn current(
    conn: &mut PgConnection,
    provider_id: Uuid,
    pop_id: Uuid,
) -> sqlx::Result<Option<(i64, Value)>> {
    sqlx::query_as(
        "SELECT version, config FROM agent_configs WHERE provider_id = $1 AND pop_id = $2 \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(provider_id)
    .bind(pop_id)
    .fetch_optional(&mut *conn)
    .await
}

/// Stores `doc` as the POP's next version and returns it. The POP's row is locked first, so two concurrent
/// writers get consecutive versions.
pub async fn insert_version(
    conn: &mut PgConnection,
    provider_id: Uuid,
    pop_id: Uuid,
    doc: &Value,
    comment: Option<&str>,
    author: Author,
) -> sqlx::Result<i64> {
    sqlx::query("SELECT 1 FROM pops WHERE provider_id = $1 AND id = $2 FOR UPDATE")
        .bind(provider_id)
        .bind(pop_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar(
        "INSERT INTO agent_configs (provider_id, pop_id, version, config, comment, created_by_user, \
           created_by_api_key) \
         SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5, $6 FROM agent_configs \
          WHERE provider_id = $1 AND pop_id = $2 \
         RETURNING version",
    )
    .bind(provider_id)
    .bind(pop_id)
    .bind(doc)
    .bind(comment)
    .bind(author.user)
    .bind(author.api_key)
    .fetch_one(&mut *conn)
    .await
}

/// Creates the `config.update` commands of `version` for `agents` (status `queued`) and cancels their older
/// pushes still waiting; returns `(command id, agent id)` pairs to enqueue after the commit.
pub async fn push(
    conn: &mut PgConnection,
    provider_id: Uuid,
    pop_id: Uuid,
    agents: &[Uuid],
    version: i64,
    deadline_secs: u64,
    author: Author,
) -> sqlx::Result<Vec<(Uuid, Uuid)>> {
    if agents.is_empty() {
        return Ok(Vec::new());
    }
    let superseded: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE commands SET status = 'cancelled', finished_at = now(), \
           error = 'superseded by configuration version ' || $3::bigint \
         WHERE provider_id = $1 AND agent_id = ANY($2) AND name = 'config.update' \
           AND status IN ('queued', 'waiting_agent') AND (args->>'version')::bigint < $3 \
         RETURNING id",
    )
    .bind(provider_id)
    .bind(agents)
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    for id in superseded {
        super::notify_status(conn, provider_id, id, "cancelled").await?;
    }
    let ids: Vec<Uuid> = agents.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO commands (id, provider_id, pop_id, agent_id, name, args, created_by_user, \
           created_by_api_key, deadline) \
         SELECT i, $2, $3, a, 'config.update', jsonb_build_object('version', $5::bigint), $6, $7, \
           now() + make_interval(secs => $8) \
         FROM unnest($1::uuid[], $4::uuid[]) AS t(i, a)",
    )
    .bind(&ids)
    .bind(provider_id)
    .bind(pop_id)
    .bind(agents)
    .bind(version)
    .bind(author.user)
    .bind(author.api_key)
    .bind(deadline_secs as f64)
    .execute(&mut *conn)
    .await?;
    Ok(ids.into_iter().zip(agents.iter().copied()).collect())
}

/// The arguments sent to the agent for a stored `config.update` row: `{"version": N}` becomes
/// `{"version": N, "config": <document N of the POP>}`. Rows that already carry a document are sent as they are.
pub async fn expand_args(
    conn: &mut PgConnection,
    provider_id: Uuid,
    pop_id: Uuid,
    args: &Value,
) -> anyhow::Result<Value> {
    if args.get("config").is_some() {
        return Ok(args.clone());
    }
    let version = args
        .get("version")
        .and_then(Value::as_i64)
        .ok_or_else(|| anyhow::anyhow!("config.update without a version"))?;
    let doc: Option<Value> = sqlx::query_scalar(
        "SELECT config FROM agent_configs WHERE provider_id = $1 AND pop_id = $2 AND version = $3",
    )
    .bind(provider_id)
    .bind(pop_id)
    .bind(version)
    .fetch_optional(&mut *conn)
    .await?;
    let doc =
        doc.ok_or_else(|| anyhow::anyhow!("configuration version {version} of the POP is gone"))?;
    let mut out = args.clone();
    if let Some(obj) = out.as_object_mut() {
        obj.insert("config".into(), doc);
    }
    Ok(out)
}

/// Called when an agent connected: pushes its POP's newest version unless the agent has it, has it pending, or
/// refused it.
pub async fn on_connect(
    cmds: &Commands,
    provider_id: Uuid,
    agent_id: Uuid,
) -> anyhow::Result<bool> {
    let mut tx = db::tenant_tx(&cmds.pool, provider_id).await?;
    let pop: Option<Uuid> =
        sqlx::query_scalar("SELECT pop_id FROM agents WHERE provider_id = $1 AND id = $2")
            .bind(provider_id)
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(pop) = pop else { return Ok(false) };
    let newest: Option<i64> = sqlx::query_scalar(
        "SELECT max(version) FROM agent_configs WHERE provider_id = $1 AND pop_id = $2",
    )
    .bind(provider_id)
    .bind(pop)
    .fetch_one(&mut *tx)
    .await?;
    let Some(newest) = newest else {
        tx.commit().await?;
        return Ok(false);
    };
    let last: Option<(Option<i64>, String)> = sqlx::query_as(
        "SELECT (args->>'version')::bigint, status FROM commands \
         WHERE provider_id = $1 AND agent_id = $2 AND name = 'config.update' ORDER BY id DESC LIMIT 1",
    )
    .bind(provider_id)
    .bind(agent_id)
    .fetch_optional(&mut *tx)
    .await?;
    let needed = match &last {
        None => true,
        Some((version, status)) => {
            let version = version.unwrap_or(0);
            version < newest
                || (version == newest
                    && matches!(status.as_str(), "expired" | "cancelled" | "dead"))
        }
    };
    if !needed {
        tx.commit().await?;
        return Ok(false);
    }
    let tier = provider_tier(&mut tx, provider_id).await?;
    let jobs = push(
        &mut tx,
        provider_id,
        pop,
        &[agent_id],
        newest,
        cmds.cfg.default_deadline_secs,
        Author::default(),
    )
    .await?;
    tx.commit().await?;
    cmds.enqueue_stored(provider_id, tier, &jobs).await;
    tracing::info!(agent = %agent_id, version = newest, "Agent configuration pushed at connect.");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_a_placeholder_sent_back_is_found() {
        let mut doc = json!({
            "snmp": {"credentials": [{"name": "core", "community": "s3cr3t"},
                                     {"name": "v3", "auth_password": "a", "priv_password": "p", "user": "u"}],
                     "traps": {"communities": ["public", "x"]}},
            "acs": {"password": "pw", "connection_request_password": "cr", "listen": "0.0.0.0:7547"},
            "monitors": {"ping": [{"name": "gw", "targets": ["10.0.0.1"]}]}
        });
        redact(&mut doc);
        let text = doc.to_string();
        for secret in ["s3cr3t", "\"a\"", "\"p\"", "public", "\"pw\"", "\"cr\""] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert!(
            text.contains("10.0.0.1") && text.contains("\"u\"") && text.contains("0.0.0.0:7547")
        );
        assert_eq!(
            holds_placeholder(&doc).as_deref(),
            Some("config.acs.connection_request_password")
        );
        assert_eq!(
            holds_placeholder(&json!({"scan": {"allow": ["10.0.0.0/8"]}})),
            None
        );
    }

    #[test]
    fn documents_are_checked_by_section() {
        assert!(validate(&json!({"monitors": {}, "scan": {}})).is_ok());
        let err = validate(&json!({"uplink": {}})).unwrap_err();
        assert!(err.contains("config.uplink"), "{err}");
        assert!(validate(&json!([1])).is_err());
    }
}
