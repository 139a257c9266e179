//! CPE firmware at the centre (`/api/v1/firmware/...`): images (uploaded here, stored by SHA-256 under
//! `[firmware] dir`, fetched by the agents over QUIC) and campaigns (staged rollouts with a stop rule, advanced
//! by the workers: `crate::firmware::campaign`). See docs/ACS.md ("Firmware from the control plane").
//!
//! Reading needs `tr069:read`; uploading, deleting and running campaigns need `tr069:firmware`. Every change is
//! audited. An upload is the raw image as the request body (`application/octet-stream`), streamed to disk and
//! hashed on the way, bounded by `firmware.max_image_mib` (not `api.max_body_bytes`) and by
//! `firmware.upload_timeout_secs`.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams};
use crate::api::{AppState, ErrorBody, own_provider, to_json};
use crate::audit;
use crate::firmware::{self, UploadError, campaign};

const READ: &str = "tr069:read";
const WRITE: &str = "tr069:firmware";
/// Path of the upload route (the gateway gives it the firmware size limit and timeout).
pub const UPLOAD_PATH: &str = "/api/v1/firmware/images";
/// Most devices in one campaign.
pub const MAX_CAMPAIGN_DEVICES: usize = 100_000;
/// Devices listed with a campaign.
const MAX_LISTED_DEVICES: i64 = 1000;

/// A firmware image.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct FirmwareImage {
    /// Id.
    pub id: Uuid,
    /// Name, such as `HG8245H V3R017C10S115`.
    pub name: String,
    /// Version the CPE reports once upgraded (its `SoftwareVersion`).
    pub version: String,
    /// Vendor it is for, when given.
    pub vendor: Option<String>,
    /// OUI of the CPEs it fits (six upper-case hex digits), when given: campaigns only target those.
    pub oui: Option<String>,
    /// ProductClass of the CPEs it fits, when given.
    pub product_class: Option<String>,
    /// Size, bytes.
    pub size: i64,
    /// SHA-256, lowercase hex: how agents fetch it and check it.
    pub sha256: String,
    /// Who uploaded it (user).
    pub created_by_user: Option<Uuid>,
    /// Who uploaded it (API key).
    pub created_by_api_key: Option<Uuid>,
    /// When.
    pub created_at: DateTime<Utc>,
}

const IMAGE_COLUMNS: &str = "SELECT id, name, version, vendor, oui, product_class, size, sha256, created_by_user, \
    created_by_api_key, created_at FROM firmware_images";

/// What an uploaded image is (query string of the upload).
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Name (1 to 200 characters).
    pub name: String,
    /// Version the CPE reports once upgraded (1 to 100 characters).
    pub version: String,
    /// Vendor.
    pub vendor: Option<String>,
    /// OUI of the CPEs it fits (six hex digits).
    pub oui: Option<String>,
    /// ProductClass of the CPEs it fits.
    pub product_class: Option<String>,
    /// SHA-256 the client computed (hex): the upload is refused (422) when the bytes that arrived differ.
    pub sha256: Option<String>,
}

fn text(field: &str, v: &Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) if s.chars().count() > max => Err(ApiError::Unprocessable(format!(
            "{field}: longer than {max} characters"
        ))),
        Some(s) => Ok(Some(s.to_owned())),
    }
}

/// Uploads an image: the request body is the image itself. 201 with the image; 413 beyond
/// `firmware.max_image_mib`; 422 when `sha256` was given and the bytes differ (nothing is kept).
#[utoipa::path(post, path = "/api/v1/firmware/images", tag = "firmware", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The image"),
    responses((status = 201, body = FirmwareImage), (status = 409, body = ErrorBody, description = "Same name and version exist"),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(q): ApiQuery<UploadQuery>,
    body: Body,
) -> Result<(StatusCode, axum::Json<FirmwareImage>), ApiError> {
    caller.require(WRITE)?;
    let provider = own_provider(&caller)?;
    let name = text("name", &Some(q.name.clone()), 200)?
        .ok_or_else(|| ApiError::Unprocessable("name: required".into()))?;
    let version = text("version", &Some(q.version.clone()), 100)?
        .ok_or_else(|| ApiError::Unprocessable("version: required".into()))?;
    let vendor = text("vendor", &q.vendor, 100)?;
    let product_class = text("product_class", &q.product_class, 100)?;
    let oui = text("oui", &q.oui, 6)?.map(|o| o.to_ascii_uppercase());
    if let Some(o) = &oui
        && (o.len() != 6 || !o.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::Unprocessable(
            "oui: must be six hex digits".into(),
        ));
    }
    let expected = q.sha256.as_deref().map(str::to_ascii_lowercase);
    if let Some(e) = &expected
        && !octoisp_shared::commands::is_sha256_hex(e)
    {
        return Err(ApiError::Unprocessable(
            "sha256: must be 64 hex digits".into(),
        ));
    }
    let cfg = &state.config.firmware;
    let stored = firmware::store_upload(cfg, provider, body, expected.as_deref())
        .await
        .map_err(|err| match err {
            UploadError::TooLarge(_) => ApiError::PayloadTooLarge,
            UploadError::Empty | UploadError::Checksum { .. } | UploadError::Body(_) => {
                ApiError::Unprocessable(err.to_string())
            }
            UploadError::Io(e) => ApiError::Internal(format!("firmware storage: {e}")),
        })?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let inserted: Result<FirmwareImage, sqlx::Error> = sqlx::query_as(
        "INSERT INTO firmware_images (id, provider_id, name, version, vendor, oui, product_class, size, sha256, \
           created_by_user, created_by_api_key) VALUES ($11, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         RETURNING id, name, version, vendor, oui, product_class, size, sha256, created_by_user, created_by_api_key, \
           created_at",
    )
    .bind(provider)
    .bind(&name)
    .bind(&version)
    .bind(&vendor)
    .bind(&oui)
    .bind(&product_class)
    .bind(stored.size as i64)
    .bind(&stored.sha256)
    .bind(caller.user_id)
    .bind(caller.api_key_id)
    .bind(Uuid::now_v7())
    .fetch_one(&mut *tx)
    .await;
    let image = match inserted {
        Ok(image) => image,
        Err(err) if crate::db::is_unique_violation(&err) => {
            drop(tx);
            remove_unused(&state, provider, &stored.sha256).await;
            return Err(ApiError::Conflict(format!(
                "name: an image {name:?} version {version:?} exists already"
            )));
        }
        Err(err) => return Err(err.into()),
    };
    audit::record(
        &mut tx,
        &caller,
        "firmware.upload",
        "firmware_image",
        Some(&image.id.to_string()),
        None,
        to_json(&image),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(image)))
}

/// Removes the file of `sha256` when no image row of the provider refers to it.
async fn remove_unused(state: &AppState, provider: Uuid, sha256: &str) {
    let used = async {
        let mut tx = crate::db::tenant_tx(&state.pool, provider).await.ok()?;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM firmware_images WHERE provider_id = $1 AND sha256 = $2",
        )
        .bind(provider)
        .bind(sha256)
        .fetch_one(&mut *tx)
        .await
        .ok()?;
        tx.commit().await.ok()?;
        Some(n)
    }
    .await;
    if used == Some(0) {
        firmware::remove_file(&state.config.firmware, provider, sha256).await;
    }
}

/// The provider's firmware images, newest first (keyset pages).
#[utoipa::path(get, path = "/api/v1/firmware/images", tag = "firmware", params(PageParams),
    responses((status = 200, body = Page<FirmwareImage>)), security(("bearer" = [])))]
pub async fn list_images(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(q): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<FirmwareImage>>, ApiError> {
    caller.require(READ)?;
    let limit = q.limit()?;
    let after = q.after()?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let rows: Vec<FirmwareImage> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{IMAGE_COLUMNS} WHERE (provider_id = (SELECT octoisp_tenant()) OR (SELECT octoisp_is_global_admin())) \
           AND ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
    )))
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows(rows, limit, |i| i.id)))
}

async fn fetch_image(tx: &mut sqlx::PgConnection, id: Uuid) -> Result<FirmwareImage, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{IMAGE_COLUMNS} WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)
}

/// One image.
#[utoipa::path(get, path = "/api/v1/firmware/images/{id}", tag = "firmware",
    params(("id" = Uuid, Path, description = "Image id")),
    responses((status = 200, body = FirmwareImage), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_image(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<FirmwareImage>, ApiError> {
    caller.require(READ)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let image = fetch_image(&mut tx, id).await?;
    tx.commit().await?;
    Ok(axum::Json(image))
}

/// Deletes an image (and its file, unless another image of the provider has the same bytes). Refused (409)
/// while a running or paused campaign uses it; ended campaigns keep its SHA-256.
#[utoipa::path(delete, path = "/api/v1/firmware/images/{id}", tag = "firmware",
    params(("id" = Uuid, Path, description = "Image id")),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "A running or paused campaign uses it")),
    security(("bearer" = [])))]
pub async fn delete_image(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require(WRITE)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let image: FirmwareImage = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{IMAGE_COLUMNS} WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    let active: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT id, name FROM firmware_campaigns WHERE image_id = $1 AND status IN ('running', 'paused') LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((campaign, name)) = active {
        return Err(ApiError::Conflict(format!(
            "campaign {name:?} ({campaign}) uses this image: cancel it or let it end first"
        )));
    }
    let provider: Uuid =
        sqlx::query_scalar("DELETE FROM firmware_images WHERE id = $1 RETURNING provider_id")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    audit::record(
        &mut tx,
        &caller,
        "firmware.delete",
        "firmware_image",
        Some(&id.to_string()),
        to_json(&image),
        None,
    )
    .await?;
    tx.commit().await?;
    remove_unused(&state, provider, &image.sha256).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Which devices a campaign targets: exactly one of the three.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignTarget {
    /// These devices, in this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_ids: Option<Vec<Uuid>>,
    /// The members of this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<Uuid>,
    /// Every TR-069 device of this POP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pop_id: Option<Uuid>,
}

/// A new campaign.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// Name (1 to 200 characters).
    pub name: String,
    /// The image.
    pub image_id: Uuid,
    /// The devices. Only TR-069 CPEs (keys `OUI-ProductClass-Serial`) that fit the image (its OUI and ProductClass, when the
    /// image names them) are kept; the answer says how many were left out.
    pub target: CampaignTarget,
    /// Cumulative stages in percent of the devices, increasing, the last 100 (default `[5, 25, 100]`).
    #[serde(default)]
    pub stages_pct: Option<Vec<i32>>,
    /// Halt when more than this percentage of the finished devices failed (default 10).
    #[serde(default)]
    pub max_failure_pct: Option<f64>,
    /// A device without a result this long after its download started counts as failed (default 1800 s).
    #[serde(default)]
    pub come_back_secs: Option<i32>,
}

/// A campaign with its progress.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct CampaignView {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// The image (`null` once deleted after the campaign ended).
    pub image_id: Option<Uuid>,
    /// The image's SHA-256.
    pub image_sha256: String,
    /// The target as given.
    #[schema(value_type = Object)]
    pub target: serde_json::Value,
    /// Cumulative stages, percent.
    pub stages_pct: Vec<i32>,
    /// Stop rule: most failures among finished devices, percent.
    pub max_failure_pct: f64,
    /// Stop rule: seconds a device has to report back.
    pub come_back_secs: i32,
    /// `running`, `paused`, `halted`, `cancelled` or `done`.
    pub status: String,
    /// Why it halted (the stop rule's numbers).
    pub halt_reason: Option<String>,
    /// Who created it.
    pub created_by_user: Option<Uuid>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Last change of status.
    pub updated_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Devices per state: `pending`, `running`, `succeeded`, `failed`, `skipped`.
    #[sqlx(skip)]
    pub counts: std::collections::BTreeMap<String, i64>,
    /// Devices left out when it was created (not TR-069, or not fitting the image).
    #[sqlx(skip)]
    pub excluded: Option<i64>,
}

const CAMPAIGN_COLUMNS: &str = "SELECT id, name, image_id, image_sha256, target, stages_pct, max_failure_pct, \
    come_back_secs, status, halt_reason, created_by_user, created_at, updated_at, finished_at FROM firmware_campaigns";

/// One device of a campaign.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct CampaignDevice {
    /// Position in the rollout.
    pub position: i32,
    /// Device.
    pub device_id: Uuid,
    /// Its key (`OUI-ProductClass-Serial`).
    pub device_key: Option<String>,
    /// `pending`, `running`, `succeeded`, `failed`, `skipped`.
    pub state: String,
    /// Its `tr069.download` command (progress and result under `/api/v1/commands/{id}`).
    pub command_id: Option<Uuid>,
    /// When its download was queued.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed (the CWMP fault, or "did not come back").
    pub error: Option<String>,
}

/// A campaign, its counts and its devices (the first 1000 in rollout order).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignDetail {
    /// The campaign.
    #[serde(flatten)]
    pub campaign: CampaignView,
    /// Its devices.
    pub devices: Vec<CampaignDevice>,
}

async fn counts(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
) -> Result<std::collections::BTreeMap<String, i64>, ApiError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM firmware_campaign_devices WHERE campaign_id = $1 GROUP BY state",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let mut map: std::collections::BTreeMap<String, i64> =
        ["pending", "running", "succeeded", "failed", "skipped"]
            .iter()
            .map(|s| ((*s).to_owned(), 0))
            .collect();
    map.extend(rows);
    Ok(map)
}

async fn fetch_campaign(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<CampaignView, ApiError> {
    let mut c: CampaignView = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{CAMPAIGN_COLUMNS} WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    c.counts = counts(tx, id).await?;
    Ok(c)
}

/// Whether a device key is a TR-069 CPE's: the ACS names CPEs `OUI-ProductClass-Serial` (percent-encoded, so
/// without `:`), other sources `snmp:...`, `icmp:...`; `cwmp:` is accepted as an explicit prefix.
fn is_cpe_key(key: &str) -> bool {
    key.starts_with("cwmp:") || !key.contains(':')
}

fn check_stages(stages: &[i32]) -> Result<(), ApiError> {
    let increasing = stages.windows(2).all(|w| w[0] < w[1]);
    if stages.is_empty()
        || stages.len() > 20
        || !increasing
        || stages.iter().any(|p| !(1..=100).contains(p))
        || stages.last() != Some(&100)
    {
        return Err(ApiError::Unprocessable(
            "stages_pct: 1 to 20 increasing percentages in 1..=100, the last 100".into(),
        ));
    }
    Ok(())
}

/// Creates and starts a campaign (its first stage is queued by the workers within a tick).
#[utoipa::path(post, path = "/api/v1/firmware/campaigns", tag = "firmware", request_body = NewCampaign,
    responses((status = 201, body = CampaignView), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_campaign(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<NewCampaign>,
) -> Result<(StatusCode, axum::Json<CampaignView>), ApiError> {
    caller.require(WRITE)?;
    let provider = own_provider(&caller)?;
    let name = text("name", &Some(body.name.clone()), 200)?
        .ok_or_else(|| ApiError::Unprocessable("name: required".into()))?;
    let stages = body.stages_pct.clone().unwrap_or_else(|| vec![5, 25, 100]);
    check_stages(&stages)?;
    let max_failure_pct = body.max_failure_pct.unwrap_or(10.0);
    if !(0.0..=100.0).contains(&max_failure_pct) {
        return Err(ApiError::Unprocessable(
            "max_failure_pct: must be between 0 and 100".into(),
        ));
    }
    let come_back_secs = body.come_back_secs.unwrap_or(1800);
    if !(1..=7 * 86_400).contains(&come_back_secs) {
        return Err(ApiError::Unprocessable(
            "come_back_secs: must be between 1 and 604800".into(),
        ));
    }
    let t = &body.target;
    let given = [
        t.device_ids.is_some(),
        t.group_id.is_some(),
        t.pop_id.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ApiError::Unprocessable(
            "target: give exactly one of device_ids, group_id, pop_id".into(),
        ));
    }
    if t.device_ids
        .as_ref()
        .is_some_and(|d| d.is_empty() || d.len() > MAX_CAMPAIGN_DEVICES)
    {
        return Err(ApiError::Unprocessable(format!(
            "target.device_ids: 1 to {MAX_CAMPAIGN_DEVICES} devices"
        )));
    }
    let mut tx = caller.tx(&state.pool, None).await?;
    let image = fetch_image(&mut tx, body.image_id).await.map_err(|_| {
        ApiError::Unprocessable(format!("image_id: no such image {}", body.image_id))
    })?;
    // Candidates in rollout order: (device, key, oui, product class).
    let candidates: Vec<(Uuid, String, Option<String>, Option<String>)> = if let Some(ids) =
        &t.device_ids
    {
        let found: Vec<(Uuid, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT d.id, d.device_key, d.oui, d.product_class FROM unnest($2::uuid[]) WITH ORDINALITY AS u(id, n) \
             JOIN devices d ON d.provider_id = $1 AND d.id = u.id ORDER BY u.n",
        )
        .bind(provider)
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        if found.len() != ids.len() {
            let known: std::collections::HashSet<Uuid> = found.iter().map(|f| f.0).collect();
            let missing = ids
                .iter()
                .find(|i| !known.contains(i))
                .copied()
                .unwrap_or_default();
            return Err(ApiError::Unprocessable(format!(
                "target.device_ids: no such device {missing}"
            )));
        }
        found
    } else if let Some(group) = t.group_id {
        let exists: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM device_groups WHERE provider_id = $1 AND id = $2")
                .bind(provider)
                .bind(group)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(ApiError::Unprocessable(format!(
                "target.group_id: no such group {group}"
            )));
        }
        sqlx::query_as(
            "SELECT d.id, d.device_key, d.oui, d.product_class FROM device_group_members m \
             JOIN devices d ON d.provider_id = m.provider_id AND d.id = m.device_id \
             WHERE m.provider_id = $1 AND m.group_id = $2 ORDER BY d.id LIMIT $3",
        )
        .bind(provider)
        .bind(group)
        .bind(MAX_CAMPAIGN_DEVICES as i64 + 1)
        .fetch_all(&mut *tx)
        .await?
    } else {
        let pop = t.pop_id.unwrap_or_default();
        let exists: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM pops WHERE provider_id = $1 AND id = $2")
                .bind(provider)
                .bind(pop)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(ApiError::Unprocessable(format!(
                "target.pop_id: no such POP {pop}"
            )));
        }
        sqlx::query_as(
            "SELECT id, device_key, oui, product_class FROM devices WHERE provider_id = $1 AND pop_id = $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(provider)
        .bind(pop)
        .bind(MAX_CAMPAIGN_DEVICES as i64 + 1)
        .fetch_all(&mut *tx)
        .await?
    };
    if candidates.len() > MAX_CAMPAIGN_DEVICES {
        return Err(ApiError::Unprocessable(format!(
            "target: more than {MAX_CAMPAIGN_DEVICES} devices; split the campaign"
        )));
    }
    let fits = |oui: &Option<String>, class: &Option<String>| {
        image
            .oui
            .as_ref()
            .is_none_or(|o| oui.as_ref().is_some_and(|d| d.eq_ignore_ascii_case(o)))
            && image
                .product_class
                .as_ref()
                .is_none_or(|p| class.as_ref() == Some(p))
    };
    let devices: Vec<Uuid> = candidates
        .iter()
        .filter(|(_, key, oui, class)| is_cpe_key(key) && fits(oui, class))
        .map(|c| c.0)
        .collect();
    let excluded = (candidates.len() - devices.len()) as i64;
    if devices.is_empty() {
        return Err(ApiError::Unprocessable(format!(
            "target: none of the {} devices is a TR-069 CPE fitting this image (OUI {:?}, ProductClass {:?})",
            candidates.len(),
            image.oui,
            image.product_class
        )));
    }
    let id = Uuid::now_v7();
    let target = serde_json::to_value(&body.target).unwrap_or_default();
    sqlx::query(
        "INSERT INTO firmware_campaigns (id, provider_id, name, image_id, image_sha256, target, stages_pct, \
           max_failure_pct, come_back_secs, created_by_user, created_by_api_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id)
    .bind(provider)
    .bind(&name)
    .bind(image.id)
    .bind(&image.sha256)
    .bind(&target)
    .bind(&stages)
    .bind(max_failure_pct)
    .bind(come_back_secs)
    .bind(caller.user_id)
    .bind(caller.api_key_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO firmware_campaign_devices (provider_id, campaign_id, position, device_id) \
         SELECT $1, $2, (n - 1)::int, d FROM unnest($3::uuid[]) WITH ORDINALITY AS u(d, n)",
    )
    .bind(provider)
    .bind(id)
    .bind(&devices)
    .execute(&mut *tx)
    .await?;
    let mut view = fetch_campaign(&mut tx, id, false).await?;
    view.excluded = Some(excluded);
    audit::record(
        &mut tx,
        &caller,
        "firmware_campaign.create",
        "firmware_campaign",
        Some(&id.to_string()),
        None,
        Some(serde_json::json!({
            "name": name, "image_id": image.id, "image_sha256": image.sha256, "target": target,
            "devices": devices.len(), "excluded": excluded, "stages_pct": stages,
            "max_failure_pct": max_failure_pct, "come_back_secs": come_back_secs,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// The provider's campaigns, newest first, with their counts (keyset pages).
#[utoipa::path(get, path = "/api/v1/firmware/campaigns", tag = "firmware", params(PageParams),
    responses((status = 200, body = Page<CampaignView>)), security(("bearer" = [])))]
pub async fn list_campaigns(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(q): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<CampaignView>>, ApiError> {
    caller.require(READ)?;
    let limit = q.limit()?;
    let after = q.after()?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let mut rows: Vec<CampaignView> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{CAMPAIGN_COLUMNS} WHERE (provider_id = (SELECT octoisp_tenant()) OR (SELECT octoisp_is_global_admin())) \
           AND ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
    )))
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut *tx)
    .await?;
    for c in rows.iter_mut().take(limit as usize) {
        c.counts = counts(&mut tx, c.id).await?;
    }
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows(rows, limit, |c| c.id)))
}

/// A campaign with its progress and devices.
#[utoipa::path(get, path = "/api/v1/firmware/campaigns/{id}", tag = "firmware",
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignDetail), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_campaign(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<CampaignDetail>, ApiError> {
    caller.require(READ)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let campaign = fetch_campaign(&mut tx, id, false).await?;
    let devices: Vec<CampaignDevice> = sqlx::query_as(
        "SELECT c.position, c.device_id, d.device_key, c.state, c.command_id, c.started_at, c.finished_at, c.error \
         FROM firmware_campaign_devices c \
         LEFT JOIN devices d ON d.provider_id = c.provider_id AND d.id = c.device_id \
         WHERE c.campaign_id = $1 ORDER BY c.position LIMIT $2",
    )
    .bind(id)
    .bind(MAX_LISTED_DEVICES)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(axum::Json(CampaignDetail { campaign, devices }))
}

async fn transition(
    state: &AppState,
    caller: &crate::auth::Caller,
    id: Uuid,
    from: &[&str],
    to: &str,
    action: &str,
) -> Result<axum::Json<CampaignView>, ApiError> {
    caller.require(WRITE)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before = fetch_campaign(&mut tx, id, true).await?;
    if !from.contains(&before.status.as_str()) {
        return Err(ApiError::Conflict(format!(
            "the campaign is {}: it cannot be {action}d",
            before.status
        )));
    }
    let provider: Uuid =
        sqlx::query_scalar("SELECT provider_id FROM firmware_campaigns WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    // Downloads no CPE has started are taken back (a paused campaign starts them again on resume).
    let withdrawal = if matches!(to, "cancelled" | "paused") {
        campaign::withdraw(
            &mut tx,
            provider,
            id,
            &format!("firmware campaign {action}d by an operator"),
        )
        .await?
    } else {
        campaign::Withdrawal::default()
    };
    if to == "cancelled" {
        campaign::end(
            &mut tx,
            provider,
            id,
            "cancelled",
            Some("cancelled by an operator"),
        )
        .await?;
    } else {
        sqlx::query("UPDATE firmware_campaigns SET status = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(to)
            .execute(&mut *tx)
            .await?;
    }
    let after = fetch_campaign(&mut tx, id, false).await?;
    audit::record(
        &mut tx,
        caller,
        &format!("firmware_campaign.{action}"),
        "firmware_campaign",
        Some(&id.to_string()),
        Some(serde_json::json!({"status": before.status})),
        Some(serde_json::json!({
            "status": after.status,
            "downloads_cancelled_before_delivery": withdrawal.cancelled.len(),
            "withdraw_commands": withdrawal.jobs.iter().map(|(c, _)| c).collect::<Vec<_>>(),
        })),
    )
    .await?;
    let tier = crate::commands::provider_tier(&mut tx, provider).await?;
    tx.commit().await?;
    if let Some(cmds) = &state.commands {
        for command in &withdrawal.cancelled {
            if let Err(err) = cmds.queue.cancel(provider, *command).await {
                // The row is cancelled: a later delivery finds it final and does not run it.
                tracing::warn!(command = %command, error = %err, "Cannot remove a withdrawn download from the queue.");
            }
        }
        cmds.enqueue_stored(provider, tier, &withdrawal.jobs).await;
    }
    Ok(axum::Json(after))
}

/// Pauses a running campaign: no new device starts, and downloads no CPE has started are withdrawn (they start
/// again on resume); those already under way at their CPE finish.
#[utoipa::path(post, path = "/api/v1/firmware/campaigns/{id}/pause", tag = "firmware",
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn pause_campaign(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<CampaignView>, ApiError> {
    transition(&state, &caller, id, &["running"], "paused", "pause").await
}

/// Resumes a paused campaign.
#[utoipa::path(post, path = "/api/v1/firmware/campaigns/{id}/resume", tag = "firmware",
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resume_campaign(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<CampaignView>, ApiError> {
    transition(&state, &caller, id, &["paused"], "running", "resume").await
}

/// Cancels a running or paused campaign: devices not started are skipped, downloads no CPE has started are
/// withdrawn from the agents (skipped too); those already under way at their CPE finish and are reported.
#[utoipa::path(post, path = "/api/v1/firmware/campaigns/{id}/cancel", tag = "firmware",
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel_campaign(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<CampaignView>, ApiError> {
    transition(
        &state,
        &caller,
        id,
        &["running", "paused"],
        "cancelled",
        "cancel",
    )
    .await
}
