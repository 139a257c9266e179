//! Keyset pagination, the same on every list: `?limit=` (default 50, at most 500) and an opaque `cursor`,
//! answered as `{"items": [...], "next_cursor": "..." | null}`.
//!
//! Lists are ordered by their `id` (a uuid); the cursor is the base64url (no padding) of the last id of the
//! page, and the next page is `id > cursor`. Searches sorted by another key (the device search by serial or
//! name prefix) carry that key too ([`encode_key_cursor`]). Cursors are opaque to clients: only their round trip
//! is promised.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::auth::Caller;

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size accepted.
pub const MAX_LIMIT: u32 = 500;

/// The pagination parameters of a list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    /// The page size, validated.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::BadRequest(format!(
                "limit {n} is not between 1 and {MAX_LIMIT}"
            ))),
        }
    }

    /// The id after which the page starts, if a cursor was given.
    pub fn after(&self) -> Result<Option<Uuid>, ApiError> {
        self.cursor.as_deref().map(decode_cursor).transpose()
    }
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items, in id order.
    pub items: Vec<T>,
    /// Cursor of the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in id order: the extra row only tells that there is more.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, id: impl Fn(&T) -> Uuid) -> Page<T> {
        let limit = limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| encode_cursor(id(last)))
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

impl<T> Page<T> {
    /// Like [`Page::from_rows`] for lists in another order than id: `cursor` makes the cursor of the last row.
    pub fn from_rows_keyed(mut rows: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Page<T> {
        let limit = limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(cursor)
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

/// The opaque cursor of a row of a list sorted by `(key, id)`: the id's 16 bytes then the key, base64url. With
/// an empty key it is the same as [`encode_cursor`].
pub fn encode_key_cursor(key: &str, id: Uuid) -> String {
    let mut bytes = Vec::with_capacity(16 + key.len());
    bytes.extend_from_slice(id.as_bytes());
    bytes.extend_from_slice(key.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The `(key, id)` of a cursor made by [`encode_key_cursor`] (or [`encode_cursor`]: empty key); 400 otherwise.
pub fn decode_key_cursor(cursor: &str) -> Result<(String, Uuid), ApiError> {
    let bad = || ApiError::BadRequest("invalid cursor".into());
    if cursor.len() > 4096 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| bad())?;
    if bytes.len() < 16 {
        return Err(bad());
    }
    let (id, key) = bytes.split_at(16);
    let id = Uuid::from_slice(id).map_err(|_| bad())?;
    let key = String::from_utf8(key.to_vec()).map_err(|_| bad())?;
    Ok((key, id))
}

/// The opaque cursor of a sort key.
pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// The sort key of a cursor; 400 when it is not one of ours.
pub fn decode_cursor(cursor: &str) -> Result<Uuid, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))
}

/// Finishes and runs a keyset list: `qb` is a `SELECT ... WHERE ...` to which more `AND` clauses may be added;
/// this adds the caller's provider (for index use; row-level security isolates in any case) and the cursor on
/// the `prefix`-qualified columns (`""` or `"g."`), orders by id, runs it in the caller's transaction and cuts
/// the page.
pub async fn fetch_page<T>(
    pool: &PgPool,
    caller: &Caller,
    mut qb: QueryBuilder<Postgres>,
    prefix: &str,
    page: &PageParams,
    id: impl Fn(&T) -> Uuid,
) -> Result<Page<T>, ApiError>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let (limit, after) = (page.limit()?, page.after()?);
    if let Some(p) = caller.provider_id {
        qb.push(format_args!(" AND {prefix}provider_id = "))
            .push_bind(p);
    }
    if let Some(after) = after {
        qb.push(format_args!(" AND {prefix}id > ")).push_bind(after);
    }
    qb.push(format_args!(" ORDER BY {prefix}id LIMIT "))
        .push_bind(i64::from(limit) + 1);
    let mut tx = caller.tx(pool, None).await?;
    let rows: Vec<T> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(Page::from_rows(rows, limit, id))
}

/// Runs `select` (a `SELECT ... WHERE ...`) for the row whose `{prefix}id` is `id`, in the caller's transaction;
/// 404 when the caller cannot see it.
pub async fn fetch_one<T>(
    pool: &PgPool,
    caller: &Caller,
    select: &str,
    prefix: &str,
    id: Uuid,
) -> Result<T, ApiError>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let mut qb = QueryBuilder::<Postgres>::new(select);
    qb.push(format_args!(" AND {prefix}id = ")).push_bind(id);
    let mut tx = caller.tx(pool, None).await?;
    let row: Option<T> = qb.build_query_as().fetch_optional(&mut *tx).await?;
    tx.commit().await?;
    row.ok_or(ApiError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
        assert!(decode_cursor("' OR 1=1 --").is_err());
        assert!(decode_cursor("").is_err());
    }

    #[test]
    fn keyed_cursors_round_trip_and_read_plain_ones() {
        let id = Uuid::now_v7();
        let c = encode_key_cursor("SN-ção ' OR 1=1", id);
        assert_eq!(
            decode_key_cursor(&c).unwrap(),
            ("SN-ção ' OR 1=1".to_owned(), id)
        );
        assert_eq!(
            decode_key_cursor(&encode_cursor(id)).unwrap(),
            (String::new(), id)
        );
        assert!(decode_key_cursor("AAAA").is_err());
        assert!(decode_key_cursor(&URL_SAFE_NO_PAD.encode([0xffu8; 20])).is_err());
    }

    #[test]
    fn a_page_has_a_cursor_only_when_rows_remain() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = Page::from_rows(ids.clone(), 2, |id| *id);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, Some(encode_cursor(ids[1])));
        let page = Page::from_rows(ids, 3, |id| *id);
        assert!(page.next_cursor.is_none());
    }

    #[test]
    fn limits_are_bounded() {
        let p = |limit| PageParams {
            limit,
            cursor: None,
        };
        assert_eq!(p(None).limit().unwrap(), DEFAULT_LIMIT);
        assert!(p(Some(0)).limit().is_err());
        assert!(p(Some(501)).limit().is_err());
    }
}
