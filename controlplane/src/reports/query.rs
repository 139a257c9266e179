//! Reading a report's data in the caller's tenant transaction (row-level security applies; every query also
//! filters by provider so it uses the indexes led by `provider_id`). Each function returns a [`Report`] of at
//! most [`MAX_ROWS`] rows, the query asking for one more to know whether it was truncated.
//!
//! Traffic reads the rollups at the resolution [`rollup::choose_level`] picks for the range (as the graphs do),
//! and availability reads the 5-minute rollups; docs/REPORTS.md defines each figure.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use thiserror::Error;
use uuid::Uuid;

use crate::reports::{Align, Cell, Chart, Column, Kind, Lang, Line, MAX_ROWS, Report};
use crate::rollup::{self, Level, MetricsConfig};

/// Buckets a traffic report may read per series: 30 days at 5 minutes (8,640) fit, a year falls to 1 hour.
pub const TRAFFIC_BUCKETS: u32 = 10_000;
/// Buckets a traffic chart reads per series (a chart is at most ~700 points wide).
const CHART_BUCKETS: u32 = 1_000;
/// Bars in a chart.
const MAX_BARS: usize = 10;
/// The traffic metrics, in and out.
const METRIC_IN: &str = "if.in_bps";
const METRIC_OUT: &str = "if.out_bps";

/// Why a report cannot be built.
#[derive(Debug, Error)]
pub enum ReportError {
    /// A parameter is wrong; the message says which and why.
    #[error("{0}")]
    BadRequest(String),
    /// The POP or customer named is not the caller's (or does not exist).
    #[error("not found")]
    NotFound,
    /// The database failed.
    #[error("report query: {0}")]
    Db(#[from] sqlx::Error),
}

/// What a report is about, validated.
#[derive(Debug, Clone)]
pub struct Params {
    /// The kind.
    pub kind: Kind,
    /// Its language.
    pub lang: Lang,
    /// The caller's provider.
    pub provider: Uuid,
    /// Only this POP.
    pub pop_id: Option<Uuid>,
    /// Only this customer.
    pub customer_id: Option<Uuid>,
    /// Traffic: one row per customer rather than per POP.
    pub by_customer: bool,
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// Generation time.
    pub now: DateTime<Utc>,
    /// `api.online_threshold_secs`.
    pub online_threshold_secs: u64,
}

/// Builds the report `p` asks for.
pub async fn build(
    conn: &mut PgConnection,
    p: &Params,
    metrics: &MetricsConfig,
) -> Result<Report, ReportError> {
    let provider: String = sqlx::query_scalar("SELECT name FROM providers WHERE id = $1")
        .bind(p.provider)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(ReportError::NotFound)?;
    let scope = scope_line(conn, p).await?;
    let mut report = Report {
        kind: p.kind,
        title: String::new(),
        provider,
        scope,
        from: p.from,
        to: p.to,
        generated_at: p.now,
        columns: Vec::new(),
        rows: Vec::new(),
        truncated: false,
        chart: None,
        notes: Vec::new(),
    };
    match p.kind {
        Kind::Inventory => inventory(conn, p, &mut report).await?,
        Kind::Alerts => alerts(conn, p, &mut report).await?,
        Kind::Traffic => traffic(conn, p, metrics, &mut report).await?,
        Kind::Availability => availability(conn, p, metrics, &mut report).await?,
    }
    if report.rows.len() > MAX_ROWS {
        report.rows.truncate(MAX_ROWS);
        report.truncated = true;
    }
    Ok(report)
}

/// "POP: Centro · Cliente: Padaria" for the filters given; a filter naming another provider's object is 404.
async fn scope_line(conn: &mut PgConnection, p: &Params) -> Result<String, ReportError> {
    let mut parts = Vec::new();
    if let Some(pop) = p.pop_id {
        let name: String =
            sqlx::query_scalar("SELECT name FROM pops WHERE provider_id = $1 AND id = $2")
                .bind(p.provider)
                .bind(pop)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(ReportError::NotFound)?;
        parts.push(format!("POP: {name}"));
    }
    if let Some(customer) = p.customer_id {
        let name: String =
            sqlx::query_scalar("SELECT name FROM customers WHERE provider_id = $1 AND id = $2")
                .bind(p.provider)
                .bind(customer)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(ReportError::NotFound)?;
        parts.push(format!("{}: {name}", p.lang.t("Cliente", "Customer")));
    }
    Ok(parts.join(" · "))
}

/// ` AND d.pop_id = .. AND d.customer_id = ..` for the filters of `p`, over devices aliased `d`.
fn device_filters(qb: &mut QueryBuilder<Postgres>, p: &Params) {
    if let Some(pop) = p.pop_id {
        qb.push(" AND d.pop_id = ").push_bind(pop);
    }
    if let Some(c) = p.customer_id {
        qb.push(" AND d.customer_id = ").push_bind(c);
    }
}

fn col(label: &str, align: Align, weight: f32) -> Column {
    Column {
        label: label.to_owned(),
        align,
        weight,
    }
}

fn text(s: Option<String>) -> Cell {
    s.filter(|s| !s.is_empty()).map_or(Cell::Empty, Cell::Text)
}

type InventoryRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    DateTime<Utc>,
);

async fn inventory(conn: &mut PgConnection, p: &Params, r: &mut Report) -> Result<(), ReportError> {
    let l = p.lang;
    r.title = l
        .t("Inventário de dispositivos", "Device inventory")
        .to_owned();
    r.notes.push(match l {
        Lang::PtBr => format!(
            "Situação no momento da geração (o período não se aplica): online = visto nos últimos {} s.",
            p.online_threshold_secs
        ),
        Lang::En => format!(
            "State at generation time (the range does not apply): online = heard from in the last {} s.",
            p.online_threshold_secs
        ),
    });
    r.columns = vec![
        col(l.t("Dispositivo", "Device"), Align::Left, 2.2),
        col("POP", Align::Left, 1.4),
        col(l.t("Cliente", "Customer"), Align::Left, 1.8),
        col(
            l.t("Fabricante / modelo", "Vendor / model"),
            Align::Left,
            1.8,
        ),
        col(l.t("Nº de série", "Serial number"), Align::Left, 1.4),
        col(l.t("IP de gerência", "Management IP"), Align::Left, 1.2),
        col(l.t("Situação", "Status"), Align::Left, 0.8),
        col(l.t("Visto por último", "Last seen"), Align::Left, 1.2),
    ];
    let threshold = p.online_threshold_secs as f64;
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT coalesce(d.name, d.device_key), p.name, c.name, d.vendor, d.model, d.serial_number, \
         host(d.mgmt_ip), d.last_seen > now() - make_interval(secs => ",
    );
    qb.push_bind(threshold);
    qb.push(
        "), d.last_seen FROM devices d JOIN pops p ON p.provider_id = d.provider_id AND p.id = d.pop_id \
         LEFT JOIN customers c ON c.provider_id = d.provider_id AND c.id = d.customer_id WHERE d.provider_id = ",
    );
    qb.push_bind(p.provider);
    device_filters(&mut qb, p);
    qb.push(" ORDER BY p.name, 1, d.id LIMIT ")
        .push_bind(MAX_ROWS as i64 + 1);
    let rows: Vec<InventoryRow> = qb.build_query_as().fetch_all(&mut *conn).await?;
    r.rows = rows
        .into_iter()
        .map(
            |(name, pop, customer, vendor, model, serial, ip, online, seen)| {
                let vm = [vendor, model]
                    .into_iter()
                    .flatten()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                vec![
                    Cell::Text(name),
                    Cell::Text(pop),
                    text(customer),
                    text(Some(vm)),
                    text(serial),
                    text(ip),
                    Cell::Text(if online { "online" } else { "offline" }.to_owned()),
                    Cell::Time(seen),
                ]
            },
        )
        .collect();
    // Chart: devices per POP, online among them in the label.
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT p.name, count(*), count(*) FILTER (WHERE d.last_seen > now() - make_interval(secs => ",
    );
    qb.push_bind(threshold);
    qb.push(
        ")) FROM devices d JOIN pops p ON p.provider_id = d.provider_id AND p.id = d.pop_id WHERE d.provider_id = ",
    );
    qb.push_bind(p.provider);
    device_filters(&mut qb, p);
    qb.push(" GROUP BY p.id, p.name ORDER BY count(*) DESC, p.name LIMIT ")
        .push_bind(MAX_BARS as i64);
    let per_pop: Vec<(String, i64, i64)> = qb.build_query_as().fetch_all(&mut *conn).await?;
    r.chart = Some(Chart::Bars {
        title: l
            .t(
                "Dispositivos por POP (online / total)",
                "Devices per POP (online / total)",
            )
            .to_owned(),
        percent: false,
        bars: per_pop
            .into_iter()
            .map(|(pop, total, online)| {
                (
                    format!("{pop} ({} / {})", l.int(online), l.int(total)),
                    total as f64,
                )
            })
            .collect(),
    });
    Ok(())
}

type AlertRow = (
    String,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<String>,
);

async fn alerts(conn: &mut PgConnection, p: &Params, r: &mut Report) -> Result<(), ReportError> {
    let l = p.lang;
    r.title = l.t("Histórico de alertas", "Alert history").to_owned();
    r.notes.push(
        l.t(
            "Alertas disparados no período; duração até a resolução, ou até a geração se ainda ativo.",
            "Alerts fired in the range; duration until resolved, or until generation if still firing.",
        )
        .to_owned(),
    );
    r.columns = vec![
        col(l.t("Regra", "Rule"), Align::Left, 1.8),
        col(l.t("Alvo", "Target"), Align::Left, 2.2),
        col(l.t("Severidade", "Severity"), Align::Left, 0.9),
        col(l.t("Disparou", "Fired"), Align::Left, 1.2),
        col(l.t("Resolvido", "Resolved"), Align::Left, 1.2),
        col(l.t("Duração", "Duration"), Align::Right, 1.0),
        col(l.t("Reconhecido por", "Acknowledged by"), Align::Left, 1.6),
    ];
    // The next firing or resolved event of the same alert closes this firing; an acknowledgement between them
    // names who acknowledged it.
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT f.rule_name, f.target, f.severity, coalesce(f.event_ts, f.created_at) AS fired, \
                CASE WHEN nx.kind = 'resolved' THEN nx.at END, coalesce(u.name, u.email) \
         FROM alert_events f \
         LEFT JOIN LATERAL (SELECT e.id, e.kind, coalesce(e.event_ts, e.created_at) AS at FROM alert_events e \
              WHERE e.provider_id = f.provider_id AND e.alert_id = f.alert_id AND e.id > f.id \
                AND e.kind IN ('firing', 'resolved') ORDER BY e.id LIMIT 1) nx ON true \
         LEFT JOIN LATERAL (SELECT e.facts->>'by_user' AS by_user FROM alert_events e \
              WHERE e.provider_id = f.provider_id AND e.alert_id = f.alert_id AND e.id > f.id \
                AND e.kind = 'acknowledged' AND (nx.id IS NULL OR e.id < nx.id) ORDER BY e.id LIMIT 1) ack ON true \
         LEFT JOIN users u ON u.provider_id = f.provider_id AND u.id::text = ack.by_user \
         WHERE f.provider_id = ",
    );
    qb.push_bind(p.provider);
    qb.push(" AND f.kind = 'firing' AND coalesce(f.event_ts, f.created_at) >= ")
        .push_bind(p.from);
    qb.push(" AND coalesce(f.event_ts, f.created_at) < ")
        .push_bind(p.to);
    if let Some(pop) = p.pop_id {
        qb.push(" AND f.pop_id = ").push_bind(pop);
    }
    if let Some(c) = p.customer_id {
        qb.push(
            " AND f.device_id IN (SELECT d.id FROM devices d WHERE d.provider_id = f.provider_id AND d.customer_id = ",
        )
        .push_bind(c)
        .push(")");
    }
    qb.push(" ORDER BY fired, f.id LIMIT ")
        .push_bind(MAX_ROWS as i64 + 1);
    let rows: Vec<AlertRow> = qb.build_query_as().fetch_all(&mut *conn).await?;
    let mut per_rule: BTreeMap<String, i64> = BTreeMap::new();
    r.rows = rows
        .into_iter()
        .map(|(rule, target, severity, fired, resolved, ack)| {
            *per_rule.entry(rule.clone()).or_default() += 1;
            let end = resolved.unwrap_or(p.now);
            vec![
                Cell::Text(rule),
                Cell::Text(target),
                Cell::Text(severity_name(l, &severity).to_owned()),
                Cell::Time(fired),
                resolved.map_or_else(
                    || Cell::Text(l.t("(ativo)", "(firing)").to_owned()),
                    Cell::Time,
                ),
                Cell::Duration((end - fired).num_seconds()),
                text(ack),
            ]
        })
        .collect();
    let mut bars: Vec<(String, f64)> = per_rule.into_iter().map(|(k, v)| (k, v as f64)).collect();
    bars.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    bars.truncate(MAX_BARS);
    r.chart = Some(Chart::Bars {
        title: l
            .t("Alertas disparados por regra", "Alerts fired per rule")
            .to_owned(),
        percent: false,
        bars,
    });
    Ok(())
}

fn severity_name(l: Lang, s: &str) -> &'static str {
    match s {
        "critical" => l.t("crítico", "critical"),
        "warning" => l.t("aviso", "warning"),
        _ => l.t("informativo", "info"),
    }
}

async fn traffic(
    conn: &mut PgConnection,
    p: &Params,
    metrics: &MetricsConfig,
    r: &mut Report,
) -> Result<(), ReportError> {
    let l = p.lang;
    let level = rollup::choose_level(metrics, p.from, p.to, p.now, TRAFFIC_BUCKETS);
    let (group_table, group_col, group_label) = if p.by_customer {
        ("customers", "d.customer_id", l.t("Cliente", "Customer"))
    } else {
        ("pops", "d.pop_id", "POP")
    };
    r.title = if p.by_customer {
        l.t("Tráfego por cliente", "Traffic per customer")
    } else {
        l.t("Tráfego por POP", "Traffic per POP")
    }
    .to_owned();
    r.notes.push(match l {
        Lang::PtBr => format!(
            "Soma das médias de {METRIC_IN} / {METRIC_OUT} das interfaces dos dispositivos em cada intervalo de {}; \
             média, percentil 95 e máximo sobre esses intervalos.",
            level.as_str()
        ),
        Lang::En => format!(
            "Sum of the {METRIC_IN} / {METRIC_OUT} averages of the devices' interfaces per {} interval; \
             average, 95th percentile and peak over those intervals.",
            level.as_str()
        ),
    });
    r.columns = vec![
        col(group_label, Align::Left, 2.2),
        col(l.t("Entrada média", "In avg"), Align::Right, 1.0),
        col(l.t("Entrada p95", "In p95"), Align::Right, 1.0),
        col(l.t("Entrada máx.", "In max"), Align::Right, 1.0),
        col(l.t("Saída média", "Out avg"), Align::Right, 1.0),
        col(l.t("Saída p95", "Out p95"), Align::Right, 1.0),
        col(l.t("Saída máx.", "Out max"), Align::Right, 1.0),
    ];
    // The series in scope and the group each belongs to.
    let series_cte = |qb: &mut QueryBuilder<Postgres>, level: Level| {
        qb.push(format!(
            "WITH s AS (SELECT s.id, s.metric, {group_col} AS gid FROM series s JOIN devices d \
             ON d.provider_id = s.provider_id AND d.id = s.device_id WHERE s.provider_id = "
        ));
        qb.push_bind(p.provider);
        qb.push(" AND s.metric IN ('if.in_bps', 'if.out_bps')");
        if p.by_customer {
            qb.push(" AND d.customer_id IS NOT NULL");
        }
        device_filters(qb, p);
        qb.push(format!(
            "), b AS (SELECT s.gid, s.metric, r.bucket, sum(r.sum / r.count) AS v FROM {} r JOIN s ON s.id = r.series_id \
             WHERE r.provider_id = ",
            level.table()
        ));
        qb.push_bind(p.provider);
        qb.push(" AND r.bucket >= ").push_bind(level.bucket(p.from));
        qb.push(" AND r.bucket < ").push_bind(p.to);
    };
    let mut qb = QueryBuilder::<Postgres>::new("");
    series_cte(&mut qb, level);
    qb.push(format!(
        " GROUP BY 1, 2, 3) SELECT g.id, g.name, b.metric, avg(b.v), \
         percentile_disc(0.95) WITHIN GROUP (ORDER BY b.v), max(b.v) \
         FROM b JOIN {group_table} g ON g.id = b.gid WHERE g.provider_id = "
    ));
    qb.push_bind(p.provider);
    qb.push(" GROUP BY g.id, g.name, b.metric ORDER BY g.name, g.id LIMIT ")
        .push_bind(2 * (MAX_ROWS as i64 + 1));
    let stats: Vec<(Uuid, String, String, f64, f64, f64)> =
        qb.build_query_as().fetch_all(&mut *conn).await?;
    let mut groups: Vec<(Uuid, String, [Cell; 6])> = Vec::new();
    for (id, name, metric, avg, p95, max) in stats {
        if groups.last().is_none_or(|g| g.0 != id) {
            groups.push((id, name, std::array::from_fn(|_| Cell::Empty)));
        }
        if let Some(g) = groups.last_mut() {
            let at = if metric == METRIC_IN { 0 } else { 3 };
            g.2[at] = Cell::Bps(avg);
            g.2[at + 1] = Cell::Bps(p95);
            g.2[at + 2] = Cell::Bps(max);
        }
    }
    r.rows = groups
        .into_iter()
        .map(|(_, name, cells)| {
            let mut row = vec![Cell::Text(name)];
            row.extend(cells);
            row
        })
        .collect();
    // Chart: the whole scope's traffic over time, at the level with at most CHART_BUCKETS buckets (a 30-day chart
    // reads the hourly rollups, not the 5-minute ones the figures need).
    let chart_level = rollup::choose_level(metrics, p.from, p.to, p.now, CHART_BUCKETS);
    let mut qb = QueryBuilder::<Postgres>::new("");
    series_cte(&mut qb, chart_level);
    qb.push(" GROUP BY 1, 2, 3) SELECT metric, bucket, sum(v) FROM b GROUP BY 1, 2 ORDER BY 2");
    let points: Vec<(String, DateTime<Utc>, f64)> =
        qb.build_query_as().fetch_all(&mut *conn).await?;
    let mut lines = [
        Line {
            label: l.t("Entrada", "In").to_owned(),
            points: Vec::new(),
        },
        Line {
            label: l.t("Saída", "Out").to_owned(),
            points: Vec::new(),
        },
    ];
    for (metric, t, v) in points {
        let i = usize::from(metric != METRIC_IN);
        lines[i].points.push((t, v));
    }
    r.chart = Some(Chart::Lines {
        title: match l {
            Lang::PtBr => format!(
                "Tráfego total (bit/s, intervalos de {})",
                chart_level.as_str()
            ),
            Lang::En => format!("Total traffic (bit/s, {} intervals)", chart_level.as_str()),
        },
        series: lines.into(),
    });
    Ok(())
}

type AvailabilityRow = (String, String, Option<String>, i64, i64);

async fn availability(
    conn: &mut PgConnection,
    p: &Params,
    metrics: &MetricsConfig,
    r: &mut Report,
) -> Result<(), ReportError> {
    let l = p.lang;
    let kept = metrics.retention(Level::M5);
    if p.from < p.now - kept {
        return Err(ReportError::BadRequest(format!(
            "availability is computed from the 5-minute rollups, kept {} days: `from` must be after {}",
            kept.num_days(),
            (p.now - kept).to_rfc3339()
        )));
    }
    r.title = l.t("Disponibilidade", "Availability").to_owned();
    r.notes.push(
        l.t(
            "Disponível num intervalo de 5 minutos = ao menos uma amostra do dispositivo (ICMP, SNMP, TR-069) chegou \
             nele; contado desde o primeiro contato e até o último intervalo fechado.",
            "Up in a 5-minute interval = at least one sample of the device (ICMP, SNMP, TR-069) arrived in it; \
             counted from first contact up to the last closed interval.",
        )
        .to_owned(),
    );
    r.columns = vec![
        col(l.t("Dispositivo", "Device"), Align::Left, 2.2),
        col("POP", Align::Left, 1.4),
        col(l.t("Cliente", "Customer"), Align::Left, 1.8),
        col(l.t("Intervalos no ar", "Intervals up"), Align::Right, 1.0),
        col(l.t("Intervalos", "Intervals"), Align::Right, 0.9),
        col(l.t("Disponibilidade", "Availability"), Align::Right, 1.0),
        col(l.t("Tempo fora", "Downtime"), Align::Right, 1.1),
    ];
    let start = Level::M5.bucket(p.from);
    let grace = chrono::Duration::from_std(metrics.grace()).unwrap_or_default();
    let end = p.to.min(Level::M5.bucket(p.now - grace));
    let mut qb = QueryBuilder::<Postgres>::new(
        "WITH dv AS (SELECT d.id, coalesce(d.name, d.device_key) AS name, d.pop_id, d.customer_id, \
                greatest(",
    );
    qb.push_bind(start);
    qb.push("::timestamptz, octoisp_rollup_bucket('5m', d.first_seen)) AS since FROM devices d WHERE d.provider_id = ");
    qb.push_bind(p.provider);
    device_filters(&mut qb, p);
    qb.push(" ORDER BY d.pop_id, 2, d.id LIMIT ")
        .push_bind(MAX_ROWS as i64 + 1);
    qb.push(
        "), up AS (SELECT s.device_id, count(DISTINCT r.bucket) AS n FROM rollup_5m r \
         JOIN series s ON s.id = r.series_id JOIN dv ON dv.id = s.device_id WHERE r.provider_id = ",
    );
    qb.push_bind(p.provider);
    qb.push(" AND r.bucket >= dv.since AND r.bucket < ")
        .push_bind(end);
    qb.push(" AND r.bucket >= ").push_bind(start);
    qb.push(
        " GROUP BY s.device_id) SELECT dv.name, p.name, c.name, coalesce(up.n, 0)::bigint, \
         greatest(0, ceil(extract(epoch FROM (",
    );
    qb.push_bind(end);
    qb.push(
        "::timestamptz - dv.since)) / 300))::bigint FROM dv \
         JOIN pops p ON p.provider_id = ",
    );
    qb.push_bind(p.provider);
    qb.push(
        " AND p.id = dv.pop_id LEFT JOIN customers c ON c.provider_id = p.provider_id AND c.id = dv.customer_id \
         LEFT JOIN up ON up.device_id = dv.id ORDER BY p.name, dv.name, dv.id",
    );
    let rows: Vec<AvailabilityRow> = qb.build_query_as().fetch_all(&mut *conn).await?;
    let mut per_pop: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    r.rows = rows
        .into_iter()
        .map(|(name, pop, customer, up, expected)| {
            let up = up.min(expected);
            let agg = per_pop.entry(pop.clone()).or_default();
            agg.0 += up;
            agg.1 += expected;
            vec![
                Cell::Text(name),
                Cell::Text(pop),
                text(customer),
                Cell::Int(up),
                Cell::Int(expected),
                percent(up, expected),
                Cell::Duration((expected - up) * 300),
            ]
        })
        .collect();
    let mut bars: Vec<(String, f64)> = per_pop
        .into_iter()
        .filter(|(_, (_, e))| *e > 0)
        .map(|(pop, (u, e))| (pop, 100.0 * u as f64 / e as f64))
        .collect();
    // The worst POPs first.
    bars.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    bars.truncate(MAX_BARS);
    r.chart = Some(Chart::Bars {
        title: l
            .t("Disponibilidade por POP (%)", "Availability per POP (%)")
            .to_owned(),
        percent: true,
        bars,
    });
    Ok(())
}

fn percent(part: i64, whole: i64) -> Cell {
    if whole <= 0 {
        Cell::Empty
    } else {
        Cell::Percent(100.0 * part as f64 / whole as f64)
    }
}
