//! The device search behind `GET /api/v1/devices`: filters, sort order and keyset cursor, built as SQL.
//!
//! The query has two steps. An inner query finds the ids (and the sort key) of one page walking one index in
//! order; the outer query joins those few ids back to the full rows. That keeps the walk narrow: rejected rows
//! cost an index tuple (the covering index `devices_list` of migration 0007 carries every filtered column), not a
//! heap fetch. The sort follows the search:
//! - no prefix search: id order, walking `devices_list` (or `devices_vendor` / `devices_pop`) and filtering;
//! - `serial=`: serial number order, a range of `devices_serial_prefix`;
//! - `q=`: the name matches then the serial matches merged in one order (name or serial, then id), each branch
//!   a range of its prefix index, so a common prefix ("cliente 1") never sorts thousands of rows.
//!
//! Prefix ranges use the pattern operators (`~<~`, `~>=~`, ...) so that the indexes built with
//! `text_pattern_ops` serve them whatever the database collation, and because they are leakproof: under
//! row-level security PostgreSQL only turns leakproof operators into index conditions, and `LIKE`, `<<=` (CIDR)
//! and `@>` (tags) are not, which is why those filters are tested on the tuples of an index walk instead. The cursor carries the last row's sort key and
//! id ([`crate::api::pagination::encode_key_cursor`]).

use std::net::IpAddr;

use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::api::devices::{DeviceFilters, Status, filter_value, like_prefix};
use crate::api::error::ApiError;

/// Longest cursor key accepted (the longest filterable value is far shorter).
const MAX_KEY_BYTES: usize = 1024;

/// How a search is ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// By id.
    Id,
    /// By serial number, then id (a `serial=` prefix search).
    Serial(String),
    /// By the matching name or serial number, then id (a `q=` prefix search).
    NameOrSerial(String),
}

impl Order {
    /// The order a set of filters asks for.
    pub fn of(f: &DeviceFilters) -> Result<Order, ApiError> {
        if let Some(q) = &f.q {
            Ok(Order::NameOrSerial(filter_value("q", q)?.to_owned()))
        } else if let Some(serial) = &f.serial {
            Ok(Order::Serial(filter_value("serial", serial)?.to_owned()))
        } else {
            Ok(Order::Id)
        }
    }

    /// The sort key of a row in this order (what the cursor carries).
    pub fn key<'a>(&self, name: Option<&'a str>, serial: Option<&'a str>) -> &'a str {
        match self {
            Order::Id => "",
            Order::Serial(_) => serial.unwrap_or(""),
            Order::NameOrSerial(q) => match name {
                Some(n) if n.starts_with(q.as_str()) => n,
                _ => serial.unwrap_or(""),
            },
        }
    }
}

/// Where a page starts: after the row with this sort key and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    /// Sort key of the last row of the previous page (empty in id order).
    pub key: String,
    /// Id of that row.
    pub id: Uuid,
}

/// An IP filter: one address or a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpFilter {
    /// Exactly this address.
    Exact(IpAddr),
    /// Inside this network.
    Within(IpAddr, u8),
}

/// Parses `192.0.2.1` or `2001:db8::/32`.
pub fn parse_ip_filter(s: &str) -> Result<IpFilter, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "ip: `{}` is neither an address nor a CIDR",
            s.chars().take(64).collect::<String>()
        ))
    };
    match s.split_once('/') {
        None => s.trim().parse().map(IpFilter::Exact).map_err(|_| bad()),
        Some((addr, len)) => {
            let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
            let len: u8 = len.trim().parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if len > max {
                return Err(bad());
            }
            Ok(IpFilter::Within(addr, len))
        }
    }
}

/// The first and last address of the network `addr/len`.
pub fn host_range(addr: IpAddr, len: u8) -> (IpAddr, IpAddr) {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            (
                IpAddr::V4((bits & mask).into()),
                IpAddr::V4((bits | !mask).into()),
            )
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            (
                IpAddr::V6((bits & mask).into()),
                IpAddr::V6((bits | !mask).into()),
            )
        }
    }
}

/// The validated filters other than the prefix searches, ready to push into every branch of the query.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    provider: Option<Uuid>,
    ip: Option<IpFilter>,
    vendor: Option<String>,
    status: Option<Status>,
    online_secs: f64,
    pop: Option<Uuid>,
    tag: Option<String>,
}

impl Filters {
    /// Validates `f` for a caller of `provider` (`None`: a Global Admin across providers).
    pub fn new(
        f: &DeviceFilters,
        provider: Option<Uuid>,
        online_secs: f64,
    ) -> Result<Filters, ApiError> {
        Ok(Filters {
            provider,
            ip: f
                .ip
                .as_deref()
                .map(|ip| parse_ip_filter(filter_value("ip", ip)?))
                .transpose()?,
            vendor: f
                .vendor
                .as_deref()
                .map(|v| filter_value("vendor", v).map(str::to_owned))
                .transpose()?,
            status: f.status,
            online_secs,
            pop: f.pop,
            tag: f
                .tag
                .as_deref()
                .map(|t| filter_value("tag", t).map(str::to_owned))
                .transpose()?,
        })
    }

    /// How the search is best planned. A page walks one index range in its order and stops after the page, so
    /// when that range does not depend on the values its plan is the same for every value and is planned once
    /// per connection ([`Plans::Generic`](crate::db::Plans::Generic)): the id order with vendor, POP or exact
    /// address filters (each an index led by the provider whose rows come in id order), and a serial-number
    /// prefix alone (its index, in serial order). The others need plans made for their values
    /// ([`Plans::Custom`](crate::db::Plans::Custom)), each measured against its generic plan on 100,000 devices of
    /// a provider: an address range (the generic plan walks and sorts the whole range: 15-20 ms against 0.6 ms),
    /// `status` (it cannot tell whether few or most devices are online: 45 ms against 0.05 ms with every device
    /// offline), a tag (a tag on 60 devices at the end of the id order: 22-47 ms against 1.3 ms with planning)
    /// and `q=` (the serial branch is read from the heap and sorted: 260-540 ms for `q=SN` against 1-2 ms).
    pub fn plans(&self, order: &Order) -> crate::db::Plans {
        let value_free = matches!(self.ip, None | Some(IpFilter::Exact(_)))
            && self.status.is_none()
            && self.tag.is_none();
        match order {
            Order::Id if value_free => crate::db::Plans::Generic,
            Order::Serial(_)
                if self.ip.is_none()
                    && self.vendor.is_none()
                    && self.pop.is_none()
                    && value_free =>
            {
                crate::db::Plans::Generic
            }
            _ => crate::db::Plans::Custom,
        }
    }

    /// Appends ` AND ...` for each filter. `after_id`: the cursor of an id-ordered walk, repeated inside the tag
    /// subquery so that its index range starts there too (without it a merge join reads the tag's rows from the
    /// first one on every page: 16 ms for a common tag deep in the list).
    fn push(&self, qb: &mut QueryBuilder<Postgres>, after_id: Option<Uuid>) {
        if let Some(p) = self.provider {
            qb.push(" AND provider_id = ").push_bind(p);
        }
        match &self.ip {
            Some(IpFilter::Exact(a)) => {
                qb.push(" AND mgmt_ip = ")
                    .push_bind(a.to_string())
                    .push("::inet");
            }
            Some(IpFilter::Within(a, len)) => {
                // `<<=` is exact but not leakproof (no index under row-level security); the range between the
                // first and last host address is, so the planner may walk `devices_mgmt_ip` for a small network.
                let (first, last) = host_range(*a, *len);
                qb.push(" AND mgmt_ip >= ")
                    .push_bind(first.to_string())
                    .push("::inet AND mgmt_ip <= ")
                    .push_bind(last.to_string())
                    .push("::inet AND mgmt_ip <<= ")
                    .push_bind(format!("{a}/{len}"))
                    .push("::inet");
            }
            None => {}
        }
        if let Some(vendor) = &self.vendor {
            qb.push(" AND vendor = ").push_bind(vendor.clone());
        }
        match self.status {
            Some(Status::Online) => {
                qb.push(" AND last_seen > now() - make_interval(secs => ")
                    .push_bind(self.online_secs)
                    .push(")");
            }
            Some(Status::Offline) => {
                qb.push(" AND last_seen <= now() - make_interval(secs => ")
                    .push_bind(self.online_secs)
                    .push(")");
            }
            None => {}
        }
        if let Some(pop) = self.pop {
            qb.push(" AND pop_id = ").push_bind(pop);
        }
        if let Some(tag) = &self.tag {
            // `device_tags` (migration 0007): an index range in id order, where `tags @> ...` could not use any
            // index under row-level security.
            qb.push(" AND id IN (SELECT device_id FROM device_tags WHERE tag = ")
                .push_bind(tag.clone());
            if let Some(p) = self.provider {
                qb.push(" AND provider_id = ").push_bind(p);
            }
            if let Some(id) = after_id {
                qb.push(" AND device_id > ").push_bind(id);
            }
            qb.push(")");
        }
    }
}

/// One branch of a prefix search: the ids and keys of rows whose `column` starts with `prefix`, in `column`
/// order, after `after`, at most `n`. `extra` is pushed as is (an exclusion between branches).
fn prefix_branch(
    qb: &mut QueryBuilder<Postgres>,
    filters: &Filters,
    column: &str,
    prefix: &str,
    extra: Option<(&str, &str)>,
    after: Option<&After>,
    n: i64,
) {
    // The range is what the index walks (the pattern operators are leakproof, so row-level security lets them
    // be index conditions; LIKE is not, and stays a filter): every string that starts with `prefix` sorts
    // between `prefix` and `prefix` followed by the highest code point.
    qb.push(format_args!(
        "(SELECT id, {column} AS k FROM devices WHERE {column} ~>=~ "
    ))
    .push_bind(prefix.to_owned())
    .push(format_args!(" AND {column} ~<~ "))
    .push_bind(format!("{prefix}\u{10FFFF}"))
    .push(format_args!(" AND {column} LIKE "))
    .push_bind(like_prefix(prefix));
    if let Some((sql, bind)) = extra {
        qb.push(sql).push_bind(like_prefix(bind)).push(")");
    }
    filters.push(qb, None);
    if let Some(a) = after {
        qb.push(format_args!(" AND {column} ~>=~ "))
            .push_bind(a.key.clone())
            .push(format_args!(" AND ({column} ~>~ "))
            .push_bind(a.key.clone())
            .push(" OR id > ")
            .push_bind(a.id)
            .push(")");
    }
    qb.push(format_args!(" ORDER BY {column} USING ~<~, id LIMIT "))
        .push_bind(n)
        .push(")");
}

/// Completes the search: `qb` holds the `SELECT` list of the full rows over alias `d` (the sort key is `s.k`);
/// `n` is the number of rows to fetch (page size + 1).
pub fn build(
    mut qb: QueryBuilder<Postgres>,
    filters: &Filters,
    order: &Order,
    after: Option<&After>,
    n: i64,
) -> QueryBuilder<Postgres> {
    qb.push(" FROM (");
    match order {
        Order::Id => {
            qb.push("SELECT id, NULL::text AS k FROM devices WHERE true");
            filters.push(&mut qb, after.map(|a| a.id));
            if let Some(a) = after {
                qb.push(" AND id > ").push_bind(a.id);
            }
            qb.push(" ORDER BY id LIMIT ").push_bind(n);
        }
        Order::Serial(prefix) => {
            prefix_branch(&mut qb, filters, "serial_number", prefix, None, after, n);
        }
        Order::NameOrSerial(q) => {
            prefix_branch(&mut qb, filters, "name", q, None, after, n);
            qb.push(" UNION ALL ");
            prefix_branch(
                &mut qb,
                filters,
                "serial_number",
                q,
                Some((" AND (name IS NULL OR name NOT LIKE ", q)),
                after,
                n,
            );
        }
    }
    qb.push(") s JOIN devices d ON d.id = s.id ORDER BY ");
    match order {
        Order::Id => qb.push("d.id"),
        _ => qb.push("s.k USING ~<~, d.id"),
    };
    qb.push(" LIMIT ").push_bind(n);
    qb
}

/// Checks a decoded cursor key.
pub fn check_key(key: &str) -> Result<(), ApiError> {
    if key.len() > MAX_KEY_BYTES || key.contains('\0') {
        return Err(ApiError::BadRequest("invalid cursor".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_filters_parse_or_refuse() {
        assert_eq!(
            parse_ip_filter("192.0.2.1").unwrap(),
            IpFilter::Exact("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            parse_ip_filter("2001:db8::/32").unwrap(),
            IpFilter::Within("2001:db8::".parse().unwrap(), 32)
        );
        assert!(parse_ip_filter("192.0.2.0/33").is_err());
        assert!(parse_ip_filter("' OR 1=1 --").is_err());
    }

    #[test]
    fn networks_span_their_first_and_last_address() {
        let r = |s: &str, len| {
            let (a, b) = host_range(s.parse().unwrap(), len);
            (a.to_string(), b.to_string())
        };
        assert_eq!(
            r("10.1.2.3", 16),
            ("10.1.0.0".into(), "10.1.255.255".into())
        );
        assert_eq!(r("10.1.2.3", 32), ("10.1.2.3".into(), "10.1.2.3".into()));
        assert_eq!(
            r("10.1.2.3", 0),
            ("0.0.0.0".into(), "255.255.255.255".into())
        );
        assert_eq!(
            r("2001:db8:1::7", 48),
            (
                "2001:db8:1::".into(),
                "2001:db8:1:ffff:ffff:ffff:ffff:ffff".into()
            )
        );
    }

    #[test]
    fn pages_whose_index_range_does_not_depend_on_the_values_reuse_one_plan() {
        use crate::db::Plans::{Custom, Generic};
        let plans = |query: &str| {
            let mut f = DeviceFilters::default();
            for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
                let v = Some(v.to_owned());
                match k {
                    "vendor" => f.vendor = v,
                    "pop" => f.pop = Some(Uuid::from_u128(1)),
                    "ip" => f.ip = v,
                    "serial" => f.serial = v,
                    "tag" => f.tag = v,
                    "q" => f.q = v,
                    "status" if v.as_deref() == Some("online") => f.status = Some(Status::Online),
                    "status" => f.status = Some(Status::Offline),
                    _ => unreachable!("{k}"),
                }
            }
            Filters::new(&f, Some(Uuid::nil()), 300.0)
                .unwrap()
                .plans(&Order::of(&f).unwrap())
        };
        for query in [
            "",
            "vendor=Huawei",
            "pop=1&vendor=ZTE",
            "ip=10.0.0.1",
            "serial=SN00",
        ] {
            assert_eq!(plans(query), Generic, "{query}");
        }
        for query in [
            "ip=10.0.0.0/16",
            "status=online",
            "status=offline&vendor=ZTE",
            "tag=vip",
            "serial=SN00&vendor=ZTE",
            "q=cliente",
        ] {
            assert_eq!(plans(query), Custom, "{query}");
        }
    }

    #[test]
    fn the_sort_key_is_the_column_the_prefix_matched() {
        let q = Order::NameOrSerial("cli".into());
        assert_eq!(q.key(Some("cliente 7"), Some("SN1")), "cliente 7");
        assert_eq!(q.key(Some("loja"), Some("cli-9")), "cli-9");
        assert_eq!(q.key(None, Some("cli-9")), "cli-9");
        assert_eq!(
            Order::Serial("SN".into()).key(Some("x"), Some("SN2")),
            "SN2"
        );
        assert_eq!(Order::Id.key(Some("x"), Some("y")), "");
    }
}
